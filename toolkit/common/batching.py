"""Examples and batches: which axis of each array counts examples, and running data through a
model in batches.

A spec is anything with `.name` and `.shape` (a `TensorSpec`); a shape is a list holding an
int per fixed dim and a name or None where the size varies.

`toolkit/devices/runner.py` keeps a copy of these functions (it runs on devices and imports
nothing of the package); `tests/test_batching_parity.py` holds the two in step.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def is_fixed(dim) -> bool:
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
    if len(shape) != np.ndim(array) or not is_fixed(shape[0]) or np.shape(array)[0] != shape[0]:
        return 0
    return next((axis for axis, dim in enumerate(shape[1:], 1) if not is_fixed(dim)), 0)


def batch_axes(inputs: dict, specs=None) -> dict[str, int | None]:
    """Each input's example axis, read against the model's input specs (by name)."""
    by_name = {spec.name: spec for spec in specs or []}
    return {name: batch_axis(array, by_name.get(name)) for name, array in inputs.items()}


def example_total(inputs: dict, axes: dict[str, int | None]) -> int:
    """Examples in a set of arrays: the shortest along its example axis; 1 if all are scalars."""
    lengths = [np.shape(array)[axes.get(name, 0)] for name, array in inputs.items()
               if np.ndim(array) > 0 and axes.get(name, 0) is not None]
    return min(lengths) if lengths else (1 if inputs else 0)


def slice_examples(inputs: dict, axes: dict[str, int | None], start: int, stop: int) -> dict:
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


def fixed_batch(specs, inputs: dict | None = None) -> int | None:
    """The fixed batch size the model's inputs demand, if any (e.g. 1 for most TFLite files).

    With the data's `inputs`, each input's example axis is read from them (`batch_axis`):
    silero-vad's state [2, batch, 128] fixes 2 on axis 0, which is not its batch.
    """
    fixed = []
    for spec in specs:
        shape = list(spec.shape or [])
        axis = batch_axis(inputs[spec.name], spec) if inputs and spec.name in inputs else 0
        if shape and axis is not None and axis < len(shape) and is_fixed(shape[axis]):
            fixed.append(shape[axis])
    return min(fixed) if fixed else None


def output_axis(output, count: int, spec=None, inputs=()) -> int | None:
    """The axis of a model output that counts a batch of `count` examples (None for a 0-d output).

    An axis whose symbolic name is the one an input's example axis carries (silero-vad's
    `stateN` [.., "batch", ..]); else the only axis `count` long; where several are (a batch
    of 2 and a state [2, 2, 128]), the example axis of an input whose fixed dims the output
    repeats (`state` [2, ?, 128] -> 1); else axis 0. `inputs`: (input spec, example axis) pairs.
    """
    shape = np.shape(output)
    if not shape:
        return None
    dims = list(getattr(spec, "shape", None) or [])
    in_shapes = [(list(getattr(s, "shape", None) or []), axis) for s, axis in inputs]
    names = {s[axis] for s, axis in in_shapes if axis is not None and len(s) > axis and isinstance(s[axis], str)}
    if len(dims) == len(shape):
        named = [axis for axis, dim in enumerate(dims) if isinstance(dim, str) and dim in names and shape[axis] == count]
        if named:
            return named[0]
    candidates = [axis for axis, length in enumerate(shape) if length == count]
    if len(candidates) <= 1:
        return candidates[0] if candidates else 0
    best, best_fixed = None, 0
    for in_dims, axis in in_shapes:
        if axis not in candidates or len(in_dims) != len(shape):
            continue
        fixed = [i for i, dim in enumerate(in_dims) if i != axis and is_fixed(dim)]
        if fixed and len(fixed) > best_fixed and all(in_dims[i] == shape[i] for i in fixed):
            best, best_fixed = axis, len(fixed)
    if best is not None:
        return best
    return 0 if 0 in candidates else candidates[0]


def pad_examples(array, axis: int | None, short: int):
    """`array` with its last example repeated `short` more times along `axis` (a scalar as it is)."""
    if axis is None or short <= 0:
        return array
    last = np.take(array, [-1], axis=axis)
    return np.concatenate([array, np.repeat(last, short, axis=axis)], axis=axis)


def run_in_batches(run: Callable[[dict], list], inputs: dict, specs=(), output_specs=(),
                   batch_size: int = 256) -> list[np.ndarray]:
    """Run `inputs` through `run` (feeds -> outputs) in batches; the outputs, concatenated.

    Each input is cut along its example axis (`batch_axis`); 0-d inputs (e.g. a sample
    rate) go whole with every batch. Outputs are joined along their own example axis
    (`output_axis`). A model with a fixed batch size gets batches of exactly that size: the
    last one is padded by repeating its final example, and the padding's outputs are dropped.
    """
    specs, output_specs = list(specs or []), list(output_specs or [])
    axes = batch_axes(inputs, specs)
    fixed = fixed_batch(specs, inputs)
    size = fixed or max(1, batch_size)
    count = example_total(inputs, axes)
    by_name = {spec.name: spec for spec in specs}
    pairs = [(by_name.get(name), axis) for name, axis in axes.items()]
    chunks: list[list] = []
    out_axes: list[int | None] = []
    for start in range(0, max(count, 1), size):
        batch = slice_examples(inputs, axes, start, start + size)
        got = example_total(batch, axes)
        short = size - got if fixed and got else 0
        if short > 0:
            batch = {name: pad_examples(array, axes[name], short) for name, array in batch.items()}
        outputs = [np.asarray(output) for output in run(batch)]
        if not out_axes:
            out_axes = [output_axis(output, got + short, output_specs[i] if i < len(output_specs) else None, pairs)
                        for i, output in enumerate(outputs)]
        if short > 0:
            outputs = [output if axis is None else np.take(output, np.arange(got), axis=axis)
                       for output, axis in zip(outputs, out_axes, strict=True)]
        chunks.append(outputs)
    if len(chunks) == 1:
        return chunks[0]
    return [chunks[0][i] if axis is None else np.concatenate([chunk[i] for chunk in chunks], axis=axis)
            for i, axis in enumerate(out_axes)]
