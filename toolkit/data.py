"""Datasets for calibration and evaluation: `builtin:digits[:train|:test]` and `.npz` files.

A `Dataset` is a dict of input arrays named after the model's inputs, plus optional
labels. In an `.npz`, every array but `labels` is an input.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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


def _fixed(dim) -> bool:
    return isinstance(dim, int) and dim > 0


def batch_axis(array, spec=None) -> int | None:
    """The axis of `array` that counts examples: None for a 0-d array (a scalar shared by all).

    Axis 0, unless the model fixes axis 0 to the size the data has there and leaves a later
    axis symbolic: a recurrent state such as silero-vad's `state` [2, batch, 128] counts
    its examples on axis 1.
    """
    if np.ndim(array) == 0:
        return None
    shape = list(getattr(spec, "shape", None) or [])
    if len(shape) != np.ndim(array) or not _fixed(shape[0]) or np.shape(array)[0] != shape[0]:
        return 0
    return next((axis for axis, dim in enumerate(shape[1:], 1) if not _fixed(dim)), 0)


def batch_axes(inputs: dict[str, np.ndarray], specs=None) -> dict[str, int | None]:
    by_name = {spec.name: spec for spec in specs or []}
    return {name: batch_axis(array, by_name.get(name)) for name, array in inputs.items()}


def example_total(inputs: dict[str, np.ndarray], axes: dict[str, int | None]) -> int:
    """Examples in a set of arrays: the shortest along its example axis; 1 if all are scalars."""
    lengths = [np.shape(array)[axes.get(name, 0)] for name, array in inputs.items()
               if np.ndim(array) > 0 and axes.get(name, 0) is not None]
    return min(lengths) if lengths else (1 if inputs else 0)


def slice_examples(inputs: dict[str, np.ndarray], axes: dict[str, int | None], start: int, stop: int) -> dict:
    """Examples start..stop of every array along its example axis; scalars are passed whole."""
    result = {}
    for name, array in inputs.items():
        axis = axes.get(name, 0) if np.ndim(array) > 0 else None
        if axis is None:
            result[name] = array
        else:
            index = [slice(None)] * np.ndim(array)
            index[axis] = slice(start, stop)
            result[name] = array[tuple(index)]
    return result


def output_axis(output, count: int, spec=None, inputs=()) -> int | None:
    """The axis of a model output that counts a batch of `count` examples (None for a 0-d output).

    An axis whose symbolic name is the one an input's example axis carries (silero-vad's
    `stateN` [.., "batch", ..]); else the only axis `count` long; where several are (a batch
    of 2 and a state [2, 2, 128]), the example axis of an input whose fixed dims the output
    repeats (`state` [2, ?, 128] -> 1); else axis 0. `inputs`: (TensorSpec, example axis) pairs.
    """
    shape = np.shape(output)
    if not shape:
        return None
    dims = list(getattr(spec, "shape", None) or [])
    names = {s.shape[axis] for s, axis in inputs
             if axis is not None and s is not None and len(s.shape) > axis and isinstance(s.shape[axis], str)}
    if len(dims) == len(shape):
        named = [axis for axis, dim in enumerate(dims) if isinstance(dim, str) and dim in names and shape[axis] == count]
        if named:
            return named[0]
    candidates = [axis for axis, length in enumerate(shape) if length == count]
    if len(candidates) <= 1:
        return candidates[0] if candidates else 0
    best, best_fixed = None, 0
    for s, axis in inputs:
        in_dims = list(getattr(s, "shape", None) or [])
        if axis not in candidates or len(in_dims) != len(shape):
            continue
        fixed = [i for i, dim in enumerate(in_dims) if i != axis and _fixed(dim)]
        if fixed and len(fixed) > best_fixed and all(in_dims[i] == shape[i] for i in fixed):
            best, best_fixed = axis, len(fixed)
    if best is not None:
        return best
    return 0 if 0 in candidates else candidates[0]


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
    _check_consistent(dataset)
    return dataset


def _check_consistent(dataset: Dataset) -> None:
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

    `specs` are `toolkit.runtime.TensorSpec`s.
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
