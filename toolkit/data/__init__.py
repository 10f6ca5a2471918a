"""Datasets for calibration, evaluation and distillation, from one spec syntax.

Every `--data`, `--calibration`, distillation set and recipe data field is a spec string
resolved by `load_data`:

    builtin:digits[:train|:test]        scikit-learn's bundled digits
    eval.npz                            one array per model input (named after it), optional `labels`
    [KIND:]PATH[?option=value&...]      an adapter, with its options

KIND is read from the path when left out: a folder of images (`images:`), of WAV files
(`audio:`), a folder saved by `datasets.save_to_disk` (`hf-dataset:`), a `.jsonl`/`.csv`
file (`text:`), a `.parquet` file or folder of them (`parquet:`). For example

    photos/?preprocessor=models/vit                     resize/crop/normalize as the model's
                                                        preprocessor_config.json says
    photos/?size=224&mean=0.485,0.456,0.406&std=0.229,0.224,0.225&layout=nhwc
    reviews.jsonl?preprocessor=models/bert&text_field=review&label_field=stars&max_length=128
    pairs.csv?preprocessor=models/bert&text_field=premise&text_pair_field=hypothesis
    clips/?preprocessor=models/wav2vec2

The options are listed in `toolkit.data.spec.OPTIONS`. On the command line the flags
`--preprocessor`, `--text-field`, `--text-pair-field`, `--label-field`, `--max-length`,
`--image-size`, `--crop`, `--layout`, `--mean`, `--std`, `--dtype`, `--channels` add the same
options to the spec (`with_options`); an option written in the spec wins. Each kind reads the
options in `KIND_OPTIONS` (builtin: and .npz data, tensors already made, read none): an option
its kind would ignore is refused (`parse_spec`), and so is a flag that none of a command's data
specs reads (`unused_options`), rather than silently ignored.

In an image or audio folder, class sub-folders give the labels (sorted class names, kept in
`Dataset.meta["classes"]`; names that are whole numbers are the labels); a flat folder has
none. Files that cannot be read (an image Pillow cannot decode, a broken WAV, a JSONL line
that is not JSON) are skipped with one `EdgewardWarning` listing them; only data with
nothing usable left is an error. Preprocessed tensors are cached under
`toolkit.paths.cache_dir()/data`, keyed by the data's content and the preprocessing.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from toolkit.data.builtin import DIGITS_SPLITS, digits_split, load_builtin, load_digits_data, load_npz
from toolkit.data.dataset import Dataset, check_consistent, check_matches, layout_mismatch
from toolkit.data.spec import (
    FLAG_OPTIONS,
    KIND_OPTIONS,
    KINDS,
    OPTIONS,
    PATH_OPTIONS,
    WHAT_DATA,
    DataSpec,
    parse_spec,
    spec_options,
    spec_path,
    unused_options,
    with_options,
)
from toolkit.errors import EdgewardWarning

logger = logging.getLogger(__name__)

__all__ = [
    "DIGITS_SPLITS", "FLAG_OPTIONS", "KINDS", "KIND_OPTIONS", "OPTIONS", "PATH_OPTIONS", "DataSpec", "Dataset",
    "check_consistent", "check_matches", "digits_split", "layout_mismatch", "load_data", "load_digits_data",
    "load_npz", "parse_spec", "spec_options", "spec_path", "unused_options", "with_options",
]

# kind → "module:function" (imported when used: Pillow, pyarrow, datasets, transformers are heavy)
ADAPTERS = {
    "images": "toolkit.data.images:load_images",
    "text": "toolkit.data.text:load_text",
    "parquet": "toolkit.data.tables:load_parquet",
    "hf-dataset": "toolkit.data.tables:load_saved_dataset",
    "audio": "toolkit.data.audio:load_audio",
}


def load_data(spec: str | Path, input_names: list[str] | None = None) -> Dataset:
    """Resolve a data spec; name a lone input after the model's, keep only the model's inputs."""
    parsed = parse_spec(str(spec))
    if parsed.kind == "builtin":
        dataset = load_builtin(parsed.path)
    elif parsed.kind == "npz":
        dataset = load_npz(parsed.path)
    else:
        dataset = _load_adapted(parsed, str(spec))
    check_consistent(dataset)
    if input_names:
        dataset = dataset.renamed(list(input_names))
    return dataset


def _load_adapted(parsed: DataSpec, text: str) -> Dataset:
    from importlib import import_module

    from toolkit.data.cache import cache_key, load_cached, store
    from toolkit.errors import BadInput

    if not Path(parsed.path).exists():
        raise BadInput(f"unknown data {parsed.path!r}: no such file or folder ({WHAT_DATA})")
    key = cache_key(parsed.kind, parsed.path, parsed.options)
    dataset = load_cached(key, text)
    if dataset is not None:
        if dataset.meta.get("skipped"):
            skipped = dataset.meta["skipped"]
            warnings.warn(f"{parsed.path}: skipped {len(skipped)} unreadable: {', '.join(skipped[:5])}"
                          + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""), EdgewardWarning,
                          stacklevel=3)
        return dataset
    module, _, function = ADAPTERS[parsed.kind].partition(":")
    dataset = getattr(import_module(module), function)(parsed)
    dataset.name = text
    dataset.meta["cache_key"] = key
    store(key, dataset)
    return dataset
