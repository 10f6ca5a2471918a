"""Run ONNX and TFLite models on the host behind one small interface.

`open_model(path)` gives a runner with `.inputs`, `.outputs` (TensorSpecs) and
`.run(feeds) -> list[np.ndarray]`. PyTorch sources (builtin:, .pt2, HF folders) get a
runner with the same interface from `toolkit.sources` (`toolkit.sources.open_any` picks the
right one for any spec).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from toolkit.common.batching import run_in_batches
from toolkit.common.tensors import TensorSpec, onnx_spec, tflite_spec
from toolkit.common.text import first_line
from toolkit.errors import BadInput, Unsupported, missing_library

__all__ = ["OnnxRunner", "TensorSpec", "TfliteRunner", "open_model", "run_batched"]


class OnnxRunner:
    format = "onnx"

    def __init__(self, path: Path, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise missing_library("onnxruntime") from None
        from toolkit.safety.onnx import check_onnx_file

        check_onnx_file(path)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises several unrelated types
            raise onnx_load_error(path, error) from None
        self.path = path
        self.inputs = [onnx_spec(arg) for arg in self.session.get_inputs()]
        self.outputs = [onnx_spec(arg) for arg in self.session.get_outputs()]
        self.provider = self.session.get_providers()[0]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return self.session.run(None, feeds)
        except Exception as error:
            raise BadInput(f"{self.path.name}: inference failed: {first_line(error)}") from None


class TfliteRunner:
    format = "tflite"

    def __init__(self, path: Path, threads: int | None = None):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise missing_library("ai-edge-litert") from None
        from toolkit.common.quiet import quiet
        from toolkit.safety.tflite import check_tflite_file

        check_tflite_file(path)
        try:
            with quiet():  # LiteRT logs "INFO: Created ... XNNPACK delegate" on fd 2 (shown with -v)
                self.interpreter = Interpreter(model_path=str(path), num_threads=threads or None)
                self.interpreter.allocate_tensors()
        except Exception as error:
            raise tflite_load_error(path, error) from None
        self.path = path
        details = self.interpreter.get_input_details()
        self._input_details = details
        self._output_details = self.interpreter.get_output_details()
        signature_names = _signature_names(self.interpreter)
        self.inputs = [tflite_spec(d, signature_names) for d in details]
        self.outputs = [tflite_spec(d, signature_names) for d in self._output_details]
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
            raise BadInput(f"{self.path.name}: inference failed: {first_line(error)}") from None


# what onnxruntime and LiteRT say about a valid model they cannot run (exit 3, not 2)
_ONNX_UNSUPPORTED = ("NOT_IMPLEMENTED", "is not a registered function/op", "Current official support for domain")
_TFLITE_UNSUPPORTED = ("unresolved custom op", "Didn't find op for builtin opcode", "Didn't find custom op")


def onnx_load_error(path: Path, error: Exception) -> BadInput | Unsupported:
    """Unsupported for a valid model onnxruntime cannot run (an op without a kernel, a custom op,
    an opset newer than the runtime); BadInput for a broken or invalid one."""
    text = str(error)
    if not any(marker in text for marker in _ONNX_UNSUPPORTED):
        return BadInput(f"{path}: onnxruntime cannot load it: {first_line(error)}")
    reason = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text.split(" failed:", 1)[-1].strip())
    if "Current official support for domain" in text:
        support = text.rsplit("Current official support", 1)[-1].strip().rstrip(".")
        reason = f"its opset is newer than it runs (official support {support})"
    return Unsupported(f"{path}: onnxruntime {_ort_version()} cannot run this model: {first_line(reason)}")


def tflite_load_error(path: Path, error: Exception) -> BadInput | Unsupported:
    """Unsupported for a valid model LiteRT cannot run (a custom op, an op version newer than the
    runtime); BadInput for a broken one."""
    if any(marker in str(error) for marker in _TFLITE_UNSUPPORTED):
        return Unsupported(f"{path}: the TFLite interpreter cannot run this model: {first_line(error)}")
    return BadInput(f"{path}: the TFLite interpreter cannot load it: {first_line(error)}")


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


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


def run_batched(runner, inputs: dict[str, np.ndarray], batch_size: int = 256) -> list[np.ndarray]:
    """Run a dataset through a runner in batches and concatenate the outputs
    (`toolkit.common.batching.run_in_batches`: example axes read from the runner's specs,
    a fixed batch size honoured by padding the last batch)."""
    return run_in_batches(runner.run, inputs, getattr(runner, "inputs", None), getattr(runner, "outputs", None),
                          batch_size)
