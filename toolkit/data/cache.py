"""Preprocessed tensors cached under `<cache>/data/`, keyed by (data content, preprocessing).

Decoding a few thousand images or tokenizing a corpus takes longer than reading one `.npz`;
the key changes when a file's bytes, the options or the preprocessor's configuration change.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
from pathlib import Path

import numpy as np

from toolkit.data.dataset import Dataset

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
# Weights do not change preprocessing; hashing them would make every key slow to compute.
_WEIGHT_SUFFIXES = {".safetensors", ".bin", ".onnx", ".tflite", ".pt", ".pth", ".h5", ".msgpack", ".ckpt"}


def content_hash(path: str | Path, skip_weights: bool = False) -> str:
    """sha256 over every file's relative path and bytes (one file: its bytes)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(file for file in path.rglob("*") if file.is_file())
    for file in files:
        if skip_weights and file.suffix.lower() in _WEIGHT_SUFFIXES:
            continue
        digest.update(str(file.relative_to(path) if file != path else file.name).encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def cache_key(kind: str, data_path: str | Path, options: dict[str, str]) -> str:
    preprocessor = options.get("preprocessor")
    record = {
        "version": CACHE_VERSION,
        "kind": kind,
        "data": content_hash(data_path),
        "options": sorted(options.items()),
        "preprocessor": content_hash(preprocessor, skip_weights=True) if preprocessor else None,
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:32]


def _cache_file(key: str) -> Path:
    from toolkit.paths import cache_dir

    return cache_dir() / "data" / f"{key}.npz"


def load_cached(key: str, name: str) -> Dataset | None:
    path = _cache_file(key)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {entry: archive[entry] for entry in archive.files}
        meta = json.loads(bytes(arrays.pop("__meta__")).decode())
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as error:
        logger.debug("ignoring unreadable data cache %s (%s)", path, error)
        return None
    labels = arrays.pop("__labels__", None)
    logger.debug("data %s: preprocessed tensors from the cache (%s)", name, path.name)
    return Dataset(arrays, labels, name=name, meta={**meta, "cache_key": key})


def store(key: str, dataset: Dataset) -> None:
    from toolkit.artifacts import atomic_write_bytes

    arrays = dict(dataset.inputs)
    if dataset.labels is not None:
        arrays["__labels__"] = dataset.labels
    arrays["__meta__"] = np.frombuffer(json.dumps(dataset.meta).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    try:
        atomic_write_bytes(_cache_file(key), buffer.getvalue())
    except OSError as error:  # a read-only cache folder only costs the next run time
        logger.warning("could not cache preprocessed data: %s", error)
