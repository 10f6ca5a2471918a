"""Datasets for calibration and evaluation: `builtin:digits[:train|:test]` and `.npz` files.

A `Dataset` is a dict of input arrays named after the model's inputs, plus optional
labels. In an `.npz`, every array but `labels` is an input.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolkit.common.batching import batch_axis, example_total, slice_examples
from toolkit.errors import BadInput

DIGITS_SPLITS = ("all", "train", "test")


@dataclass
class Dataset:
    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    name: str = ""
    meta: dict = field(default_factory=dict)
    # The axis that counts examples, per input (see `batch_axis`); axis 0 where not named.
    axes: dict[str, int | None] = field(default_factory=dict)

    def axis(self, name: str) -> int | None:
        array = self.inputs[name]
        return None if np.ndim(array) == 0 else self.axes.get(name, 0)

    def __len__(self) -> int:
        # A 0-d array is a scalar input (e.g. a step counter) shared by every example.
        return example_total(self.inputs, {name: self.axis(name) for name in self.inputs})

    def take(self, count: int) -> Dataset:
        labels = None if self.labels is None else self.labels[:count]
        inputs = slice_examples(self.inputs, {name: self.axis(name) for name in self.inputs}, 0, count)
        return Dataset(inputs, labels, self.name, self.meta, dict(self.axes))

    def batches(self, batch_size: int):
        axes = {name: self.axis(name) for name in self.inputs}
        for start in range(0, len(self), batch_size):
            yield slice_examples(self.inputs, axes, start, start + batch_size)

    def for_model(self, specs) -> Dataset:
        """The same data with each input's example axis read from the model's input specs."""
        by_name = {spec.name: spec for spec in specs}
        axes = {name: batch_axis(array, by_name.get(name)) for name, array in self.inputs.items()}
        return Dataset(self.inputs, self.labels, self.name, self.meta, axes)

    def renamed(self, names: list[str]) -> Dataset:
        """Give a single-input dataset the model's input name."""
        if list(self.inputs) == list(names):
            return self
        if len(self.inputs) == 1 and len(names) == 1:
            axis = self.axes.get(next(iter(self.inputs)), 0)
            return Dataset({names[0]: next(iter(self.inputs.values()))}, self.labels, self.name, self.meta,
                           {names[0]: axis})
        return self


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


def check_consistent(dataset: Dataset) -> None:
    """Raise BadInput for data with no examples, or with labels that do not match its examples."""
    lengths = {name: (array.shape[0] if array.ndim else None) for name, array in dataset.inputs.items()}
    if len(dataset) == 0:
        raise BadInput(f"{dataset.name}: the data has no examples")
    batch_lengths = {length for length in lengths.values() if length is not None}
    if dataset.labels is not None and len(dataset.labels) not in batch_lengths:
        raise BadInput(
            f"{dataset.name}: {len(dataset.labels)} labels but {max(batch_lengths or {0})} examples"
        )


def load_data(spec: str | Path, input_names: list[str] | None = None) -> Dataset:
    """Load `builtin:digits[:train|:test]` or an `.npz`; name a lone input after the model's."""
    text = str(spec)
    if text.startswith("builtin:"):
        parts = text.split(":")
        if parts[1] != "digits" or len(parts) > 3:
            raise BadInput(f"unknown builtin data {text!r}: use builtin:digits, builtin:digits:train or :test")
        dataset = load_digits_data(parts[2] if len(parts) == 3 else "all")
    elif text.endswith(".npz"):
        dataset = load_npz(text)
    else:
        raise BadInput(f"unknown data {text!r}: give builtin:digits[:train|:test] or an .npz file")
    if input_names:
        dataset = dataset.renamed(list(input_names))
    return dataset


def check_matches(dataset: Dataset, specs) -> None:
    """Raise BadInput unless the data's names, ranks and fixed dims fit the model's inputs.

    `specs` are `toolkit.common.tensors.TensorSpec`s.
    """
    expected = {spec.name: spec for spec in specs}
    missing = [name for name in expected if name not in dataset.inputs]
    if missing:
        raise BadInput(
            f"data {dataset.name!r} has inputs {sorted(dataset.inputs)} but the model needs {sorted(expected)}"
        )
    for name, spec in expected.items():
        array = dataset.inputs[name]
        if len(spec.shape) != array.ndim:
            raise BadInput(f"input {name!r}: the model wants rank {len(spec.shape)} {spec.shape}, data has {list(array.shape)}")
        for axis, (want, have) in enumerate(zip(spec.shape, array.shape, strict=True)):
            if axis == 0 or not isinstance(want, int) or want <= 0:
                continue
            if want != have:
                raise BadInput(f"input {name!r}: the model wants shape {spec.shape}, data has {list(array.shape)}")
        if spec.dtype and np.dtype(spec.dtype).kind != array.dtype.kind:
            raise BadInput(f"input {name!r}: the model wants {spec.dtype}, data has {array.dtype}")
