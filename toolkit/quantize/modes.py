"""The quantization modes, as data: name, format, the function that does it, what it needs.

One table serves `edgeward quantize --list-modes`, the lazy import of the function that
runs a mode, and the error that lists the modes a format accepts. Nothing heavy is
imported here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from toolkit.errors import BadInput

FORMATS = ("onnx", "tflite")
CALIBRATION_METHODS = {"onnx": ("minmax", "entropy", "percentile"), "tflite": ("minmax",)}


@dataclass(frozen=True)
class QuantMode:
    name: str
    format: str
    function: str  # "module:function", imported when the mode runs
    needs_calibration: bool
    description: str
    library: str  # the pip package that does the work (for install hints and the manifest)

    def load(self):
        module_name, function_name = self.function.split(":")
        return getattr(importlib.import_module(module_name), function_name)


MODES: list[QuantMode] = [
    QuantMode(
        "dynamic-int8", "onnx", "toolkit.quantize.onnx_modes:dynamic_int8", False,
        "int8 weights; MatMul activations quantized at run time, Conv weight-only per channel; no data needed",
        "onnxruntime",
    ),
    QuantMode(
        "static-int8", "onnx", "toolkit.quantize.onnx_modes:static_int8", True,
        "int8 weights and activations, QDQ, per-channel; calibrated (minmax, entropy or percentile)",
        "onnxruntime",
    ),
    QuantMode(
        "fp16", "onnx", "toolkit.quantize.onnx_modes:fp16", False,
        "float16 weights and compute, float32 inputs and outputs kept; half the size",
        "onnxruntime",
    ),
    QuantMode(
        "int4-weight", "onnx", "toolkit.quantize.onnx_modes:int4_weight", False,
        "int4 block-wise weights of MatMul (MatMulNBits; Gemm rewritten to MatMul first), rest float",
        "onnxruntime",
    ),
    QuantMode(
        "dynamic-int8-int4emb", "onnx", "toolkit.quantize.onnx_modes:dynamic_int8_int4emb", False,
        "dynamic-int8 MatMuls, embedding tables int4 (standard ops), LayerNorm kept fast; no data needed",
        "onnxruntime",
    ),
    QuantMode(
        "dynamic-int8", "tflite", "toolkit.quantize.tflite_modes:dynamic_int8", False,
        "int8 channel-wise weights, activations quantized at run time (dynamic range)",
        "ai-edge-quantizer",
    ),
    QuantMode(
        "weight-int8", "tflite", "toolkit.quantize.tflite_modes:weight_int8", False,
        "int8 weights dequantized before a float op: float accuracy, a quarter of the size",
        "ai-edge-quantizer",
    ),
    QuantMode(
        "weight-int4", "tflite", "toolkit.quantize.tflite_modes:weight_int4", False,
        "int4 weights dequantized before a float op: smallest file, float compute",
        "ai-edge-quantizer",
    ),
    QuantMode(
        "static-int8", "tflite", "toolkit.quantize.tflite_modes:static_int8", True,
        "full integer: int8 weights, activations and I/O; calibrated (minmax)",
        "ai-edge-quantizer",
    ),
    QuantMode(
        "fp16", "tflite", "toolkit.quantize.tflite_modes:fp16", False,
        "float16 weights (cast back to float32 at load or run on fp16 hardware); half the size",
        "ai-edge-quantizer",
    ),
]

AUTO_DESCRIPTION = (
    "tries the modes in order of size and keeps the smallest within --max-drop of the original on --data "
    "(--objective latency: the fastest); a source (builtin, PyTorch, Hugging Face) is tried in both formats "
    "(--formats to limit)"
)


def modes_for(format: str) -> list[QuantMode]:
    return [mode for mode in MODES if mode.format == format]


def mode_names() -> list[str]:
    return sorted({mode.name for mode in MODES})


def get_mode(name: str, format: str) -> QuantMode:
    """The mode `name` for `format`, or BadInput naming the modes that do apply."""
    for mode in MODES:
        if mode.name == name and mode.format == format:
            return mode
    applicable = ", ".join(mode.name for mode in modes_for(format))
    if name in mode_names():
        raise BadInput(f"mode {name!r} does not apply to {format} models: use one of {applicable}")
    raise BadInput(f"unknown mode {name!r}: {format} models take {applicable} (or auto)")


def check_method(method: str, format: str) -> None:
    methods = CALIBRATION_METHODS.get(format, ())
    if method not in methods:
        raise BadInput(f"calibration method {method!r} does not apply to {format}: use {', '.join(methods)}")


def modes_table() -> list[dict]:
    """Rows for --list-modes (and its --json)."""
    rows = [
        {
            "format": mode.format,
            "mode": mode.name,
            "calibration": mode.needs_calibration,
            "description": mode.description,
        }
        for mode in MODES
    ]
    rows.append({"format": "onnx|tflite", "mode": "auto", "calibration": True, "description": AUTO_DESCRIPTION})
    return rows
