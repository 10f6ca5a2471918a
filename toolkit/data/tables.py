"""Parquet files and Hugging Face `datasets` folders saved with `save_to_disk` (local only).

A table with the text field (`text_field`, default `text`) is tokenized as text is;
otherwise every numeric column but the label is one input, its rows stacked.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from toolkit.data.dataset import Dataset, check_consistent
from toolkit.data.problems import labels_from_names
from toolkit.data.spec import DataSpec
from toolkit.data.text import tokenize_records
from toolkit.errors import BadInput, missing_library

logger = logging.getLogger(__name__)

SPLIT_PREFERENCE = ("test", "validation", "eval", "train")


def load_parquet(spec: DataSpec) -> Dataset:
    try:
        import pyarrow
        import pyarrow.parquet as parquet
    except ImportError:
        raise missing_library("pyarrow") from None
    path = Path(spec.path)
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    if not files or not files[0].is_file():
        raise BadInput(f"{path}: no Parquet file")
    try:
        table = pyarrow.concat_tables([parquet.read_table(file) for file in files])
    except (OSError, pyarrow.ArrowException) as error:
        raise BadInput(f"{path}: not a readable Parquet file ({str(error).splitlines()[0]})") from None
    return from_columns(table.to_pydict(), spec, str(path))


def load_saved_dataset(spec: DataSpec) -> Dataset:
    try:
        import datasets
    except ImportError:
        raise missing_library("datasets") from None
    path = Path(spec.path)
    try:
        loaded = datasets.load_from_disk(str(path))
    except (OSError, ValueError, FileNotFoundError) as error:
        raise BadInput(f"{path}: not a dataset saved with save_to_disk ({str(error).splitlines()[0]})") from None
    if isinstance(loaded, datasets.DatasetDict):
        split = spec.get("split") or next((name for name in SPLIT_PREFERENCE if name in loaded), next(iter(loaded)))
        if split not in loaded:
            raise BadInput(f"{path}: no split {split!r} (it has {', '.join(loaded)})")
        loaded = loaded[split]
    return from_columns(loaded.to_dict(), spec, str(path))


def from_columns(columns: dict[str, list], spec: DataSpec, source: str) -> Dataset:
    text_field = spec.get("text_field", "text")
    label_field = spec.get("label_field", "label")
    if text_field in columns:
        rows = [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]
        return tokenize_records(rows, spec, source)
    limit = spec.int("limit")
    inputs = {}
    for name, values in columns.items():
        if name == label_field:
            continue
        try:
            array = np.asarray(values[:limit] if limit else values)
        except ValueError:
            raise BadInput(f"{source}: column {name!r} has rows of different shapes") from None
        if array.dtype.kind not in "biuf":
            logger.debug("data %s: column %r is not numeric; left out", source, name)
            continue
        inputs[name] = array.astype(np.float32) if array.dtype == np.float64 else array
    if not inputs:
        raise BadInput(f"{source}: no numeric column and no text field {text_field!r} "
                       f"(columns: {', '.join(columns)}); give text_field=")
    labels = None
    classes: list[str] = []
    if label_field in columns:
        values = columns[label_field][:limit] if limit else columns[label_field]
        labels, classes = labels_from_names([None if value is None else str(value) for value in values])
    dataset = Dataset(inputs, labels, name=source, meta={"kind": "table", "classes": classes, "skipped": []})
    check_consistent(dataset)
    return dataset
