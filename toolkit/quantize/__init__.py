"""Quantize an ONNX or TFLite model into a new artifact folder.

`quantize(model, mode, out_dir)` picks the mode's function from `toolkit.quantize.modes`,
checks the calibration data against the model's inputs before any work, builds the
artifact in a staging folder (nothing half-written is ever left), checks that the result
loads in its runtime, and records the size against the float model in the manifest.

    from toolkit.quantize import quantize
    result = quantize("exported/digits-onnx", "static-int8", "exported/digits-int8",
                      calibration="builtin:digits:train")
    print(result.size_ratio)
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from toolkit.common.text import first_line
from toolkit.errors import (
    BadInput,
    EdgewardError,
    EdgewardWarning,
    NothingQuantized,
    Unsupported,
    missing_library,
)

MODEL_SUFFIXES = {".onnx": "onnx", ".tflite": "tflite"}
INT4_BLOCK_SIZES = (32, 64, 128)


@dataclass
class QuantizeResult:
    out_dir: Path
    model_path: Path
    mode: str
    format: str
    size_bytes: int
    float_size_bytes: int
    size_ratio: float
    manifest: dict

    def as_dict(self) -> dict:
        return {key: (str(value) if isinstance(value, Path) else value) for key, value in asdict(self).items()}


def model_format(model_path: Path) -> str:
    fmt = MODEL_SUFFIXES.get(model_path.suffix.lower())
    if fmt is None:
        hint = " (export it first: edgeward export SOURCE --to onnx)" if model_path.suffix in (".pt", ".pt2") else ""
        raise BadInput(f"{model_path}: quantize takes an .onnx or .tflite model{hint}")
    return fmt


def default_out_dir(model: str | os.PathLike, mode: str) -> Path:
    """`exported/<name>-<mode>`, the name being the artifact folder's or the file's stem."""
    path = Path(model)
    if path.is_file() and (path.parent / "manifest.json").is_file():
        path = path.parent
    name = path.name if path.is_dir() else path.stem
    return Path("exported") / f"{name}-{mode}"


def model_bytes(model_path: Path) -> int:
    if model_path.suffix.lower() == ".onnx":
        from toolkit.quantize.onnx_graph import model_bytes as onnx_bytes

        return onnx_bytes(model_path)
    return model_path.stat().st_size


def quantize(
    model: str | os.PathLike,
    mode: str,
    out_dir: str | os.PathLike | None = None,
    *,
    calibration=None,
    method: str = "minmax",
    per_channel: bool = True,
    calibration_size: int = 256,
    exclude_nodes: list[str] | None = None,
    force: bool = False,
    block_size: int | None = None,
    allow_unchanged: bool = False,
) -> QuantizeResult:
    """Quantize MODEL (a file or an artifact folder) with MODE into OUT_DIR.

    `calibration`: a Dataset or a data spec (`builtin:digits:train`, an .npz); required by
    the static modes, ignored (with a warning) by the others. `exclude_nodes` keeps the
    named nodes in float (ONNX node names; for TFLite, whole tensor names). A mode that
    would change no weight raises `NothingQuantized` (exit 3), or with `allow_unchanged`
    keeps the model as it was, warns, and says so in the manifest (`unchanged: true`).
    """
    from toolkit.artifacts import check_writable, resolve_model, staged_folder, write_manifest
    from toolkit.common.quiet import quiet
    from toolkit.quantize.modes import check_method, get_mode
    from toolkit.runtime import open_model

    if mode == "auto":
        raise BadInput("mode auto needs evaluation data: use edgeward quantize MODEL --mode auto --data DATA")
    _refuse_seq2seq_folder(model)
    model_path = resolve_model(model)
    fmt = model_format(model_path)
    spec = litert_lm_mode(model_path, mode) or get_mode(mode, fmt)
    if spec.needs_calibration:
        check_method(method, fmt)
    if block_size is not None and (mode != "int4-weight" or block_size not in INT4_BLOCK_SIZES):
        raise BadInput(f"--block-size {block_size}: int4-weight takes a block of "
                       f"{', '.join(map(str, INT4_BLOCK_SIZES))}" if mode == "int4-weight" else
                       f"--block-size applies to --mode int4-weight, not {mode}")
    if calibration_size < 1:
        raise BadInput(f"calibration size must be at least 1, not {calibration_size}")
    if spec.needs_calibration and calibration is None:
        raise BadInput(f"{mode} needs calibration data: pass --calibration DATA (an .npz named after the inputs)")
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(model, mode)
    check_writable(out_dir, force)
    with quiet():  # LiteRT logs its delegate on stderr
        runner = open_model(model_path)
    refuse_quantized(model_path)
    dataset = prepare_calibration(calibration, runner.inputs, spec, calibration_size)
    try:
        function = spec.load()
    except ImportError:
        raise missing_library(spec.library) from None
    float_size = model_bytes(model_path)
    with tempfile.TemporaryDirectory(prefix="edgeward-quantize-") as work, staged_folder(out_dir, force) as stage:
        out_path = stage / f"model.{fmt}"
        try:
            # onnxruntime's shape inference drops temporary files into the current folder:
            # run it from the work folder so they go away with it.
            source_path, target_path = model_path.resolve(), out_path.resolve()  # before the chdir
            with contextlib.chdir(work):
                notes = function(
                    source_path, target_path, workdir=Path(work), calibration=dataset,
                    input_specs=runner.inputs, method=method, per_channel=per_channel,
                    exclude_nodes=list(exclude_nodes or []),
                    **({"block_size": block_size} if block_size is not None else {}),
                )
            if fmt == "onnx":
                check_onnx_changed(source_path, target_path, mode)
        except NothingQuantized as error:
            if not allow_unchanged:
                raise
            warnings.warn(f"{error}; kept as it was (--allow-unchanged)", EdgewardWarning, stacklevel=2)
            copy_model_file(source_path, target_path)
            notes = {"unchanged": True, "why": str(error)}
        except (EdgewardError, KeyboardInterrupt):
            raise
        except Exception as error:  # the quantization libraries raise many unrelated types
            raise Unsupported(f"{mode} quantization of {model_path.name} failed: {first_line(error)}") from error
        try:
            with quiet():
                open_model(out_path)
        except EdgewardError as error:
            raise Unsupported(f"{mode} produced a model its runtime cannot load: {error}") from None
        _copy_language_model_files(model_path, stage)
        size = model_bytes(out_path)
        options = {"mode": mode, "method": method if spec.needs_calibration else None, "per_channel": per_channel,
                   "calibration_size": calibration_size, "exclude_nodes": list(exclude_nodes or [])}
        manifest = _manifest(stage, model, model_path, spec, options, dataset, notes, size, float_size)
        write_manifest(stage, manifest)
    final = out_dir.absolute()
    return QuantizeResult(final, final / out_path.name, mode, fmt, size, float_size,
                          manifest["size"]["ratio"], manifest)


def _refuse_seq2seq_folder(model) -> None:
    """An encoder-decoder folder holds three graphs; quantizing the one resolve_model picks would drop two."""
    from toolkit.speech.folder import is_seq2seq_artifact

    if isinstance(model, (str, Path)) and is_seq2seq_artifact(model):
        raise BadInput(f"{model} is an encoder-decoder (Whisper/T5) folder: quantize it with "
                       "toolkit.speech.quantize.quantize_seq2seq, which edgeward quantize calls")


def litert_lm_mode(model_path: Path, mode: str):
    """A LiteRT language model's block-wise int4 (toolkit.lm.litert_quantize) for --mode int4-weight, else None."""
    from toolkit.lm.folder import is_lm_artifact

    if mode != "int4-weight" or model_path.suffix.lower() != ".tflite" or not is_lm_artifact(model_path):
        return None
    from toolkit.lm.litert_quantize import LITERT_INT4

    return LITERT_INT4


def _copy_language_model_files(model_path: Path, stage: Path) -> None:
    """A language model's config and tokenizer travel with it, so `edgeward generate` can run the result."""
    from toolkit.lm.folder import copy_side_files, has_tokenizer

    if model_path.suffix.lower() in (".onnx", ".tflite") and has_tokenizer(model_path.parent):
        copy_side_files(model_path.parent, stage)


QUANTIZED_ONNX_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger",
                      "ConvInteger", "MatMulNBits", "QLinearConv", "QLinearMatMul", "GatherBlockQuantized"}


def refuse_quantized(model_path: Path) -> None:
    """Quantizing twice compounds the error and the quantizers fail obscurely: say so plainly."""
    from toolkit.artifacts import artifact_folder_of, read_manifest

    folder = artifact_folder_of(model_path)
    manifest = read_manifest(folder) if folder else {}
    done = manifest.get("mode") if manifest.get("stage") == "quantize" else None
    if done is None and model_path.suffix.lower() == ".onnx":
        import onnx

        graph = onnx.load(str(model_path), load_external_data=False).graph
        found = sorted({node.op_type for node in graph.node} & QUANTIZED_ONNX_OPS)
        done = found[0] if found else None
    if done:
        parent = manifest.get("parent", {}).get("model")
        hint = f"quantize its float parent {parent} instead" if parent else "quantize the float model instead"
        raise BadInput(f"{model_path} is already quantized ({done}): {hint}")


def prepare_calibration(calibration, specs, mode, calibration_size: int):
    """Load and check calibration data before any expensive work; None where the mode needs none."""
    from toolkit.data import Dataset, check_matches, load_data
    from toolkit.quantize.calibration import example_count, take

    names = [spec.name for spec in specs]
    if calibration is None:
        if mode.needs_calibration:
            raise BadInput(
                f"{mode.name} needs calibration data: pass --calibration with an .npz holding "
                f"{', '.join(names)} (or builtin:digits:train for the digits models)"
            )
        return None
    if not mode.needs_calibration:
        warnings.warn(f"{mode.name} does not use calibration data; ignoring it", EdgewardWarning, stacklevel=3)
        return None
    dataset = calibration.renamed(names) if isinstance(calibration, Dataset) else load_data(calibration, names)
    if example_count(dataset) == 0:
        raise BadInput(f"the calibration set {dataset.name or ''!s} is empty: it needs at least one example")
    check_matches(dataset, specs)
    return take(dataset.for_model(specs), calibration_size)


def _manifest(stage, model, model_path, spec, options, dataset, notes, size, float_size) -> dict:
    from toolkit.artifacts import artifact_folder_of, new_manifest, read_manifest, sha256_file, source_record

    parent_folder = artifact_folder_of(model_path)
    parent_manifest = read_manifest(parent_folder) if parent_folder else {}
    parent = {"model": str(model_path.absolute()), "sha256": sha256_file(model_path)}
    if parent_folder:
        parent.update(folder=str(parent_folder), stage=parent_manifest.get("stage"),
                      manifest_sha256=sha256_file(parent_folder / "manifest.json"))
    libraries = ("onnx", "onnxruntime", "onnxconverter-common") if spec.format == "onnx" else (
        "ai-edge-quantizer", "ai-edge-litert")
    calibration = None
    if dataset is not None:
        from toolkit.quantize.calibration import example_count

        calibration = {"data": dataset.name, "examples": example_count(dataset)}
    return new_manifest(
        "quantize", stage, source=source_record(str(model)), options=options, libraries=libraries,
        model_file=f"model.{spec.format}", mode=spec.name, format=spec.format, parent=parent,
        origin=parent_manifest.get("origin") or parent_manifest.get("source") or {"spec": str(model)},
        size={"bytes": size, "float_bytes": float_size, "ratio": round(size / float_size, 4)},
        quantization=notes, calibration=calibration,
    )


def check_onnx_changed(source: Path, quantized: Path, mode: str) -> None:
    """NothingQuantized when the quantized graph has the same op types and the same initializer
    types as the source: no weight was quantized (e.g. dynamic-int8 on a graph without MatMul)."""
    from collections import Counter

    import onnx

    from toolkit.quantize.onnx_graph import all_nodes

    def fingerprint(path: Path):
        graph = onnx.load(str(path), load_external_data=False).graph
        return (Counter(node.op_type for node in all_nodes(graph)),
                Counter(tensor.data_type for tensor in graph.initializer))

    before, after = fingerprint(source), fingerprint(quantized)
    if before == after:
        ops = ", ".join(sorted(before[0])) or "none"
        raise NothingQuantized(f"{mode} changed no weight of {source.name} (its ops: {ops}): no op it holds "
                               "is one this mode quantizes")


def copy_model_file(source: Path, target: Path) -> None:
    """The source model as the result, its external data beside it when it has some."""
    import shutil

    if source.suffix.lower() == ".onnx":
        import onnx

        model = onnx.load(str(source))
        onnx.save(model, str(target))
    else:
        shutil.copyfile(source, target)
