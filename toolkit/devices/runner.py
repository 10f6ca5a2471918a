"""What runs ON the device: load a model, run it, time it, report as JSON lines.

This file is copied to the device and run with the device's own Python, so it stands
alone: the standard library, numpy, and whichever one runtime the device has
(onnxruntime for .onnx; ai_edge_litert, tflite_runtime or tensorflow.lite for .tflite).
It must not import anything from `toolkit`.

Output is JSON, one object per line on stdout, so a host that loses the connection
mid-run still holds what arrived (the timings so far) and can say the result is
incomplete rather than report it as finished:

  {"event": "loaded", ...}            after the model loaded
  {"event": "timings", "ms": [...]}   measured runs, in batches
  {"event": "result", ...}            the summary: the last line of a complete run
  {"event": "error", "kind": ..., "message": ...}   a failure the host can explain

A bench result also says where each op ran (`placement`: the nodes a LiteRT delegate took
and those left on the builtin kernels; onnxruntime's provider and profiled time per node),
the input shapes timed, and the CPU's governor, clock and temperature where /sys has them.

Usage:
  python runner.py bench   --model M [--inputs in.npz] [--runs N] [--warmup N] [--threads N]
  python runner.py predict --model M --inputs in.npz --outputs out.npz [--threads N] [--all-tensors]
  python runner.py lm      --model M [--prompt-tokens N] [--new-tokens N] [--runs N] [--warmup N]
                           [--vocab-size V] [--context C] [--head-dim H]   (a with-past decoder: TTFT, tokens/s;
                           an ONNX decoder or a LiteRT model with prefill_N and decode signatures)
  python runner.py probe   (what this device has: OS, CPU, Python, runtimes, RAM, disk, thermals)
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
import warnings

EXIT_RUNTIME_MISSING = 3
EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
PREDICT_BATCH = 256  # examples per run where the model does not fix its batch

TFLITE_MODULES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter", "tensorflow.lite")
INSTALL_HINT = {
    "onnx": "pip install numpy onnxruntime",
    "tflite": "pip install numpy ai-edge-litert (or tflite-runtime)",
}


# A model input or output: what toolkit.common.tensors.TensorSpec says, as a tuple.
Spec = collections.namedtuple("Spec", "name shape dtype")


class RunnerError(Exception):
    def __init__(self, kind: str, message: str, code: int = EXIT_FAILED):
        super().__init__(message)
        self.kind = kind
        self.code = code


def say(event: str, **fields) -> None:
    fields["event"] = event
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


# ------------------------------------------------------------------ runtimes


def import_numpy(model_format: str):
    try:
        import numpy
    except ImportError:
        raise RunnerError(
            "runtime_missing", f"numpy is not installed for {sys.executable}: {INSTALL_HINT[model_format]}",
            EXIT_RUNTIME_MISSING,
        ) from None
    return numpy


def tflite_interpreter_class():
    """The first TFLite interpreter this device has, with its package name and version."""
    import importlib

    for module_name in TFLITE_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        package = module_name.split(".")[0]
        cls = module.Interpreter
        version = getattr(importlib.import_module(package), "__version__", "unknown")
        return cls, package, version
    raise RunnerError(
        "runtime_missing",
        f"no TFLite runtime for {sys.executable} (tried {', '.join(TFLITE_MODULES)}): {INSTALL_HINT['tflite']}",
        EXIT_RUNTIME_MISSING,
    )


class StderrCapture:
    """Capture what native code writes to fd 2 (TFLite logs the delegates it applies there)."""

    def __enter__(self):
        sys.stderr.flush()
        self.saved = os.dup(2)
        self.file = tempfile.TemporaryFile(mode="w+b")
        os.dup2(self.file.fileno(), 2)
        return self

    def __exit__(self, *exc):
        sys.stderr.flush()
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.file.seek(0)
        self.text = self.file.read(65536).decode("utf-8", "replace")
        self.file.close()
        return False


class OnnxModel:
    def __init__(self, path: str, threads: int | None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise RunnerError(
                "runtime_missing", f"onnxruntime is not installed for {sys.executable}: {INSTALL_HINT['onnx']}",
                EXIT_RUNTIME_MISSING,
            ) from None
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.runtime = {"name": "onnxruntime", "version": ort.__version__}
        self.delegate = self.session.get_providers()[0]
        self.threads = threads or options.intra_op_num_threads or os.cpu_count()
        self.inputs = [Spec(i.name, list(i.shape), _onnx_dtype(i.type)) for i in self.session.get_inputs()]
        self.output_specs = [Spec(o.name, list(o.shape), _onnx_dtype(o.type)) for o in self.session.get_outputs()]

    def run(self, feeds: dict) -> list:
        return self.session.run(None, feeds)

    def prepare(self, feeds: dict):
        return feeds

    def run_prepared(self, feeds) -> list:
        return self.session.run(None, feeds)


def _onnx_dtype(type_name: str) -> str:
    return {
        "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
        "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8",
        "tensor(uint8)": "uint8", "tensor(bool)": "bool",
    }.get(type_name, "float32")


# Examples and batches: a copy of toolkit/common/batching.py (this file cannot import toolkit),
# numpy imported inside each function. tests/test_batching_parity.py holds the two in step.


def is_fixed(dim) -> bool:
    return isinstance(dim, int) and dim > 0


def batch_axis(array, spec=None) -> int | None:
    """The axis of `array` that counts examples: None for a 0-d array (a scalar shared by all).

    Axis 0, unless the model fixes axis 0 to the size the data has there and leaves a later
    axis symbolic: a recurrent state such as silero-vad's `state` [2, batch, 128] counts
    its examples on axis 1.
    """
    import numpy as np

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
    import numpy as np

    lengths = [np.shape(array)[axes.get(name, 0)] for name, array in inputs.items()
               if np.ndim(array) > 0 and axes.get(name, 0) is not None]
    return min(lengths) if lengths else (1 if inputs else 0)


def slice_examples(inputs: dict, axes: dict[str, int | None], start: int, stop: int) -> dict:
    """Examples start..stop of every array along its example axis; scalars are passed whole."""
    import numpy as np

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
    import numpy as np

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
    import numpy as np

    if axis is None or short <= 0:
        return array
    last = np.take(array, [-1], axis=axis)
    return np.concatenate([array, np.repeat(last, short, axis=axis)], axis=axis)


def run_in_batches(run, inputs: dict, specs=(), output_specs=(), batch_size: int = 256) -> list:
    """Run `inputs` through `run` (feeds -> outputs) in batches; the outputs, concatenated.

    Each input is cut along its example axis (`batch_axis`); 0-d inputs (e.g. a sample
    rate) go whole with every batch. Outputs are joined along their own example axis
    (`output_axis`). A model with a fixed batch size gets batches of exactly that size: the
    last one is padded by repeating its final example, and the padding's outputs are dropped.
    """
    import numpy as np

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


class TfliteModel:
    def __init__(self, path: str, threads: int | None, numpy, all_tensors: bool = False):
        cls, package, version = tflite_interpreter_class()
        self.np = numpy
        options = {"experimental_preserve_all_tensors": True} if all_tensors else {}
        with StderrCapture() as log, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # LiteRT warns that preserving every tensor costs memory
            try:
                self.interpreter = cls(model_path=path, num_threads=threads or None, **options)
            except TypeError:
                raise RunnerError("unsupported", f"{package} {version} cannot keep intermediate tensors "
                                                 "(experimental_preserve_all_tensors)") from None
            self.interpreter.allocate_tensors()
        self.runtime = {"name": package, "version": version}
        self.delegate = _tflite_delegate(log.text, self.interpreter)
        self.threads = threads or "runtime default"
        self.details = self.interpreter.get_input_details()
        self.outputs = self.interpreter.get_output_details()
        self.inputs = [Spec(_tflite_name(d), [int(x) for x in d["shape"]], numpy.dtype(d["dtype"]).name)
                       for d in self.details]
        self.output_specs = [Spec(_tflite_name(d), [int(x) if x >= 0 else None for x in d.get("shape_signature", d["shape"])],
                                  numpy.dtype(d["dtype"]).name) for d in self.outputs]
        self.shapes = {d["index"]: tuple(d["shape"]) for d in self.details}

    def prepare(self, feeds: dict):
        """Resize and convert once, so the timed loop holds only set_tensor, invoke, get_tensor."""
        np = self.np
        arrays = [_tflite_feed(feeds, d) for d in self.details]
        self._resize(arrays)
        prepared = []
        for detail, array in zip(self.details, arrays, strict=True):
            scale, zero = detail.get("quantization", (0.0, 0))
            target = np.dtype(detail["dtype"])
            if scale and target.kind in "iu":
                info = np.iinfo(target)
                array = np.clip(np.round(array / scale + zero), info.min, info.max)
            prepared.append((detail["index"], np.ascontiguousarray(array.astype(target, copy=False))))
        return prepared, [d["index"] for d in self.outputs]

    def run_prepared(self, prepared) -> list:
        inputs, outputs = prepared
        interpreter = self.interpreter
        for index, array in inputs:
            interpreter.set_tensor(index, array)
        interpreter.invoke()
        return [interpreter.get_tensor(index) for index in outputs]

    def _resize(self, arrays) -> None:
        resized = False
        for detail, array in zip(self.details, arrays, strict=True):
            if tuple(array.shape) != self.shapes[detail["index"]]:
                self.interpreter.resize_tensor_input(detail["index"], list(array.shape))
                self.shapes[detail["index"]] = tuple(array.shape)
                resized = True
        if resized:
            self.interpreter.allocate_tensors()

    def run(self, feeds: dict) -> list:
        results = []
        for detail, value in zip(self.outputs, self.run_prepared(self.prepare(feeds)), strict=True):
            results.append(self.dequantize(value, detail.get("quantization", (0.0, 0))))
        return results

    def dequantize(self, value, quantization):
        scale, zero = quantization or (0.0, 0)
        if scale and value.dtype.kind in "iu":
            return (value.astype(self.np.float32) - zero) * scale
        return value

    def intermediate_tensors(self) -> list:
        """Every op's output in execution-plan order: (node, op, tensor name, tensor index).

        Needs the interpreter opened with all_tensors: with experimental_preserve_all_tensors,
        LiteRT gives each delegated op a partition of its own so that every op output is
        written to memory (the XNNPACK kernels still compute it; only cross-op fusion is lost)."""
        if getattr(self, "_intermediates", None) is not None:
            return self._intermediates
        found = []
        for op in self.interpreter._get_ops_details():  # private, present in ai-edge-litert and tflite_runtime
            if op["op_name"] == "DELEGATE":
                continue
            for tensor in op["outputs"]:
                if tensor < 0:
                    continue
                name = self.interpreter._get_tensor_details(int(tensor), 0)["name"]
                found.append((f"{op['op_name']}#{op['index']}", op["op_name"], name, int(tensor)))
        self._intermediates = found
        return found

    def run_all(self, feeds: dict) -> list:
        """The model's outputs, then every intermediate tensor (dequantized), for one batch."""
        outputs = self.run(feeds)
        get = self.interpreter.get_tensor
        details = self.interpreter._get_tensor_details
        return outputs + [self.dequantize(get(index), details(index, 0).get("quantization"))
                          for _, _, _, index in self.intermediate_tensors()]


def _tflite_name(detail) -> str:
    name = detail["name"]
    if name.startswith("serving_default_"):
        name = name[len("serving_default_"):]
    return name.split(":")[0]


def _tflite_feed(feeds: dict, detail):
    name = _tflite_name(detail)
    if name in feeds:
        return feeds[name]
    if len(feeds) == 1:
        return next(iter(feeds.values()))
    raise RunnerError("bad_input", f"no data for the TFLite input {name!r} (have {sorted(feeds)})", EXIT_BAD_INPUT)


def _tflite_delegate(log_text: str, interpreter) -> str:
    """The delegate the interpreter really applied, from its log and its execution plan."""
    applied = []
    for line in log_text.splitlines():
        if "Created TensorFlow Lite" in line and "delegate" in line:
            applied.append(line.split("Created TensorFlow Lite", 1)[1].split("delegate")[0].strip())
    try:
        delegated = any(op["op_name"] == "DELEGATE" for op in interpreter._get_ops_details())
    except Exception:  # private API: absent in some runtimes
        delegated = bool(applied)
    if applied and delegated:
        return f"{applied[0]} delegate"
    if applied:
        return f"{applied[0]} delegate created but no node delegated: CPU reference kernels"
    return "CPU builtin kernels (no delegate)"


# ------------------------------------------------------------------ where each op ran

ORT_PLACEMENT_RUNS = 3  # profiled inferences (a separate session: the timed loop is never profiled)


def tflite_placement(interpreter) -> dict | None:
    """Which nodes a delegate took and which ran on the builtin kernels.

    The interpreter's node list keeps every original node and appends one DELEGATE node per
    delegated partition; a node belongs to a partition when its output is computed inside it
    (reached backwards from the partition's outputs without crossing its inputs).
    """
    try:
        ops = interpreter._get_ops_details()  # private but present in ai-edge-litert and tflite_runtime
    except Exception:
        return None
    delegates = [op for op in ops if op["op_name"] == "DELEGATE"]
    nodes = [op for op in ops if op["op_name"] != "DELEGATE"]
    delegated = tflite_delegated_by(ops)
    fallback = [f"{op['op_name']}#{op['index']}" for op in nodes if op["index"] not in delegated]
    share = 100.0 * len(fallback) / len(nodes) if nodes else 0.0
    return {"runtime": "tflite", "accelerator": "XNNPACK delegate" if delegates else None,
            "nodes": len(nodes), "delegated_nodes": len(delegated), "partitions": len(delegates),
            "fallback_nodes": fallback, "fallback_ops": sorted({op["op_name"] for op in nodes
                                                                if op["index"] not in delegated}),
            "fallback_pct": round(share, 3), "basis": "nodes (this runtime's Python API gives no per-op time)"}


def tflite_delegated_by(ops: list) -> dict:
    """Each delegated node's index -> the index of the DELEGATE node whose partition computes it.

    `ops`: the interpreter's `_get_ops_details()`. A node belongs to a partition when its output
    is reached backwards from the partition's outputs without crossing the partition's inputs."""
    nodes = [op for op in ops if op["op_name"] != "DELEGATE"]
    producer = {int(t): op["index"] for op in nodes for t in op["outputs"]}
    by_index = {op["index"]: op for op in nodes}
    delegated: dict = {}
    for partition in (op for op in ops if op["op_name"] == "DELEGATE"):
        boundary = {int(t) for t in partition["inputs"]}
        pending = [int(t) for t in partition["outputs"]]
        while pending:
            tensor = pending.pop()
            index = producer.get(tensor)
            if tensor in boundary or index is None or index in delegated:
                continue
            delegated[index] = partition["index"]
            pending += [int(t) for t in by_index[index]["inputs"] if t >= 0]
    return delegated


def onnx_placement(path: str, threads: int | None, feeds: dict, providers: list) -> dict | None:
    """The execution provider of every node and the time each took, from onnxruntime's profiler."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(tempfile.mkdtemp(prefix="edgeward-profile-"), "ort")
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(path, options, providers=providers)
    for _ in range(ORT_PLACEMENT_RUNS):
        session.run(None, feeds)
    trace_path = session.end_profiling()
    try:
        with open(trace_path) as handle:
            events = json.load(handle)
    finally:
        import shutil

        shutil.rmtree(os.path.dirname(trace_path), ignore_errors=True)
    accelerator = session.get_providers()[0]
    per_node: dict = {}
    for event in events:
        args = event.get("args") or {}
        if event.get("cat") != "Node" or not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        name = event["name"][: -len("_kernel_time")]
        node = per_node.setdefault(name, {"node": name, "op": args.get("op_name"),
                                          "provider": args.get("provider"), "us": 0})
        node["us"] += int(event.get("dur") or 0)
    total = sum(node["us"] for node in per_node.values())
    fallback = [node for node in per_node.values() if node["provider"] != accelerator]
    outside = sum(node["us"] for node in fallback)
    by_provider: dict = {}
    for node in per_node.values():
        by_provider[node["provider"]] = by_provider.get(node["provider"], 0) + node["us"]
    return {"runtime": "onnxruntime", "accelerator": accelerator, "nodes": len(per_node),
            "delegated_nodes": len(per_node) - len(fallback), "providers": sorted(by_provider),
            "time_us_by_provider": {k: round(v / ORT_PLACEMENT_RUNS, 1) for k, v in by_provider.items()},
            "fallback_nodes": [f"{node['op']}:{node['node']}" for node in fallback],
            "fallback_ops": sorted({node["op"] for node in fallback}),
            "fallback_pct": round(100.0 * outside / total, 3) if total else 0.0,
            "basis": f"time (onnxruntime profiler, {ORT_PLACEMENT_RUNS} runs)"}


def op_placement(model, feeds) -> dict | None:
    """Where each op ran; None (never a guess) when the runtime does not say."""
    try:
        if model.format == "tflite":
            return tflite_placement(model.interpreter)
        return onnx_placement(model.path, model.requested_threads, feeds, model.session.get_providers())
    except Exception as error:  # placement is a report, never a reason to lose the timings
        return {"error": f"{type(error).__name__}: {first_line(error)}"}


# ------------------------------------------------------------------ the machine's state while timing


def cpu_state() -> dict:
    """Governor, frequencies and temperature where the device exposes them (else None)."""
    base = "/sys/devices/system/cpu/cpu0/cpufreq/"
    cur, top = _read(base + "scaling_cur_freq"), _read(base + "cpuinfo_max_freq") or _read(base + "scaling_max_freq")
    state = {"governor": _read(base + "scaling_governor"),
             "freq_mhz": int(cur) // 1000 if cur and cur.isdigit() else None,
             "max_freq_mhz": int(top) // 1000 if top and top.isdigit() else None,
             "temperature_c": _temperature()}
    throttle = _read("/sys/devices/system/cpu/cpu0/thermal_throttle/core_throttle_count")
    state["throttle_count"] = int(throttle) if throttle and throttle.isdigit() else None
    return state


def throttling(before: dict, after: dict) -> bool | None:
    """Whether the CPU was held below its top clock by heat during the runs (None: cannot tell)."""
    counts = (before.get("throttle_count"), after.get("throttle_count"))
    if None not in counts and counts[1] > counts[0]:
        return True
    if after.get("governor") == "performance" and after.get("freq_mhz") and after.get("max_freq_mhz"):
        return after["freq_mhz"] < 0.85 * after["max_freq_mhz"]
    if None not in counts:
        return False
    return None


def open_model(path: str, threads: int | None, all_tensors: bool = False, page_out: bool = False):
    """The model in its runtime; `page_out`: the model folder's mappings paged out as an ONNX model
    loads and after (a language model's int4 weights file, see page_out_mappings)."""
    model_format = "tflite" if path.lower().endswith(".tflite") else "onnx"
    if all_tensors and model_format != "tflite":
        raise RunnerError("bad_input", "--all-tensors is for .tflite models (expose an ONNX model's node "
                                       "outputs as graph outputs instead)", EXIT_BAD_INPUT)
    numpy = import_numpy(model_format)
    baseline_mb = proc_status_mb("VmRSS")  # Python and numpy, before the runtime is imported
    start = time.perf_counter()
    try:
        if model_format == "onnx":
            with paged_out_while_loading(os.path.dirname(os.path.abspath(path)) if page_out else None):
                model = OnnxModel(path, threads)
        else:
            model = TfliteModel(path, threads, numpy, all_tensors)
    except RunnerError:
        raise
    except Exception as error:
        raise RunnerError("load_failed", f"cannot load {os.path.basename(path)}: {first_line(error)}") from None
    model.load_ms = (time.perf_counter() - start) * 1000
    model.format = model_format
    model.path, model.requested_threads = path, threads
    model.rss_before_load_mb = baseline_mb
    return model, numpy


def first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return (lines[0] if lines else type(error).__name__)[:300]


# ------------------------------------------------------------------ inputs


def load_inputs(path: str | None, model, numpy) -> dict:
    """Inputs from an .npz, or seeded random data shaped like the model's inputs (batch 1)."""
    if path:
        with numpy.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files if name != "labels"}
    rng = numpy.random.default_rng(0)
    feeds = {}
    for name, shape, dtype in model.inputs:
        dims = [d if isinstance(d, int) and d > 0 else 1 for d in shape]
        if numpy.dtype(dtype).kind == "f":
            feeds[name] = numpy.asarray(rng.standard_normal(dims)).astype(dtype)
        elif dtype == "bool":
            feeds[name] = numpy.asarray(rng.integers(0, 2, dims)).astype(bool)
        else:
            feeds[name] = numpy.asarray(rng.integers(0, 10, dims)).astype(dtype)
    return feeds


def first_batch(feeds: dict, model) -> tuple:
    """The first batch (the model's fixed batch size, else 1 example) and its example count."""
    axes = batch_axes(feeds, model.inputs)
    size = fixed_batch(model.inputs, feeds) or 1
    batch = slice_examples(feeds, axes, 0, size)
    return batch, example_total(batch, axes)


# ------------------------------------------------------------------ commands


def proc_status_mb(key: str) -> float | None:
    """A figure from /proc/self/status in MB (VmHWM, VmRSS); None where there is no /proc."""
    for line in (_read("/proc/self/status") or "").splitlines():
        if line.startswith(key + ":"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return round(int(parts[1]) / 1024, 2)
    return None


def peak_rss() -> tuple[float | None, str | None]:
    """This process's own peak resident memory (MB) and where it was read.

    VmHWM belongs to this process image alone. ru_maxrss is the fallback where there is no
    /proc (macOS): on Linux it also carries the peak of whatever exec'd the runner (a 400 MB
    parent makes a 20 MB runner report 400 MB), so it is used only where VmHWM is missing.
    """
    high_water = proc_status_mb("VmHWM")
    if high_water is not None:
        return high_water, "VmHWM"
    try:
        import resource
    except ImportError:
        return None, None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 2), "ru_maxrss"


def memory_figures(model) -> dict:
    """Peak memory, and the resident memory before the runtime and model were loaded (Python and
    numpy alone), so the model's own share is the difference. Call before any second session."""
    peak, source = peak_rss()
    baseline = getattr(model, "rss_before_load_mb", None)
    over = round(peak - baseline, 2) if peak is not None and baseline is not None else None
    return {"peak_rss_mb": peak, "peak_rss_source": source, "rss_before_load_mb": baseline,
            "peak_over_baseline_mb": over}


def percentile(sorted_values: list, q: float) -> float:
    if not sorted_values:
        return float("nan")
    position = (len(sorted_values) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def summarize(times_ms: list) -> dict:
    """Latency statistics and the drift flag (last third >10% slower than the first third)."""
    ordered = sorted(times_ms)
    count = len(times_ms)
    mean = sum(times_ms) / count if count else float("nan")
    std = (sum((t - mean) ** 2 for t in times_ms) / count) ** 0.5 if count else float("nan")
    third = count // 3
    drift_ratio = None
    if third >= 2:
        first = sorted(times_ms[:third])
        last = sorted(times_ms[-third:])
        drift_ratio = percentile(last, 50) / percentile(first, 50)
    stats = {f"p{q}": percentile(ordered, q) for q in (50, 90, 95, 99)}
    stats.update(mean=mean, std=std, min=ordered[0] if ordered else None, max=ordered[-1] if ordered else None)
    return {
        "latency_ms": {key: round(value, 6) if value is not None else None for key, value in stats.items()},
        "drift": bool(drift_ratio is not None and drift_ratio > 1.10),
        "drift_ratio": round(drift_ratio, 4) if drift_ratio is not None else None,
    }


def command_bench(args) -> None:
    model, numpy = open_model(args.model, args.threads)
    feeds, batch = first_batch(load_inputs(args.inputs, model, numpy), model)
    say("loaded", runtime=model.runtime, delegate=model.delegate, threads=model.threads,
        load_ms=round(model.load_ms, 3), batch=batch)
    prepared = model.prepare(feeds)
    start = time.perf_counter()
    model.run_prepared(prepared)
    first_ms = (time.perf_counter() - start) * 1000
    for _ in range(args.warmup):
        model.run_prepared(prepared)
    state_before = cpu_state()
    times = time_runs(model, prepared, args.runs, lambda batch_ms: say("timings", ms=batch_ms))
    state_after = cpu_state()
    memory = memory_figures(model)  # before the placement pass, which opens a second session
    say("result", mode="bench", model_format=model.format, runtime=model.runtime, delegate=model.delegate,
        threads=model.threads, batch=batch, load_ms=round(model.load_ms, 3), first_inference_ms=round(first_ms, 4),
        warmup=args.warmup, runs=len(times), **memory, python=platform.python_version(),
        machine=platform.machine(), input_shapes={name: list(numpy.shape(array)) for name, array in feeds.items()},
        cpu={**state_after, "temperature_c_before": state_before["temperature_c"],
             "throttling": throttling(state_before, state_after)},
        placement=op_placement(model, feeds), **summarize(times))


def time_runs(model, prepared, runs: int, report=None) -> list:
    """The timed loop: one perf_counter pair around each inference, nothing else inside.
    Timings are handed to `report` about every 0.25 s so a lost connection keeps them."""
    run, clock = model.run_prepared, time.perf_counter
    times, pending, last_flush = [], [], time.monotonic()
    for _ in range(runs):
        start = clock()
        run(prepared)
        elapsed = (clock() - start) * 1000
        times.append(elapsed)
        if report is not None:
            pending.append(round(elapsed, 5))
            if time.monotonic() - last_flush > 0.25:
                report(pending)
                pending, last_flush = [], time.monotonic()
    if pending and report is not None:
        report(pending)
    return times


def command_predict(args) -> None:
    """Run every example through the model (in the model's fixed batch if it has one).

    With --all-tensors (TFLite), every op's output follows the model's outputs in the .npz and
    the result line names them (`tensors`), for per-layer drift."""
    model, numpy = open_model(args.model, args.threads, args.all_tensors)
    feeds = load_inputs(args.inputs, model, numpy)
    count = example_total(feeds, batch_axes(feeds, model.inputs))  # 0-d inputs go whole with every batch
    say("loaded", runtime=model.runtime, delegate=model.delegate, threads=model.threads,
        load_ms=round(model.load_ms, 3), batch=fixed_batch(model.inputs, feeds) or PREDICT_BATCH)
    times = []

    def timed_run(batch: dict) -> list:
        start = time.perf_counter()
        result = model.run_all(batch) if args.all_tensors else model.run(batch)
        times.append((time.perf_counter() - start) * 1000)
        return result

    results = run_in_batches(timed_run, feeds, model.inputs, model.output_specs, PREDICT_BATCH)
    outputs = {f"output_{i}": value for i, value in enumerate(results)}
    temporary = args.outputs + ".tmp.npz"
    numpy.savez(temporary, **outputs)
    os.replace(temporary, args.outputs)
    extra = {}
    if args.all_tensors:
        extra["tensors"] = [{"node": node, "op_type": op, "tensor": name}
                            for node, op, name, _ in model.intermediate_tensors()]
    say("result", mode="predict", model_format=model.format, runtime=model.runtime, delegate=model.delegate,
        threads=model.threads, examples=count, outputs=len(outputs), load_ms=round(model.load_ms, 3),
        **memory_figures(model), total_ms=round(sum(times), 3), machine=platform.machine(), **extra)


# ------------------------------------------------------------------ language models
# A with-past decoder, the same KV-cache logic as toolkit/lm/decoder.py (this file cannot import it):
# inputs input_ids, attention_mask, position_ids where present, past_key_values.N.key/value;
# outputs logits and present.N.key/value, which become the next step's past.

LM_PAST_PREFIX = "past_key_values."
LM_PRESENT_PREFIX = "present."
LM_LOGITS_TO_KEEP = "logits_to_keep"


class LmDecoder:
    """One sequence (batch 1) through a with-past decoder; `past_length` tokens are cached."""

    def __init__(self, session, numpy, head_dim: int | None = None):
        self.session, self.np, self.head_dim = session, numpy, head_dim
        self.input_names = [item.name for item in session.get_inputs()]
        self.past_specs = {item.name: item for item in session.get_inputs() if item.name.startswith(LM_PAST_PREFIX)}
        if "input_ids" not in self.input_names or not self.past_specs:
            raise RunnerError("unsupported", "the ONNX model is not a decoder with a KV cache "
                                             "(no input_ids or past_key_values.* inputs)")
        self.output_names = [item.name for item in session.get_outputs()]
        self.types = {"tensor(float)": numpy.float32, "tensor(float16)": numpy.float16,
                      "tensor(bfloat16)": numpy.float32}
        # A quantized LM's optional input (toolkit/lm/onnx_last_logits.py): [1] computes the last position's
        # logits only, where the loop reads no other; onnxruntime lists it as an overridable initializer.
        overridable = [item.name for item in session.get_overridable_initializers()]
        self.keep = {LM_LOGITS_TO_KEEP: numpy.ones(1, numpy.int64)} if LM_LOGITS_TO_KEEP in overridable else {}
        self.reset()

    def reset(self) -> None:
        self.past = {name: self.empty(spec) for name, spec in self.past_specs.items()}
        self.past_length = 0

    def empty(self, spec):
        shape = [1 if i == 0 else (dim if isinstance(dim, int) else 0) for i, dim in enumerate(spec.shape)]
        if len(shape) == 4 and shape[3] == 0 and self.head_dim:
            shape[3] = self.head_dim  # a cache whose last axis is symbolic (onnxruntime-genai's graphs)
        if len(shape) != 4:
            raise RunnerError("unsupported", f"unexpected KV cache input {spec.name} of shape {spec.shape}")
        return self.np.zeros(shape, dtype=self.types.get(spec.type, self.np.float32))

    def forward(self, token_ids):
        """Feed new tokens after the cached ones; returns the logits of the last one (vocab,)."""
        np = self.np
        ids = np.asarray(token_ids, dtype=np.int64).reshape(1, -1)
        total = self.past_length + ids.shape[1]
        feeds = {"input_ids": ids, **self.past, **self.keep}
        if "attention_mask" in self.input_names:
            feeds["attention_mask"] = np.ones((1, total), dtype=np.int64)
        if "position_ids" in self.input_names:
            feeds["position_ids"] = np.arange(self.past_length, total, dtype=np.int64).reshape(1, -1)
        outputs = dict(zip(self.output_names, self.session.run(None, feeds), strict=True))
        for name in self.past:
            self.past[name] = outputs[LM_PRESENT_PREFIX + name[len(LM_PAST_PREFIX):]]
        self.past_length = total
        return outputs["logits"][0, -1]


# A LiteRT language model, the same loop as toolkit/lm/litert_decoder.py (this file cannot import it): signatures
# prefill_N (N tokens, padded) and decode (one token) take tokens, input_pos and the whole KV cache
# (kv_cache_k_i / kv_cache_v_i, one slot per position) and return logits and the updated cache.

LITERT_DECODE = "decode"
LITERT_PREFILL_PREFIX = "prefill_"
LITERT_CACHE_PREFIX = "kv_cache_"


class LiteRtLmDecoder:
    """One sequence through a LiteRT model's prefill and decode signatures; `past_length` tokens cached."""

    def __init__(self, interpreter, numpy):
        self.np = numpy
        signatures = interpreter.get_signature_list()
        self.prefill_lengths = sorted(int(name[len(LITERT_PREFILL_PREFIX):]) for name in signatures
                                      if name.startswith(LITERT_PREFILL_PREFIX)
                                      and name[len(LITERT_PREFILL_PREFIX):].isdigit())
        if LITERT_DECODE not in signatures or not self.prefill_lengths:
            raise RunnerError("unsupported", "the TFLite model has no prefill_N and decode signatures: not a "
                                             "language model with a KV cache")
        self.decode_runner = interpreter.get_signature_runner(LITERT_DECODE)
        self.prefill_runners = {n: interpreter.get_signature_runner(f"{LITERT_PREFILL_PREFIX}{n}")
                                for n in self.prefill_lengths}
        details = self.decode_runner.get_input_details()
        self.cache_specs = {name: (tuple(int(x) for x in item["shape"]), item["dtype"])
                            for name, item in details.items() if name.startswith(LITERT_CACHE_PREFIX)}
        if not self.cache_specs or "tokens" not in details or "input_pos" not in details:
            raise RunnerError("unsupported", "the TFLite model's decode signature takes no tokens, input_pos "
                                             "and kv_cache_* inputs")
        self.token_dtype = details["tokens"]["dtype"]
        self.position_dtype = details["input_pos"]["dtype"]
        self.context = next(iter(self.cache_specs.values()))[0][1]  # (batch, positions, kv heads, head size)
        self.reset()

    @property
    def past(self) -> dict:
        return self.cache

    def reset(self) -> None:
        self.cache = {name: self.np.zeros(shape, dtype) for name, (shape, dtype) in self.cache_specs.items()}
        self.past_length = 0

    def run(self, runner, ids, start: int):
        np = self.np
        outputs = runner(tokens=ids.reshape(1, -1).astype(self.token_dtype),
                         input_pos=np.arange(start, start + ids.size, dtype=self.position_dtype), **self.cache)
        self.cache = {name: outputs[name] for name in self.cache_specs}
        return outputs["logits"][0]

    def forward(self, token_ids):
        """Feed new tokens after the cached ones; returns the logits of the last one (vocab,). Whole prefill
        windows where one fits before the cache's end (the shortest that holds the rest, else the longest),
        then single decode steps."""
        np = self.np
        ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
        total = self.past_length + ids.size
        if total > self.context:
            raise RunnerError("bad_input", f"{total} tokens do not fit the model's KV cache of {self.context} "
                                           "positions", EXIT_BAD_INPUT)
        logits, done = None, 0
        while done < ids.size:
            left, position = ids.size - done, self.past_length + done
            fitting = [n for n in self.prefill_lengths if position + n <= self.context]
            if left == 1 or not fitting:
                logits = self.run(self.decode_runner, ids[done:done + 1], position)[-1]
                done += 1
                continue
            length = next((n for n in fitting if n >= left), fitting[-1])
            count = min(left, length)
            window = np.zeros(length, dtype=np.int64)
            window[:count] = ids[done:done + count]
            logits = self.run(self.prefill_runners[length], window, position)[count - 1]
            done += count
        self.past_length = total
        return logits


def page_out_mappings(folder: str, random_access: bool = True) -> None:
    """madvise(MADV_PAGEOUT), then MADV_RANDOM, this process's mappings of the model folder's files, as
    the host's toolkit/lm/mapped_pages.py does: onnxruntime keeps MatMulNBits' scales mapped after
    prepacking them, and reads the int4 embedding table a row at a time, where readahead would bring in
    128 KiB a row. Reclaiming never loses data; Linux 5.4+ only, else nothing happens."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        with open("/proc/self/maps") as handle:
            maps = handle.read()
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    prefix = os.path.realpath(folder) + "/"
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith(prefix):
            start, end = (int(value, 16) for value in fields[0].split("-"))
            libc.madvise(start, end - start, 21)  # MADV_PAGEOUT
            if random_access:
                libc.madvise(start, end - start, 1)  # MADV_RANDOM


@contextlib.contextmanager
def paged_out_while_loading(folder: str | None, interval_s: float = 0.002):
    """`folder`'s mappings paged out every `interval_s` while onnxruntime loads (it releases the GIL),
    then once more with MADV_RANDOM: prepacked int4 blocks otherwise stay resident to the end of
    loading, beside their copies (the host's toolkit/lm/mapped_pages.py, measured there)."""
    if folder is None or not sys.platform.startswith("linux"):
        yield
        return
    import threading

    done = threading.Event()

    def keep_paging_out():
        while not done.wait(interval_s):
            page_out_mappings(folder, random_access=False)

    pager = threading.Thread(target=keep_paging_out, daemon=True)
    pager.start()
    try:
        yield
    finally:
        done.set()
        pager.join()
        page_out_mappings(folder)


def command_lm(args) -> None:
    """Time to first token and decode tokens/s of a with-past decoder: the measurement of
    toolkit/lm/bench.py `measure` (seeded random prompt, greedy, no end-of-sequence stop)."""
    if args.prompt_tokens < 1 or args.new_tokens < 1:
        raise RunnerError("bad_input", "--prompt-tokens and --new-tokens must be at least 1", EXIT_BAD_INPUT)
    if args.context and args.prompt_tokens + args.new_tokens > args.context:
        raise RunnerError("bad_input", f"{args.prompt_tokens} prompt + {args.new_tokens} new tokens do not fit "
                                       f"the model's context of {args.context} tokens", EXIT_BAD_INPUT)
    model, np = open_model(args.model, args.threads, page_out=True)
    decoder = (LiteRtLmDecoder(model.interpreter, np) if model.format == "tflite"
               else LmDecoder(model.session, np, args.head_dim))
    say("loaded", runtime=model.runtime, delegate=model.delegate, threads=model.threads,
        load_ms=round(model.load_ms, 3))
    prompt = np.random.default_rng(0).integers(0, args.vocab_size, size=args.prompt_tokens, dtype=np.int64)
    ttft, decode, tokens = [], [], []
    for run in range(args.warmup + args.runs):
        decoder.reset()
        tokens = []
        start = time.perf_counter()
        token = int(np.argmax(decoder.forward(prompt)))
        first = time.perf_counter()
        tokens.append(token)
        for _ in range(args.new_tokens - 1):
            token = int(np.argmax(decoder.forward([token])))
            tokens.append(token)
        end = time.perf_counter()
        if run >= args.warmup:
            ttft.append((first - start) * 1000)
            decode.append((args.new_tokens - 1) / (end - first) if args.new_tokens > 1 else None)
            say("timings", ms=[round(ttft[-1], 5)])
    rates = sorted(rate for rate in decode if rate is not None)
    rate = percentile(rates, 50) if rates else None
    memory = memory_figures(model)
    say("result", mode="lm", model_format=model.format, runtime=model.runtime, delegate=model.delegate,
        threads=args.threads, prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens, runs=args.runs,
        warmup=args.warmup, ttft_ms_p50=round(percentile(sorted(ttft), 50), 3), ttft_ms_min=round(min(ttft), 3),
        decode_tokens_per_s=round(rate, 2) if rate else None,
        decode_ms_per_token=round(1000 / rate, 3) if rate else None,
        kv_cache_bytes=int(sum(value.nbytes for value in decoder.past.values())), tokens=tokens, **memory,
        load_ms=round(model.load_ms, 3), python=platform.python_version(), machine=platform.machine())


SEQ2SEQ_KEYS = ("seq2seq_prompt", "seq2seq_suppress", "seq2seq_begin_suppress", "seq2seq_eos")


def command_seq2seq(args) -> None:
    """An encoder-decoder exported by toolkit/speech (encoder_model.onnx given as --model, the two decoders beside
    it): the encoder once, the first decoder step over the prompt, then one cached step per token, greedy, as
    toolkit/speech/transcribe.py decodes. --inputs: an .npz of the encoder's inputs plus SEQ2SEQ_KEYS."""
    encoder, np = open_model(args.model, args.threads)
    folder = os.path.dirname(os.path.abspath(args.model))
    decoder = open_model(os.path.join(folder, "decoder_model.onnx"), args.threads)[0].session
    with_past = open_model(os.path.join(folder, "decoder_with_past_model.onnx"), args.threads)[0].session
    with np.load(args.inputs, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    prompt, suppress, begin, eos = (arrays.pop(key).astype(np.int64) for key in SEQ2SEQ_KEYS)
    mask = arrays.get("attention_mask")
    past_names = [item.name for item in with_past.get_inputs() if item.name.startswith(LM_PAST_PREFIX)]

    def step(session, feeds):
        if mask is not None and any(item.name == "encoder_attention_mask" for item in session.get_inputs()):
            feeds["encoder_attention_mask"] = mask
        return dict(zip([item.name for item in session.get_outputs()], session.run(None, feeds), strict=True))

    def greedy():
        start = time.perf_counter()
        hidden = encoder.session.run(None, arrays)[0]
        encoded = time.perf_counter()
        outputs = step(decoder, {"input_ids": prompt.reshape(1, -1), "encoder_hidden_states": hidden})
        cache = {name: outputs[LM_PRESENT_PREFIX + name[len(LM_PAST_PREFIX):]] for name in past_names}
        logits, tokens = outputs["logits"][0, -1], []
        for index in range(args.new_tokens):
            logits = logits.astype(np.float32, copy=True)
            logits[suppress] = -np.inf
            if index == 0:
                logits[begin] = -np.inf
            token = int(np.argmax(logits))
            if token in eos.tolist():
                break
            tokens.append(token)
            if index < args.new_tokens - 1:
                outputs = step(with_past, {"input_ids": np.asarray([[token]], dtype=np.int64), **cache})
                cache.update({name: outputs[LM_PRESENT_PREFIX + name[len(LM_PAST_PREFIX):]] for name in past_names
                              if LM_PRESENT_PREFIX + name[len(LM_PAST_PREFIX):] in outputs})
                logits = outputs["logits"][0, -1]
        return tokens, (encoded - start) * 1000, (time.perf_counter() - start) * 1000

    say("loaded", runtime=encoder.runtime, delegate=encoder.delegate, threads=encoder.threads,
        load_ms=round(encoder.load_ms, 3))
    encoder_ms, total_ms, tokens = [], [], []
    for run in range(args.warmup + args.runs):
        tokens, encoded_ms, done_ms = greedy()
        if run >= args.warmup:
            encoder_ms.append(encoded_ms)
            total_ms.append(done_ms)
            say("timings", ms=[round(done_ms, 5)])
    say("result", mode="seq2seq", model_format="onnx", runtime=encoder.runtime, delegate=encoder.delegate,
        threads=args.threads, runs=args.runs, warmup=args.warmup, tokens=tokens,
        encoder_ms_p50=round(percentile(sorted(encoder_ms), 50), 3),
        processing_ms_p50=round(percentile(sorted(total_ms), 50), 3), processing_ms_min=round(min(total_ms), 3),
        **memory_figures(encoder), python=platform.python_version(), machine=platform.machine())


def command_probe(args) -> None:
    """What this device offers; read-only, so `edgeward devices check` is safe to run anywhere."""
    import importlib
    import shutil

    runtimes = {}
    for name in ("numpy", "onnxruntime", "ai_edge_litert", "tflite_runtime", "tensorflow"):
        try:
            module = importlib.import_module(name)
            runtimes[name] = getattr(module, "__version__", "unknown")
        except Exception:  # ImportError, or a broken install that fails on import
            runtimes[name] = None
    disk = shutil.disk_usage(args.workdir or tempfile.gettempdir())
    say("result", mode="probe", os=f"{platform.system()} {platform.release()}", machine=platform.machine(),
        cpu=_cpu_model(), cpu_count=os.cpu_count(), python=platform.python_version(), python_path=sys.executable,
        runtimes=runtimes, ram_available_mb=_meminfo("MemAvailable"), ram_total_mb=_meminfo("MemTotal"),
        disk_free_mb=round(disk.free / 2**20), governor=_read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        temperature_c=_temperature())


def _read(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return None


def _cpu_model() -> str:
    text = _read("/proc/cpuinfo") or ""
    for line in text.splitlines():
        key = line.split(":")[0].strip().lower()
        if key in ("model name", "hardware", "cpu model"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _meminfo(key: str) -> int | None:
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) // 1024
    return None


def _temperature() -> float | None:
    readings = []
    base = "/sys/class/thermal"
    for zone in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        value = _read(os.path.join(base, zone, "temp"))
        if value and value.lstrip("-").isdigit():
            readings.append(int(value) / 1000)
    return max(readings) if readings else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Edgeward device runner")
    parser.add_argument("command", choices=("bench", "predict", "probe", "lm", "seq2seq"))
    parser.add_argument("--model")
    parser.add_argument("--inputs")
    parser.add_argument("--outputs")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--workdir")
    parser.add_argument("--all-tensors", action="store_true", help="predict: also return every op's output (TFLite)")
    parser.add_argument("--prompt-tokens", type=int, default=32, help="lm: prompt length (time to first token)")
    parser.add_argument("--new-tokens", type=int, default=32, help="lm: tokens decoded per run; seq2seq: at most")
    parser.add_argument("--context", type=int, default=None, help="lm: the model's context length")
    parser.add_argument("--vocab-size", type=int, default=2, help="lm: token ids of the random prompt are below it")
    parser.add_argument("--head-dim", type=int, default=None, help="lm: head size for a symbolic cache axis")
    args = parser.parse_args(argv)
    try:
        if args.command != "probe" and not args.model:
            raise RunnerError("bad_input", "--model is required", EXIT_BAD_INPUT)
        {"bench": command_bench, "predict": command_predict, "probe": command_probe,
         "lm": command_lm, "seq2seq": command_seq2seq}[args.command](args)
    except RunnerError as error:
        say("error", kind=error.kind, message=str(error))
        return error.code
    except Exception as error:  # report, never a bare traceback the host cannot parse
        say("error", kind="failed", message=f"{type(error).__name__}: {first_line(error)}")
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
