"""What a model's input or output looks like (`TensorSpec`), read from ONNX Runtime and LiteRT."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Dim = int | str | None

ONNX_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


@dataclass
class TensorSpec:
    name: str
    shape: list[Dim]  # an int per fixed dim; a name (str) or None where the size varies
    dtype: str  # numpy dtype name, e.g. "float32", "int64"

    def is_static(self) -> bool:
        return all(isinstance(d, int) and d > 0 for d in self.shape)

    def as_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


def onnx_spec(arg) -> TensorSpec:
    """The spec of an onnxruntime `NodeArg` (a session's input or output)."""
    shape = [d if isinstance(d, int | str) else None for d in arg.shape]
    return TensorSpec(arg.name, shape, ONNX_TYPES.get(arg.type, arg.type))


def tflite_name(detail) -> str:
    """A LiteRT tensor's name without the signature's prefix and the ":0" suffix."""
    name = detail["name"]
    # litert-torch names inputs "serving_default_args_0:0"; keep the argument's name.
    if name.startswith("serving_default_"):
        name = name[len("serving_default_") :]
    return name.split(":")[0]


def tflite_spec(detail, signature_names: dict[int, str] | None = None) -> TensorSpec:
    """The spec of a LiteRT tensor detail; a quantized I/O tensor is given and taken as float32."""
    signature = list(detail.get("shape_signature", detail["shape"]))
    shape = [int(d) if d >= 0 else None for d in signature]
    dtype = np.dtype(detail["dtype"]).name
    scale, _ = detail.get("quantization", (0.0, 0))
    if scale:
        dtype = "float32"
    name = (signature_names or {}).get(detail["index"]) or tflite_name(detail)
    return TensorSpec(name, shape, dtype)
