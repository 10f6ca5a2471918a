"""The data flags shared by validate, quantize and distill; they add options to a data spec.

The library takes one spec string (`toolkit.data`); these flags are another way to write
its options, so `--data photos/ --image-size 224` is `--data 'photos/?size=224'`.
"""

from __future__ import annotations

import functools
from pathlib import Path

import click

# (flag, data option, click type, help)
FLAGS = (
    ("--preprocessor", "preprocessor", click.Path(exists=True, file_okay=False), "Hugging Face folder whose "
     "tokenizer, preprocessor_config.json or feature extractor prepares the data (default: the model's folder)."),
    ("--text-field", "text_field", str, "JSONL/CSV/Parquet field with the text (default text)."),
    ("--text-pair-field", "text_pair_field", str, "Field with the second sentence, for two-sentence tasks."),
    ("--label-field", "label_field", str, "Field with the label (default label)."),
    ("--max-length", "max_length", click.IntRange(min=1), "Pad/truncate tokens (or audio samples) to this length."),
    ("--image-size", "size", str, "Resize images: N (shortest edge, or square without --crop) or HxW."),
    ("--crop", "crop", str, "Center-crop images to N or HxW."),
    ("--layout", "layout", click.Choice(["nchw", "nhwc"]), "Image tensor layout (default nchw)."),
    ("--mean", "mean", str, "Per-channel mean for images, e.g. 0.485,0.456,0.406."),
    ("--std", "std", str, "Per-channel std for images, e.g. 0.229,0.224,0.225."),
    ("--dtype", "dtype", click.Choice(["float32", "float16", "uint8", "int8"]), "Image tensor dtype."),
    ("--channels", "channels", click.Choice(["1", "3"]), "1 = grayscale, 3 = RGB (default)."),
)
_PREPROCESSOR_FILES = ("preprocessor_config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt")


def data_options(function):
    """Add the data flags; the command receives them as one `data_options` dict."""
    names = [flag.removeprefix("--").replace("-", "_") for flag, *_ in FLAGS]

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        options = {option: kwargs.pop(name) for name, (_, option, _, _) in zip(names, FLAGS, strict=True)}
        return function(*args, data_options=options, **kwargs)

    wrapper.__click_params__ = list(getattr(function, "__click_params__", []))
    for flag, _, kind, help_text in reversed(FLAGS):
        wrapper = click.option(flag, type=kind, default=None, help=help_text)(wrapper)
    return wrapper


def apply(spec: str | None, options: dict, *model_places: str | None) -> str | None:
    """The spec with the flags' options; the preprocessor defaults to the first model folder that has one."""
    if spec is None:
        return None
    from toolkit.data import with_options

    options = dict(options)
    if not options.get("preprocessor"):
        options["preprocessor"] = next(filter(None, (_preprocessor_folder(place) for place in model_places)), None)
    return with_options(spec, **options)


def check_used(options: dict, *specs: str | None) -> None:
    """Refuse data flags that none of the data specs reads (e.g. --image-size with builtin: or an .npz,
    --text-field with an image folder): silently ignoring them would hide a mistake."""
    from toolkit.data import KIND_OPTIONS, unused_options
    from toolkit.errors import BadInput

    given = {option: value for option, value in options.items() if value is not None}
    if not given:
        return
    named = [spec for spec in specs if spec]
    if not named:
        raise BadInput(f"{_flag(next(iter(given)))} is a data flag, but no data was given to apply it to")
    unused = unused_options(given, named)
    if not unused:
        return
    option, kinds = next(iter(unused.items()))
    flags = ", ".join(_flag(name) for name in unused)
    data = " and ".join(dict.fromkeys(named))
    if all(kind in ("builtin", "npz") for kind in kinds):
        why = "builtin: and .npz data are tensors already preprocessed"
    else:
        readers = [kind for kind, read in KIND_OPTIONS.items() if option in read]
        why = f"{' and '.join(dict.fromkeys(kinds))} data does not read it (it applies to {', '.join(readers)} data)"
    raise BadInput(f"{flags} would be ignored for {data}: {why}; drop the flag or give data it applies to")


def _flag(option: str) -> str:
    return next(flag for flag, name, *_ in FLAGS if name == option)


def _preprocessor_folder(place: str | None) -> str | None:
    if not place or ":" in place and not Path(place).exists():
        return None
    path = Path(place)
    folder = path if path.is_dir() else path.parent
    return str(folder) if any((folder / name).is_file() for name in _PREPROCESSOR_FILES) else None
