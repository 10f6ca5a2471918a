"""Run ONNX and TFLite models on the host behind one small interface.

`open_model(path)` gives a runner with `.inputs`, `.outputs` (TensorSpecs) and
`.run(feeds) -> list[np.ndarray]`. PyTorch sources (builtin:, .pt2, HF folders) get a
runner with the same interface from `toolkit.sources`; `open_any` picks the right one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit.errors import BadInput, Unsupported, missing_library

Dim = int | str | None


@dataclass
class TensorSpec:
    name: str
    shape: list[Dim]
    dtype: str  # numpy dtype name, e.g. "float32", "int64"

    def is_static(self) -> bool:
        return all(isinstance(d, int) and d > 0 for d in self.shape)

    def as_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


_ONNX_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


class OnnxRunner:
    format = "onnx"

    def __init__(self, path: Path, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise missing_library("onnxruntime") from None
        from toolkit.safety import check_onnx_file

        check_onnx_file(path)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises several unrelated types
            raise BadInput(f"{path}: onnxruntime cannot load it: {_first_line(error)}") from None
        self.path = path
        self.inputs = [_onnx_spec(arg) for arg in self.session.get_inputs()]
        self.outputs = [_onnx_spec(arg) for arg in self.session.get_outputs()]
        self.provider = self.session.get_providers()[0]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return self.session.run(None, feeds)
        except Exception as error:
            raise BadInput(f"{self.path.name}: inference failed: {_first_line(error)}") from None


def _onnx_spec(arg) -> TensorSpec:
    shape = [d if isinstance(d, int) else (d if isinstance(d, str) else None) for d in arg.shape]
    return TensorSpec(arg.name, shape, _ONNX_TYPES.get(arg.type, arg.type))


class TfliteRunner:
    format = "tflite"

    def __init__(self, path: Path, threads: int | None = None):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise missing_library("ai-edge-litert") from None
        from toolkit.quantize.calibration import quiet_output
        from toolkit.safety import check_tflite_file

        check_tflite_file(path)
        try:
            with quiet_output():  # LiteRT logs "INFO: Created ... XNNPACK delegate" on fd 2 (shown with -v)
                self.interpreter = Interpreter(model_path=str(path), num_threads=threads or None)
                self.interpreter.allocate_tensors()
        except Exception as error:
            raise BadInput(f"{path}: the TFLite interpreter cannot load it: {_first_line(error)}") from None
        self.path = path
        details = self.interpreter.get_input_details()
        self._input_details = details
        self._output_details = self.interpreter.get_output_details()
        signature_names = _signature_names(self.interpreter)
        self.inputs = [_tflite_spec(d, signature_names) for d in details]
        self.outputs = [_tflite_spec(d, signature_names) for d in self._output_details]
        self.provider = "XNNPACK/CPU"
        self._allocated_shapes = {d["index"]: tuple(d["shape"]) for d in details}

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        interpreter = self.interpreter
        try:
            resized = False
            for detail, spec in zip(self._input_details, self.inputs, strict=True):
                array = _feed_for(feeds, spec.name)
                if tuple(array.shape) != self._allocated_shapes[detail["index"]]:
                    interpreter.resize_tensor_input(detail["index"], list(array.shape))
                    self._allocated_shapes[detail["index"]] = tuple(array.shape)
                    resized = True
            if resized:
                interpreter.allocate_tensors()
            for detail, spec in zip(self._input_details, self.inputs, strict=True):
                array = _quantize_input(_feed_for(feeds, spec.name), detail)
                interpreter.set_tensor(detail["index"], array)
            interpreter.invoke()
            return [_dequantize_output(interpreter.get_tensor(d["index"]), d) for d in self._output_details]
        except BadInput:
            raise
        except Exception as error:
            raise BadInput(f"{self.path.name}: inference failed: {_first_line(error)}") from None


def _signature_names(interpreter) -> dict[int, str]:
    """Tensor index -> the name the model's signature gives it (e.g. "args_0", "logits")."""
    names: dict[int, str] = {}
    try:
        signatures = interpreter._get_full_signature_list()
    except Exception:  # older runtimes: fall back to tensor names
        return names
    for signature in signatures.values():
        for kind in ("inputs", "outputs"):
            for name, index in signature.get(kind, {}).items():
                names.setdefault(index, name)
    return names


def _feed_for(feeds: dict[str, np.ndarray], name: str) -> np.ndarray:
    if name in feeds:
        return np.asarray(feeds[name])
    if len(feeds) == 1:
        return np.asarray(next(iter(feeds.values())))
    raise BadInput(f"no data for the TFLite input {name!r} (have {sorted(feeds)})")


def _tflite_name(detail) -> str:
    name = detail["name"]
    # litert-torch names inputs "serving_default_args_0:0"; keep the argument's name.
    if name.startswith("serving_default_"):
        name = name[len("serving_default_") :]
    return name.split(":")[0]


def _tflite_spec(detail, signature_names: dict[int, str] | None = None) -> TensorSpec:
    signature = list(detail.get("shape_signature", detail["shape"]))
    shape = [int(d) if d >= 0 else None for d in signature]
    dtype = np.dtype(detail["dtype"]).name
    scale, _ = detail.get("quantization", (0.0, 0))
    if scale:  # a quantized I/O tensor: the runner takes and gives float32
        dtype = "float32"
    name = (signature_names or {}).get(detail["index"]) or _tflite_name(detail)
    return TensorSpec(name, shape, dtype)


def _quantize_input(array: np.ndarray, detail) -> np.ndarray:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    target = np.dtype(detail["dtype"])
    if scale and target.kind in "iu":
        info = np.iinfo(target)
        return np.clip(np.round(array / scale + zero_point), info.min, info.max).astype(target)
    return array.astype(target, copy=False)


def _dequantize_output(array: np.ndarray, detail) -> np.ndarray:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if scale and array.dtype.kind in "iu":
        return (array.astype(np.float32) - zero_point) * scale
    return array


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:300]


def open_model(path: str | Path, threads: int | None = None):
    """A runner for an .onnx or .tflite file (or the artifact folder holding one)."""
    from toolkit.artifacts import resolve_model

    path = resolve_model(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return OnnxRunner(path, threads)
    if suffix == ".tflite":
        return TfliteRunner(path, threads)
    raise Unsupported(f"{path}: cannot run a {suffix or 'suffix-less'} file here (use .onnx or .tflite)")


def open_any(spec: str | Path, threads: int | None = None, **source_options):
    """A runner for any model spec: ONNX/TFLite files run as they are; PyTorch sources in torch."""
    text = str(spec)
    path = Path(text)
    if path.suffix.lower() in (".onnx", ".tflite") or (
        path.is_dir() and any((path / name).is_file() for name in ("model.onnx", "model.tflite"))
    ):
        return open_model(path, threads)
    from toolkit.sources import load_source

    return load_source(text, **source_options).runner()


def run_batched(runner, inputs: dict[str, np.ndarray], batch_size: int = 256) -> list[np.ndarray]:
    """Run a dataset through a runner in batches and concatenate the outputs.

    Each input is cut along its example axis, read from the runner's input specs
    (`toolkit.data.batch_axis`: axis 0 unless the model fixes it, as silero-vad's state
    [2, batch, 128] does); 0-d inputs (e.g. a sample rate) go whole with every batch.
    Outputs are joined along their own example axis (`toolkit.data.output_axis`).
    A model with a fixed batch size gets batches of exactly that size: the last one is
    padded by repeating its final example, and the padding's outputs are dropped.
    """
    from toolkit.data import batch_axes, example_total, output_axis, slice_examples
    from toolkit.quantize.calibration import fixed_batch

    specs = list(getattr(runner, "inputs", None) or [])
    axes = batch_axes(inputs, specs)
    fixed = fixed_batch(specs, inputs)
    size = fixed or max(1, batch_size)
    count = example_total(inputs, axes)
    by_name = {spec.name: spec for spec in specs}
    pairs = [(by_name.get(name), axis) for name, axis in axes.items()]
    out_specs = list(getattr(runner, "outputs", None) or [])
    chunks: list[list[np.ndarray]] = []
    out_axes: list[int | None] = []
    for start in range(0, max(count, 1), size):
        batch = slice_examples(inputs, axes, start, start + size)
        got = example_total(batch, axes)
        short = size - got if fixed else 0
        if short > 0:
            batch = {name: _pad(array, axes[name], short) for name, array in batch.items()}
        outputs = [np.asarray(output) for output in runner.run(batch)]
        if not out_axes:
            out_axes = [output_axis(output, got + short, out_specs[i] if i < len(out_specs) else None, pairs)
                        for i, output in enumerate(outputs)]
        if short > 0:
            outputs = [output if axis is None else np.take(output, np.arange(got), axis=axis)
                       for output, axis in zip(outputs, out_axes, strict=True)]
        chunks.append(outputs)
    if len(chunks) == 1:
        return chunks[0]
    return [chunks[0][i] if axis is None else np.concatenate([chunk[i] for chunk in chunks], axis=axis)
            for i, axis in enumerate(out_axes)]


def _pad(array: np.ndarray, axis: int | None, short: int) -> np.ndarray:
    if axis is None:
        return array
    last = np.take(array, [-1], axis=axis)
    return np.concatenate([array, np.repeat(last, short, axis=axis)], axis=axis)
