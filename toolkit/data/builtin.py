"""`builtin:digits[:train|:test]` (scikit-learn's bundled digits) and `.npz` files."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from toolkit.data.dataset import Dataset, check_consistent
from toolkit.errors import BadInput

DIGITS_SPLITS = ("all", "train", "test")


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits as float32 [N,1,8,8] in [0,1], with the fixed split.

    Returns x_train, x_test, y_train, y_test (`test_size=0.25, random_state=0, stratify=y`).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    labels = digits.target.astype(np.int64)
    return tuple(train_test_split(images, labels, test_size=0.25, random_state=0, stratify=labels))


def load_digits_data(split: str = "test", input_name: str = "x") -> Dataset:
    if split not in DIGITS_SPLITS:
        raise BadInput(f"unknown digits split {split!r}: use one of {', '.join(DIGITS_SPLITS)}")
    x_train, x_test, y_train, y_test = digits_split()
    if split == "train":
        x, y = x_train, y_train
    elif split == "test":
        x, y = x_test, y_test
    else:
        x, y = np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test])
    return Dataset({input_name: x}, y, name=f"builtin:digits:{split}")


def load_builtin(text: str) -> Dataset:
    parts = text.split(":")
    if parts[1] != "digits" or len(parts) > 3:
        raise BadInput(f"unknown builtin data {text!r}: use builtin:digits, builtin:digits:train or :test")
    return load_digits_data(parts[2] if len(parts) == 3 else "all")


def load_npz(path: str | Path) -> Dataset:
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: no such data file")
    if not zipfile.is_zipfile(path):  # np.load would read an .npy or try pickle: neither is an .npz
        raise BadInput(f"{path} is not an .npz archive (write one with numpy.savez, one array per model input)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as error:
        raise BadInput(f"{path} is not a readable .npz file ({error})") from None
    labels = arrays.pop("labels", None)
    if not arrays:
        raise BadInput(f"{path} holds no input arrays (only 'labels')")
    dataset = Dataset(arrays, labels, name=str(path))
    check_consistent(dataset)
    return dataset
