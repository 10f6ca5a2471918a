"""Export a source to TFLite with litert-torch (no TensorFlow).

Torch sources convert directly; HF models go through their wrapper (eager attention,
logits out); an ONNX source is first rebuilt as a torch module by
`toolkit.export.onnx_to_torch`, which covers plain CNN/MLP graphs and names the op and
node it cannot lower. Inputs are passed by name so the TFLite signature keeps the
source's input names. Shapes are static (the runner resizes the batch at run time).
"""

from __future__ import annotations

import re
from pathlib import Path

from toolkit.common.quiet import quiet
from toolkit.errors import BadInput, Unsupported

MODEL_FILE = "model.tflite"


def export_tflite(source, stage: Path) -> tuple[Path, dict]:
    target = stage / MODEL_FILE
    if source.kind == "tflite":
        from toolkit.artifacts import atomic_copy

        atomic_copy(source.path, target)
        return target, {"route": "tflite copy"}
    if source.kind == "onnx":
        from toolkit.export.onnx_to_torch import onnx_to_torch

        module, route = onnx_to_torch(source.path), "onnx -> torch (toolkit.export.onnx_to_torch) -> litert_torch"
    elif source.kind == "torchscript":
        module, route = _torchscript_via_onnx(source), "torchscript -> onnx -> torch -> litert_torch"
    else:
        module, route = source.module, "litert_torch.convert"
    convert(module, source, target)
    return target, {"route": route}


def _torchscript_via_onnx(source):
    """torch.export cannot trace a ScriptModule; its ONNX graph can be rebuilt as plain torch."""
    import tempfile

    from toolkit.export.onnx_to_torch import onnx_to_torch
    from toolkit.export.to_onnx import export_torch

    with tempfile.TemporaryDirectory(prefix="edgeward-ts-") as folder:
        path = Path(folder) / "model.onnx"
        export_torch(source, path, opset=18, dynamic_batch=False)
        return onnx_to_torch(path)


def convert(module, source, target: Path) -> None:
    import torch

    try:
        with quiet():  # importing litert-torch logs from C++ (absl, oneDNN, torchao)
            import litert_torch
    except ImportError:
        from toolkit.errors import missing_library

        raise missing_library("litert-torch") from None
    example = source.example_inputs()
    names = [spec.name for spec in source.inputs]
    safe = {name: _identifier(name) for name in names}
    if len(set(safe.values())) != len(names):
        raise Unsupported(f"input names {names} collide once made identifiers for TFLite")
    kwargs = {safe[name]: torch.from_numpy(example[name]) for name in names}
    outputs = [spec.name for spec in source.outputs] if source.outputs else source.meta.get("output_names")
    wrapper = _Named(module, [safe[name] for name in names], [_identifier(n) for n in outputs or []])
    try:
        with quiet():
            model = litert_torch.convert(wrapper.eval(), sample_kwargs=kwargs)
            model.export(str(target))
    except (BadInput, Unsupported):
        raise
    except Exception as error:
        raise Unsupported(f"litert_torch cannot convert the model: {_describe(error)}") from None


def _identifier(name: str) -> str:
    text = re.sub(r"\W", "_", name)
    return text if text and not text[0].isdigit() else f"input_{text}"


def _named_class():
    import torch

    class Named(torch.nn.Module):
        """Takes inputs by keyword, so litert-torch names the TFLite inputs after them."""

        def __init__(self, inner, names, output_names):
            super().__init__()
            self.inner = inner
            self.names = names
            self.output_names = output_names

        def train(self, mode: bool = True):
            """The inner module is already in eval mode; an ExportedProgram's module refuses train()."""
            return self

        def forward(self, **inputs):
            result = self.inner(*[inputs[name] for name in self.names])
            flat = list(result) if isinstance(result, list | tuple) else [result]
            if self.output_names and len(flat) == len(self.output_names):
                return dict(zip(self.output_names, flat, strict=True))  # names the TFLite outputs
            return result

    return Named


def _Named(inner, names, output_names):  # noqa: N802 - a torch class, built on first use
    return _named_class()(inner, names, output_names)


def _describe(error: BaseException) -> str:
    text = str(error)
    lines = [line for line in text.strip().splitlines() if line.strip()]
    first = (lines[0] if lines else type(error).__name__)[:300]
    op = re.search(r"(aten[.:]{1,2}[\w.]+|'tfl\.\w+'|'stablehlo\.\w+')", text)
    node = re.search(r"node[ _]?(?:name)?[ =:]+'?([\w.]+)", text)
    extra = [f"op {op.group(1)}" for _ in [0] if op and op.group(1) not in first]
    extra += [f"node {node.group(1)}" for _ in [0] if node and node.group(1) not in first]
    return f"{first} ({', '.join(extra)})" if extra else first
