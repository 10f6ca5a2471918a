"""Open the two sides of a validation and feed them the same data.

Formats name their inputs differently (ONNX "x", TFLite "args_0", PyTorch "x"), so a
single-input dataset is renamed to each model's input name; several inputs are matched
by name, or by position when the model only has positional names (litert-torch's
`args_N`). Data whose names, ranks or dtypes fit neither model is BadInput.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit.errors import BadInput, EdgewardError

_POSITIONAL = re.compile(r"^args_\d+$")


@dataclass
class Side:
    label: str
    runner: object
    model_path: Path | None  # the .onnx/.tflite file, when there is one
    artifact: Path | None  # the artifact folder (with a manifest) holding it


def load_side(spec, role: str, **source_options) -> Side:
    """A runner for a model spec (or an already open runner), with where it lives.

    `source_options` go to `toolkit.sources.load_source` for PyTorch sources (`input_shapes`,
    `data_shapes`); ONNX and TFLite files ignore them.
    """
    from toolkit.artifacts import MANIFEST, artifact_folder_of

    if hasattr(spec, "run") and hasattr(spec, "inputs"):
        path = getattr(spec, "path", None)
        path = Path(path) if path is not None else None
        return Side(str(path or type(spec).__name__), spec, path, artifact_folder_of(path) if path else None)
    from toolkit.sources import open_any

    text = str(spec)
    try:
        runner = open_any(text, **source_options)
    except ModuleNotFoundError as error:
        raise BadInput(f"{role} {text!r}: cannot open it here ({error})") from None
    except EdgewardError as error:
        raise type(error)(f"{role}: {error}") from None
    path = getattr(runner, "path", None)
    model_path = Path(path) if path is not None and Path(path).suffix in (".onnx", ".tflite") else None
    artifact = artifact_folder_of(model_path) if model_path is not None else None
    if artifact is None and Path(text).is_dir() and (Path(text) / MANIFEST).is_file():
        artifact = Path(text)
    return Side(text, runner, model_path, artifact)


def prepare_feeds(dataset, runner, role: str, static: bool = True) -> dict[str, np.ndarray]:
    """The dataset's arrays under the runner's input names, cast to its dtypes.

    With `static`, names, ranks, fixed dims and dtype kinds are checked (BadInput);
    without, only names (a `--shapes` probe is meant to find what fails).
    """
    from toolkit.data import Dataset, check_matches

    specs = list(runner.inputs)
    names = [spec.name for spec in specs]
    renamed = dataset.renamed(names)
    inputs = dict(renamed.inputs)
    missing = [name for name in names if name not in inputs]
    if missing and len(inputs) == len(names) and all(_POSITIONAL.match(name) for name in names):
        inputs = dict(zip(names, dataset.inputs.values(), strict=True))
    if static:
        try:
            check_matches(Dataset(inputs, None, dataset.name), specs)
        except BadInput as error:
            raise BadInput(f"{role}: {error}") from None
    elif missing and not all(name in inputs for name in names):
        raise BadInput(f"{role}: data has inputs {sorted(dataset.inputs)} but the model needs {sorted(names)}")
    feeds = {}
    for spec in specs:
        array = np.asarray(inputs[spec.name])
        want = _dtype(spec.dtype)
        if want is not None and want != array.dtype and want.kind == array.dtype.kind:
            array = array.astype(want)
        feeds[spec.name] = array
    return feeds


def _dtype(name) -> np.dtype | None:
    try:
        return np.dtype(name) if name else None
    except TypeError:
        return None


def run_side(runner, feeds: dict[str, np.ndarray], whole: bool = False, batch_size: int = 256) -> list[np.ndarray]:
    """All outputs for all examples, batched where the model allows.

    A model with a fixed batch axis gets batches of exactly that size; the last one is
    padded by repeating its final example, and the padding's outputs are dropped.
    """
    if whole:
        return [np.asarray(output) for output in runner.run(feeds)]
    from toolkit.runtime import run_batched

    return run_batched(runner, feeds, batch_size=batch_size)


def feed_count(feeds: dict[str, np.ndarray], specs) -> int:
    """Examples in the feeds, counted on each input's example axis (0-d inputs are shared)."""
    from toolkit.common.batching import batch_axes, example_total

    return example_total(feeds, batch_axes(feeds, specs))


def run_candidate(side: Side, feeds: dict[str, np.ndarray], device: str | None, whole: bool = False,
                  batch_size: int = 256):
    """On the host, or on DEVICE through `toolkit.devices` (the comparison stays on the host)."""
    if not device:
        return run_side(side.runner, feeds, whole=whole, batch_size=batch_size)
    if side.model_path is None:
        raise BadInput("--device runs an ONNX or TFLite file: export the candidate first")
    from toolkit.devices import run_on_device

    return [np.asarray(output) for output in run_on_device(side.model_path, feeds, device)]


def random_inputs(dataset, shape_set: dict[str, list[int]], seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs at the named shapes, in the data's own value range and dtype.

    An input that is not named follows a named input whose data had the same shape
    (input_ids, attention_mask, token_type_ids), else keeps its per-example shape.
    """
    unknown = [name for name in shape_set if name not in dataset.inputs]
    if unknown:
        raise BadInput(f"--shapes names {', '.join(unknown)} but the data's inputs are {', '.join(dataset.inputs)}")
    rng = np.random.default_rng(seed)
    first = next(iter(shape_set.values()))
    result = {}
    for name, array in dataset.inputs.items():
        if name in shape_set:
            shape = list(shape_set[name])
        else:
            twin = next((other for other in shape_set if dataset.inputs[other].shape == array.shape), None)
            shape = list(shape_set[twin]) if twin else [first[0], *array.shape[1:]]
        if len(shape) != array.ndim:
            raise BadInput(f"--shapes {name}={'x'.join(map(str, shape))}: the data's {name} has rank {array.ndim}")
        result[name] = _random_like(array, shape, rng)
    return result


def _random_like(array: np.ndarray, shape: list[int], rng) -> np.ndarray:
    if array.dtype == np.bool_:
        return rng.random(shape) < 0.5
    low, high = (array.min(), array.max()) if array.size else (0, 1)
    if array.dtype.kind in "iu":
        return rng.integers(int(low), int(high) + 1, size=shape).astype(array.dtype)
    return rng.uniform(float(low), float(high), size=shape).astype(array.dtype)
