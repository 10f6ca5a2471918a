"""Export a source to ONNX: torch.onnx (dynamo) for torch modules, optimum for HF folders.

The file is written into the staging folder the caller gives, then checked with
`onnx.checker.check_model(full_check=True)`.
"""

from __future__ import annotations

from pathlib import Path

from toolkit.common.quiet import quiet
from toolkit.common.text import first_line
from toolkit.errors import BadInput, Unsupported

TWO_GB = 2 * 1024**3
MODEL_FILE = "model.onnx"


def export_onnx(source, stage: Path, *, opset: int = 18, dynamic_batch: bool = False) -> tuple[Path, dict]:
    """Write `stage/model.onnx` from `source`; returns the path and notes for the manifest."""
    target = stage / MODEL_FILE
    if source.kind == "tflite":
        raise Unsupported("TFLite -> ONNX is not supported: export the original model (PyTorch, HF) to ONNX instead")
    if source.kind == "onnx":
        notes = copy_onnx(source.path, target)
    elif source.kind == "hf":
        notes = export_hf(source, stage, opset=opset)
    else:
        notes = export_torch(source, target, opset=opset, dynamic_batch=dynamic_batch)
    check(target, copied=source.kind == "onnx")
    return target, notes


def check(path: Path, *, copied: bool = False) -> None:
    """onnx.checker on the result: a copied ONNX source that fails is a broken input (BadInput);
    a model the exporter wrote that fails is the exporter's limit (Unsupported)."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as error:
        if copied:
            raise BadInput(f"the ONNX file fails onnx.checker: {first_line(error)}") from None
        raise Unsupported(f"the exported ONNX model fails onnx.checker: {first_line(error)}") from None


def copy_onnx(path: Path, target: Path) -> dict:
    """Re-save an ONNX source as one file (its external data, already confined, folded in)."""
    import onnx

    from toolkit.safety.onnx import check_onnx_file

    check_onnx_file(path)
    model = onnx.load(str(path), load_external_data=True)
    large = model.ByteSize() > TWO_GB if _has_no_external(model) else path.stat().st_size > TWO_GB
    if large:
        onnx.save(model, str(target), save_as_external_data=True, location=target.name + ".data")
    else:
        onnx.save(model, str(target))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return {"route": "onnx copy", "opset": opset}


def _has_no_external(model) -> bool:
    from toolkit.safety.onnx import external_locations

    return not external_locations(model)


def export_torch(source, target: Path, *, opset: int, dynamic_batch: bool) -> dict:
    import torch

    names = [spec.name for spec in source.inputs]
    example = source.example_inputs(batch=2 if dynamic_batch else None)
    args = tuple(torch.from_numpy(example[name]) for name in names)
    dynamic_shapes = None
    if dynamic_batch:
        batch = torch.export.Dim("batch")
        dynamic_shapes = tuple({0: batch} if len(spec.shape) else {} for spec in source.inputs)
    if source.outputs is None:
        source.outputs = source.runner().outputs  # output_0, ... from one run of the module
    output_names = [spec.name for spec in source.outputs]
    module = source.module
    size = sum(p.numel() * p.element_size() for p in module.parameters()) if hasattr(module, "parameters") else 0
    is_script = isinstance(module, torch.jit.ScriptModule)
    try:
        with quiet():
            torch.onnx.export(
                module, args, str(target), dynamo=not is_script, external_data=size > TWO_GB * 0.9,
                input_names=names, output_names=output_names, opset_version=opset,
                dynamic_shapes=dynamic_shapes if not is_script else None,
                dynamic_axes={n: {0: "batch"} for n in names} if dynamic_batch and is_script else None,
                verbose=False,
            )
    except (BadInput, Unsupported):
        raise
    except Exception as error:
        raise Unsupported(f"torch.onnx.export cannot convert the model: {_describe(error)}") from None
    return {"route": "torch.onnx.export(dynamo=True)" if not is_script else "torch.onnx.export(torchscript)",
            "opset": opset, "dynamic_batch": dynamic_batch}


def export_hf(source, stage: Path, *, opset: int) -> dict:
    """optimum's exporter knows each architecture's inputs, outputs and dynamic axes."""
    try:
        from optimum.exporters.onnx import main_export
    except ImportError:
        from toolkit.errors import missing_library

        raise missing_library("optimum-onnx") from None
    task = source.meta.get("task", "auto")
    try:
        with quiet():
            main_export(
                str(source.path), output=str(stage), task=task, opset=opset, do_validation=False,
                local_files_only=True, trust_remote_code=bool(source.meta.get("trust_remote_code")),
                library_name="transformers",
            )
    except Exception as error:
        raise Unsupported(f"optimum cannot export this {source.meta.get('model_type')} model ({task}): "
                          f"{first_line(error)}") from None
    if not (stage / MODEL_FILE).is_file():
        made = sorted(p.name for p in stage.iterdir())
        raise Unsupported(f"optimum wrote {made}, not one {MODEL_FILE} (multi-part models are not supported yet)")
    return {"route": "optimum.exporters.onnx.main_export", "task": task, "opset": opset,
            "dynamic_axes": ["batch_size", "sequence_length"]}


def _describe(error: BaseException) -> str:
    """The first line, plus the aten op the exporter names, if any."""
    import re

    text = str(error)
    op = re.search(r"(aten[.:]{1,2}[\w.]+)", text)
    first = first_line(error)
    return f"{first} (op {op.group(1)})" if op and op.group(1) not in first else first
