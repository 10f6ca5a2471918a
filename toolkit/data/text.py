"""Text in JSONL or CSV → token arrays, through a Hugging Face folder's tokenizer.

Options: `preprocessor=DIR` (the tokenizer, required), `text_field` (default `text`),
`text_pair_field` (two-sentence tasks), `label_field` (default `label`, optional in the
data), `max_length` (default: the model's length). Every example is padded and truncated
to the same length, so the arrays have one static shape.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np

from toolkit.data.dataset import Dataset
from toolkit.data.problems import labels_from_names, report_bad
from toolkit.data.spec import DataSpec
from toolkit.errors import BadInput, missing_library

logger = logging.getLogger(__name__)

FALLBACK_MAX_LENGTH = 128
# transformers' "no limit" sentinel for model_max_length is about 1e30
_NO_LIMIT = 1_000_000


def read_records(path: Path) -> tuple[list[dict], list[tuple[str, str]]]:
    """The rows of a JSONL (one object a line) or CSV/TSV file, and the lines that are not rows."""
    bad: list[tuple[str, str]] = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise BadInput(f"{path}: cannot read it as UTF-8 text ({error})") from None
    if path.suffix.lower() in (".csv", ".tsv"):
        reader = csv.DictReader(text.splitlines(), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        return list(reader), bad
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            bad.append((f"line {number}", "not JSON"))
            continue
        if not isinstance(record, dict):
            bad.append((f"line {number}", "not an object"))
            continue
        records.append(record)
    return records, bad


def load_tokenizer(folder: str):
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise missing_library("transformers") from None
    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:  # a broken config raises any
        raise BadInput(f"{folder}: no tokenizer Edgeward can load ({str(error).splitlines()[0]})") from None


def model_max_length(tokenizer, folder: str) -> int:
    length = getattr(tokenizer, "model_max_length", None)
    if isinstance(length, int) and 0 < length < _NO_LIMIT:
        return length
    config = Path(folder) / "config.json"
    if config.is_file():
        try:
            settings = json.loads(config.read_text())
        except ValueError:
            settings = None
        positions = settings.get("max_position_embeddings") if isinstance(settings, dict) else None
        if isinstance(positions, int) and positions > 0:
            return positions
    return FALLBACK_MAX_LENGTH


def tokenize_records(records: list[dict], spec: DataSpec, source: str,
                     bad: list[tuple[str, str]] | None = None) -> Dataset:
    """Tokenize `text_field` (and `text_pair_field`) of each record; labels from `label_field`."""
    folder = spec.get("preprocessor")
    if not folder:
        raise BadInput(f"{source}: text needs a tokenizer: give preprocessor=DIR (--preprocessor DIR), "
                       "a Hugging Face folder with the tokenizer files")
    text_field = spec.get("text_field", "text")
    pair_field = spec.get("text_pair_field")
    label_field = spec.get("label_field", "label")
    bad = list(bad or [])
    texts, pairs, labels = [], [], []
    for position, record in enumerate(records, start=1):
        text = record.get(text_field)
        pair = record.get(pair_field) if pair_field else None
        if not isinstance(text, str) or (pair_field and not isinstance(pair, str)):
            wanted = text_field + (f" and {pair_field}" if pair_field else "")
            bad.append((f"row {position}", f"no text in {wanted}"))
            continue
        texts.append(text)
        pairs.append(pair)
        label = record.get(label_field)
        labels.append(None if label is None or label == "" else str(label))
    limit = spec.int("limit")
    if limit:
        texts, pairs, labels = texts[:limit], pairs[:limit], labels[:limit]
    report_bad(source, bad, len(texts))
    tokenizer = load_tokenizer(folder)
    max_length = spec.int("max_length") or model_max_length(tokenizer, folder)
    encoded = tokenizer(texts, pairs if pair_field else None, padding="max_length", truncation=True,
                        max_length=max_length, return_tensors="np")
    inputs = {name: np.asarray(array).astype(np.int64) for name, array in encoded.items()}
    label_array, classes = labels_from_names(labels)
    meta = {"kind": "text", "max_length": max_length, "classes": classes, "skipped": [name for name, _ in bad]}
    logger.info("data %s: %d texts → %s tokens", source, len(texts), max_length)
    return Dataset(inputs, label_array, name=source, meta=meta)


def load_text(spec: DataSpec) -> Dataset:
    path = Path(spec.path)
    if not path.is_file():
        raise BadInput(f"{path}: no such text file (.jsonl or .csv)")
    records, bad = read_records(path)
    return tokenize_records(records, spec, str(path), bad)
