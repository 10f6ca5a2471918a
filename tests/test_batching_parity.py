"""The device runner's copy of the batching functions gives the answers toolkit.common.batching gives.

`toolkit/devices/runner.py` runs on devices and imports nothing of the package, so it keeps
its own copy of `toolkit/common/batching.py`. Both are fed the same cases: symbolic and fixed
batch dims, 0-d inputs, recurrent state inputs, odd remainders and padding, the last two on
real ONNX models run by onnxruntime.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from toolkit.common import batching
from toolkit.common.tensors import TensorSpec

RUNNER_PATH = Path(__file__).resolve().parent.parent / "toolkit" / "devices" / "runner.py"
FUNCTIONS = ("is_fixed", "batch_axis", "batch_axes", "example_total", "slice_examples", "fixed_batch",
             "output_axis", "pad_examples", "run_in_batches")


def load_runner():
    spec = importlib.util.spec_from_file_location("edgeward_device_runner", RUNNER_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


runner = load_runner()


def same(a, b) -> bool:
    """Equal answers: numbers, None, arrays (shape, dtype, values) and dicts or lists of them."""
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return isinstance(b, list | tuple) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)
    return a == b and type(a) is type(b)


def both(name: str, *args, **kwargs):
    """The common function's answer, after checking the runner's copy gives the same."""
    ours = getattr(batching, name)(*args, **kwargs)
    theirs = getattr(runner, name)(*args, **kwargs)
    assert same(ours, theirs), f"{name}: common gives {ours!r}, the runner {theirs!r}"
    return ours


def test_the_runner_has_every_batching_function():
    assert [name for name in FUNCTIONS if not callable(getattr(runner, name, None))] == []


def spec(name: str, shape) -> TensorSpec:
    return TensorSpec(name, list(shape), "float32")


X = np.arange(5 * 3, dtype=np.float32).reshape(5, 3)
STATE = np.arange(2 * 5 * 4, dtype=np.float32).reshape(2, 5, 4)
SR = np.array(16000, dtype=np.int64)


@pytest.mark.parametrize("array, shape, axis", [
    (X, ["batch", 3], 0),                 # symbolic batch
    (X, [None, 3], 0),                    # unknown batch
    (X, [5, 3], 0),                       # fixed batch the data matches: still axis 0
    (X, [1, 3], 0),                       # fixed batch 1, data of 5
    (STATE, [2, "batch", 4], 1),          # a recurrent state counts examples on axis 1
    (STATE, [2, None, 4], 1),
    (STATE, [2, 5, 4], 0),                # all fixed: axis 0
    (STATE, [3, "batch", 4], 0),          # axis 0 fixed to another size: the data's 2 is a batch
    (STATE, ["batch", 4], 0),             # rank differs: axis 0
    (SR, [], None),                       # 0-d: shared by every example
    (X, None, 0),                         # no spec
])
def test_batch_axis(array, shape, axis):
    given = None if shape is None else spec("t", shape)
    assert both("batch_axis", array, given) == axis


def test_axes_totals_and_slices_with_scalars_and_states():
    inputs = {"x": X, "state": STATE, "sr": SR}
    specs = [spec("x", ["batch", 3]), spec("state", [2, "batch", 4]), TensorSpec("sr", [], "int64")]
    axes = both("batch_axes", inputs, specs)
    assert axes == {"x": 0, "state": 1, "sr": None}
    assert both("example_total", inputs, axes) == 5
    assert both("example_total", {"x": X[:3], "state": STATE}, axes) == 3  # the shortest
    assert both("example_total", {"sr": SR}, {"sr": None}) == 1  # scalars only: one example
    assert both("example_total", {}, {}) == 0
    part = both("slice_examples", inputs, axes, 3, 5)
    assert part["x"].shape == (2, 3) and part["state"].shape == (2, 2, 4) and part["sr"] is SR
    both("slice_examples", inputs, axes, 4, 9)  # past the end: what is left
    both("batch_axes", {"x": X}, None)
    both("batch_axes", {"x": X}, [runner.Spec("x", [2, "n"], "float32")])  # the runner's own specs


@pytest.mark.parametrize("shapes, with_inputs, expected", [
    ({"x": ["batch", 3]}, True, None),
    ({"x": [1, 3]}, True, 1),
    ({"x": [4, 3], "y": [2, 3]}, False, 2),  # the smallest fixed batch
    ({"state": [2, "batch", 4]}, True, None),  # 2 is the state's layers, not a batch
    ({"state": [2, "batch", 4]}, False, 2),  # without the data, axis 0 is taken
    ({"sr": []}, True, None),
    ({"x": [5, 3], "sr": []}, True, 5),
])
def test_fixed_batch(shapes, with_inputs, expected):
    specs = [spec(name, shape) for name, shape in shapes.items()]
    data = {"x": X, "y": X, "state": STATE, "sr": SR}
    inputs = {name: data[name] for name in shapes} if with_inputs else None
    assert both("fixed_batch", specs, inputs) == expected


@pytest.mark.parametrize("output, count, shape, inputs, expected", [
    (np.zeros((3, 10)), 3, [None, 10], [], 0),
    (np.zeros((10, 3)), 3, [10, None], [], 1),                           # the only axis 3 long
    (np.zeros((2, 2, 128)), 2, [None] * 3, [([2, None, 128], 1)], 1),    # a tie broken by the state input
    (np.zeros((2, 2, 128)), 2, ["d0", "batch", "d2"], [(["d0", "batch", "d2"], 1)], 1),  # by name
    (np.zeros((2, 2)), 2, None, [], 0),                                  # a tie, nothing to break it: 0
    (np.zeros((4, 5)), 3, None, [], 0),                                  # no axis that long: 0
    (np.zeros(()), 3, None, [], None),                                   # 0-d
])
def test_output_axis(output, count, shape, inputs, expected):
    out_spec = None if shape is None else spec("out", shape)
    pairs = [(spec(f"in{i}", in_shape), axis) for i, (in_shape, axis) in enumerate(inputs)]
    assert both("output_axis", output, count, out_spec, pairs) == expected


@pytest.mark.parametrize("array, axis, short", [(X[:3], 0, 2), (STATE[:, :3], 1, 1), (SR, None, 3), (X, 0, 0)])
def test_pad_examples_repeats_the_last_example(array, axis, short):
    padded = both("pad_examples", array, axis, short)
    if axis is not None and short:
        assert padded.shape[axis] == array.shape[axis] + short
        assert np.array_equal(np.take(padded, [-1], axis=axis), np.take(array, [-1], axis=axis))


# ---------------------------------------------------------------- whole runs on onnxruntime


def onnx_session(tmp_path: Path, name: str, inputs, outputs, nodes):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    types = {"float32": TensorProto.FLOAT, "int64": TensorProto.INT64}
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info(n, types[t], shape) for n, t, shape in inputs],
        [helper.make_tensor_value_info(n, types[t], shape) for n, t, shape in outputs],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def specs_of(args) -> list[TensorSpec]:
    return [TensorSpec(a.name, [d if isinstance(d, int | str) else None for d in a.shape], "float32") for a in args]


def test_a_stateful_model_in_odd_batches(tmp_path):
    """x [batch, 3], state [2, batch, 4], a 0-d sample rate: 7 examples in batches of 3."""
    from onnx import helper

    session = onnx_session(
        tmp_path, "stateful",
        [("x", "float32", ["batch", 3]), ("state", "float32", [2, "batch", 4]), ("sr", "int64", [])],
        [("y", "float32", ["batch", 3]), ("stateN", "float32", [2, "batch", 4])],
        [helper.make_node("Cast", ["sr"], ["srf"], to=1),
         helper.make_node("Add", ["x", "srf"], ["y"]),
         helper.make_node("Add", ["state", "state"], ["stateN"])],
    )
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((7, 3)).astype(np.float32),
             "state": rng.standard_normal((2, 7, 4)).astype(np.float32), "sr": SR}
    specs, out_specs = specs_of(session.get_inputs()), specs_of(session.get_outputs())
    calls = []

    def run(batch):
        calls.append(batch["x"].shape[0])
        return session.run(None, batch)

    y, state = both("run_in_batches", run, feeds, specs, out_specs, 3)
    assert calls == [3, 3, 1] * 2  # common's run, then the runner's
    np.testing.assert_allclose(y, feeds["x"] + 16000, rtol=1e-6)
    np.testing.assert_allclose(state, feeds["state"] * 2, rtol=1e-6)


def test_a_fixed_batch_model_is_padded_and_the_padding_dropped(tmp_path):
    """x [4, 3] fixed: 10 examples -> batches of 4, 4 and 2 padded to 4; 10 outputs come back."""
    from onnx import helper, numpy_helper

    two = numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")
    session = onnx_session(
        tmp_path, "fixed", [("x", "float32", [4, 3])], [("y", "float32", [4, 3])],
        [helper.make_node("Constant", [], ["two"], value=two), helper.make_node("Mul", ["x", "two"], ["y"])],
    )
    x = np.arange(30, dtype=np.float32).reshape(10, 3)
    sizes = []

    def run(batch):
        sizes.append(batch["x"].shape[0])
        return session.run(None, batch)

    (y,) = both("run_in_batches", run, {"x": x}, specs_of(session.get_inputs()), specs_of(session.get_outputs()))
    assert sizes == [4, 4, 4] * 2
    np.testing.assert_array_equal(y, x * 2)
