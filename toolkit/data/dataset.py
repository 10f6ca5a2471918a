"""The `Dataset` every adapter returns, and the checks that it fits a model."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from toolkit.common.batching import batch_axis, example_total, slice_examples
from toolkit.errors import BadInput


@dataclass
class Dataset:
    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    name: str = ""
    # What the adapter recorded: class names (`classes`), layout, skipped files, cache key.
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
        """Give a single-input dataset the model's input name; keep only the model's inputs."""
        if list(self.inputs) == list(names):
            return self
        if len(self.inputs) == 1 and len(names) == 1:
            axis = self.axes.get(next(iter(self.inputs)), 0)
            return Dataset({names[0]: next(iter(self.inputs.values()))}, self.labels, self.name, self.meta,
                           {names[0]: axis})
        if names and all(name in self.inputs for name in names):
            # A tokenizer gives token_type_ids that some models do not take.
            kept = {name: self.inputs[name] for name in names}
            axes = {name: axis for name, axis in self.axes.items() if name in kept}
            return Dataset(kept, self.labels, self.name, self.meta, axes)
        return self


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


def check_matches(dataset: Dataset, specs) -> None:
    """Raise BadInput unless the data's names, ranks and fixed dims fit the model's inputs.

    `specs` are `toolkit.common.tensors.TensorSpec`s. Image data in the other layout
    (NHWC for an NCHW model, or the reverse) is named as such.
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
        layout = layout_mismatch(list(spec.shape), list(array.shape))
        if layout:
            raise BadInput(
                f"input {name!r}: the data is {layout[0]} {list(array.shape)} but the model wants {layout[1]} "
                f"{spec.shape}: give layout={layout[1].lower()} in the data spec (--layout {layout[1].lower()})"
            )
        for axis, (want, have) in enumerate(zip(spec.shape, array.shape, strict=True)):
            if axis == 0 or not isinstance(want, int) or want <= 0:
                continue
            if want != have:
                hint = ""
                if array.ndim == 4 and axis in (1, 3) and {want, have} == {1, 3}:  # grayscale vs RGB images
                    hint = f": give channels={want} in the data spec (--channels {want})"
                raise BadInput(f"input {name!r}: the model wants shape {spec.shape}, data has {list(array.shape)}{hint}")
        if spec.dtype and np.dtype(spec.dtype).kind != array.dtype.kind:
            raise BadInput(f"input {name!r}: the model wants {spec.dtype}, data has {array.dtype}")


def layout_mismatch(want: list, have: list) -> tuple[str, str] | None:
    """("NHWC", "NCHW") when rank-4 data is the model's image input with channels moved; else None."""
    if len(want) != 4 or len(have) != 4:
        return None
    fixed = [dim if isinstance(dim, int) and dim > 0 else None for dim in want[1:]]

    def fits(order: list[int]) -> bool:
        moved = [have[1:][index] for index in order]
        return all(dim is None or dim == got for dim, got in zip(fixed, moved, strict=True))

    if fits([0, 1, 2]):
        return None
    channels_first = fixed[0] in (1, 3, 4)
    if channels_first and fits([2, 0, 1]):  # model C,H,W; data H,W,C
        return ("NHWC", "NCHW")
    if fixed[2] in (1, 3, 4) and fits([1, 2, 0]):  # model H,W,C; data C,H,W
        return ("NCHW", "NHWC")
    return None
