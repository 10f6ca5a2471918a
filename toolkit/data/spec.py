"""The data spec: `[KIND:]PATH[?option=value&...]`, one syntax for every place data is named.

KIND is optional; it is read from the path when left out (see `detect_kind`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, quote

from toolkit.errors import BadInput

KINDS = ("builtin", "npz", "images", "text", "parquet", "hf-dataset", "audio")

# option → what it means (shown when an unknown option is given)
OPTIONS = {
    "preprocessor": "a Hugging Face folder: preprocessor_config.json, tokenizer or feature extractor",
    "size": "resize images to N (shortest edge) or HxW",
    "crop": "center-crop images to N or HxW",
    "resample": "nearest, bilinear, bicubic, box, lanczos (default bilinear)",
    "mean": "per-channel mean, e.g. 0.485,0.456,0.406",
    "std": "per-channel std, e.g. 0.229,0.224,0.225",
    "scale": "multiply pixel values by this (default 1/255)",
    "channels": "1 (grayscale) or 3 (RGB, the default)",
    "layout": "nchw (default) or nhwc",
    "dtype": "float32 (default), float16, uint8, int8",
    "text_field": "the JSONL/CSV/Parquet field holding the text (default text)",
    "text_pair_field": "the second sentence's field, for two-sentence tasks",
    "label_field": "the field holding the label (default label)",
    "max_length": "pad and truncate tokens (or audio samples) to this length",
    "input": "name the input array (default: the model's single input)",
    "limit": "use at most this many examples",
    "split": "the split of a saved DatasetDict (default: test, else validation, else the first)",
}

_IMAGE_OPTIONS = ("preprocessor", "size", "crop", "resample", "mean", "std", "scale", "channels", "layout", "dtype")
_TEXT_OPTIONS = ("preprocessor", "text_field", "text_pair_field", "label_field", "max_length")
# the options each kind reads; builtin: and .npz data are tensors already made, so they read none
KIND_OPTIONS = {
    "builtin": (),
    "npz": (),
    "images": (*_IMAGE_OPTIONS, "input", "limit"),
    "text": (*_TEXT_OPTIONS, "limit"),
    "parquet": (*_TEXT_OPTIONS, "limit"),
    "hf-dataset": (*_TEXT_OPTIONS, "limit", "split"),
    "audio": ("preprocessor", "max_length", "input", "limit"),
}
# options that name a file or folder the data is prepared with (part of what a step reads)
PATH_OPTIONS = ("preprocessor",)

# the CLI flags that add options to a spec
FLAG_OPTIONS = ("preprocessor", "text_field", "text_pair_field", "label_field", "max_length", "size", "crop",
                "layout", "mean", "std", "dtype", "channels")

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
AUDIO_SUFFIXES = {".wav", ".wave"}
WHAT_DATA = ("give builtin:digits[:train|:test], an .npz, an image, WAV or save_to_disk folder, "
             "a .jsonl/.csv or a .parquet file")


@dataclass(frozen=True)
class DataSpec:
    kind: str
    path: str
    options: dict[str, str] = field(default_factory=dict)

    def get(self, name: str, default=None):
        return self.options.get(name, default)

    def int(self, name: str, default: int | None = None) -> int | None:
        value = self.options.get(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise BadInput(f"data option {name}={value!r} is not a whole number") from None
        if number <= 0:
            raise BadInput(f"data option {name}={value!r} must be positive")
        return number

    def floats(self, name: str) -> list[float] | None:
        value = self.options.get(name)
        if value is None:
            return None
        try:
            return [float(part) for part in value.split(",")]
        except ValueError:
            raise BadInput(f"data option {name}={value!r}: give numbers separated by commas") from None

    def pair(self, name: str) -> tuple[int, int] | int | None:
        """N or HxW."""
        value = self.options.get(name)
        if value is None:
            return None
        try:
            parts = [int(part) for part in value.lower().split("x")]
        except ValueError:
            parts = []
        if len(parts) not in (1, 2) or min(parts) <= 0:
            raise BadInput(f"data option {name}={value!r}: give N or HxW, e.g. 224 or 224x224")
        return parts[0] if len(parts) == 1 else (parts[0], parts[1])


def parse_spec(text: str) -> DataSpec:
    """Split a spec into kind, path and options; refuse unknown kinds and options."""
    text = str(text)
    body, _, query = text.partition("?")
    if text.startswith("builtin:"):
        if query:
            raise BadInput(f"{text!r}: builtin data takes no options ({query}): it is preprocessed already")
        return DataSpec("builtin", text)
    kind = None
    head, sep, rest = body.partition(":")
    if sep and head in KINDS:
        kind, body = head, rest
    options = dict(parse_qsl(query, keep_blank_values=True)) if query else {}
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise BadInput(f"unknown data option(s) {', '.join(unknown)} in {text!r}: known are {', '.join(OPTIONS)}")
    kind = kind or detect_kind(body)
    ignored = [name for name in options if name not in KIND_OPTIONS[kind]]
    if ignored:
        raise BadInput(f"data option(s) {', '.join(ignored)} in {text!r} do not apply to {kind} data: "
                       + (f"{kind} data reads {', '.join(KIND_OPTIONS[kind])}" if KIND_OPTIONS[kind] else
                          "an .npz holds tensors already preprocessed"))
    return DataSpec(kind, body, options)


def spec_options(text: str) -> dict[str, str]:
    """The options written in a spec (none for builtin:), without checking them or the path."""
    text = str(text)
    query = "" if text.startswith("builtin:") else text.partition("?")[2]
    return dict(parse_qsl(query, keep_blank_values=True)) if query else {}


def spec_kind(text: str) -> str | None:
    """The kind of data a spec names, or None where it cannot be told (a missing path, say)."""
    try:
        return parse_spec(text).kind
    except BadInput:
        return None


def detect_kind(path_text: str) -> str:
    path = Path(path_text)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return "npz"
    if suffix in (".jsonl", ".json", ".csv", ".tsv"):
        return "text"
    if suffix == ".parquet":
        return "parquet"
    if not path.exists():
        raise BadInput(f"unknown data {path_text!r}: no such file or folder ({WHAT_DATA})")
    if path.is_dir():
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file() or (
                path / "state.json").is_file():
            return "hf-dataset"
        suffixes = {file.suffix.lower() for file in path.rglob("*") if file.is_file()}
        if suffixes & AUDIO_SUFFIXES and not suffixes & IMAGE_SUFFIXES:
            return "audio"
        if suffixes & IMAGE_SUFFIXES:
            return "images"
        if any(file.suffix.lower() == ".parquet" for file in path.iterdir()):
            return "parquet"
    raise BadInput(f"cannot tell what kind of data {path_text!r} is: prefix it with one of "
                   f"{', '.join(kind + ':' for kind in KINDS[2:])}")


def with_options(spec: str, **options) -> str:
    """The spec with these options added (None values and options its kind does not read skipped);
    options already in it are kept over these. `unused_options` says which no spec reads."""
    text = str(spec)
    kind = spec_kind(text)  # None: a spec that will fail to load; its own text makes the clearer error
    given = {name: value for name, value in options.items()
             if value is not None and kind is not None and name in KIND_OPTIONS[kind]}
    if not given:
        return text
    _, _, query = text.partition("?")
    present = spec_options(text)
    extra = "&".join(f"{name}={quote(str(value), safe=',./:-_')}" for name, value in given.items()
                     if name not in present)
    if not extra:
        return text
    return f"{text}{'&' if query else '?'}{extra}"


def unused_options(options: dict, specs: list[str]) -> dict[str, list[str]]:
    """option → the kinds of `specs` that would ignore it, for each given option (not None) that none
    of the specs reads. Specs whose kind cannot be told are left to fail when loaded."""
    kinds = [kind for kind in map(spec_kind, filter(None, specs)) if kind]
    if not kinds:
        return {}
    return {name: kinds for name, value in options.items()
            if value is not None and not any(name in KIND_OPTIONS[kind] for kind in kinds)}


def spec_path(spec: str) -> str:
    """The file or folder a data spec names, without its kind prefix and options (other text as is)."""
    text = str(spec)
    if text.startswith("builtin:"):
        return text
    body = text.partition("?")[0]
    head, sep, rest = body.partition(":")
    return rest if sep and head in KINDS else body
