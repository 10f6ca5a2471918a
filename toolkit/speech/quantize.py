"""Quantize an exported encoder-decoder folder (Whisper, T5): every graph with the same mode.

The encoder and both decoders go one by one through `toolkit.quantize.quantize` (the same mode
functions, checks and "changed nothing" refusal as a single model); each result is saved under
its own graph name in a new folder that keeps the export's layout, beside the config, tokenizer,
feature extractor and a manifest with the sizes of every graph. So the result runs through
`edgeward generate`, `validate` and `bench` like the float export.

Modes that need no data only (dynamic-int8, int4-weight, fp16, ...): a static mode would need
calibration inputs for each graph (features, encoder states, a cache), which no data spec gives.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from toolkit.errors import BadInput, Unsupported
from toolkit.speech.folder import GRAPH_FILES, copy_speech_side_files, is_seq2seq_artifact

logger = logging.getLogger(__name__)

# onnx.save refuses a single protobuf past 2 GB; above this the weights go to an external data file
EMBED_LIMIT_BYTES = 1_800_000_000


@dataclass
class Seq2SeqQuantizeResult:
    out_dir: Path
    model_path: Path  # the encoder; the decoders lie beside it
    mode: str
    format: str
    size_bytes: int
    float_size_bytes: int
    size_ratio: float
    graphs: dict = field(default_factory=dict)  # graph file -> bytes, float_bytes, ratio
    manifest: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {key: (str(value) if isinstance(value, Path) else value) for key, value in asdict(self).items()}


def quantize_seq2seq(folder, mode: str, out_dir=None, *, force: bool = False, block_size: int | None = None,
                     exclude_nodes: list[str] | None = None, allow_unchanged: bool = False,
                     per_channel: bool = True) -> Seq2SeqQuantizeResult:
    """`folder` (an exported encoder-decoder) -> `out_dir` with every graph quantized by `mode`."""
    from toolkit.artifacts import check_writable, read_manifest, staged_folder, write_manifest
    from toolkit.quantize import default_out_dir
    from toolkit.quantize.modes import get_mode

    folder = Path(folder)
    if not is_seq2seq_artifact(folder):
        raise BadInput(f"{folder}: not an exported encoder-decoder folder (encoder_model.onnx, decoder_model.onnx, "
                       "decoder_with_past_model.onnx and config.json)")
    if mode == "auto":
        raise Unsupported("--mode auto is not available for encoder-decoders (speech, T5): pick a mode such as "
                          "dynamic-int8, int4-weight or fp16 and check it with edgeward validate")
    spec = get_mode(mode, "onnx")
    if spec.needs_calibration:
        raise Unsupported(f"{mode} needs calibration inputs for each of the three graphs (features, encoder "
                          "states, a decoder cache), which Edgeward does not build for encoder-decoders yet: "
                          "use a mode that needs no data (dynamic-int8, int4-weight, fp16)")
    parent = read_manifest(folder)
    if parent.get("stage") == "quantize":
        raise BadInput(f"{folder} is already quantized ({parent.get('mode')}): quantize its float parent "
                       f"{parent.get('parent', {}).get('folder', 'folder')} instead")
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(folder, mode)
    check_writable(out_dir, force)
    graphs: dict = {}
    with tempfile.TemporaryDirectory(prefix="edgeward-seq2seq-q-") as work, staged_folder(out_dir, force) as stage:
        for name in GRAPH_FILES:
            graphs[name] = quantize_graph(folder / name, mode, Path(work) / Path(name).stem, stage / name,
                                          block_size=block_size, exclude_nodes=exclude_nodes,
                                          allow_unchanged=allow_unchanged, per_channel=per_channel)
            logger.info("%s %s: %d -> %d bytes", mode, name, graphs[name]["float_bytes"], graphs[name]["bytes"])
        copy_speech_side_files(folder, stage)
        size = sum(graph["bytes"] for graph in graphs.values())
        float_size = sum(graph["float_bytes"] for graph in graphs.values())
        manifest = seq2seq_manifest(stage, folder, parent, spec, graphs, size, float_size,
                                    {"mode": mode, "per_channel": per_channel, "block_size": block_size,
                                     "exclude_nodes": list(exclude_nodes or [])})
        write_manifest(stage, manifest)
    final = out_dir.absolute()
    return Seq2SeqQuantizeResult(final, final / GRAPH_FILES[0], mode, "onnx", size, float_size,
                                 manifest["size"]["ratio"], graphs, manifest)


def quantize_graph(source: Path, mode: str, scratch: Path, target: Path, **options) -> dict:
    """One graph through `toolkit.quantize.quantize` into `scratch`, then saved as `target`."""
    import onnx

    from toolkit.quantize import quantize

    result = quantize(source, mode, scratch, **{key: value for key, value in options.items() if value is not None})
    model = onnx.load(str(result.model_path))
    if model.ByteSize() > EMBED_LIMIT_BYTES:
        onnx.save(model, str(target), save_as_external_data=True, location=target.name + ".data")
    else:
        onnx.save(model, str(target))
    return {"bytes": result.size_bytes, "float_bytes": result.float_size_bytes,
            "ratio": round(result.size_bytes / result.float_size_bytes, 4),
            "quantization": result.manifest.get("quantization")}


def seq2seq_manifest(stage: Path, folder: Path, parent: dict, spec, graphs: dict, size: int, float_size: int,
                     options: dict) -> dict:
    from toolkit.artifacts import new_manifest, sha256_file

    return new_manifest(
        "quantize", stage, source={"spec": str(folder), "kind": "seq2seq"}, options=options,
        libraries=("onnx", "onnxruntime", "onnxconverter-common"), model_file=GRAPH_FILES[0], mode=spec.name,
        format="onnx", seq2seq=parent.get("seq2seq"),
        parent={"folder": str(folder.absolute()), "stage": parent.get("stage"),
                "manifest_sha256": sha256_file(folder / "manifest.json") if (folder / "manifest.json").is_file()
                else None},
        origin=parent.get("origin") or parent.get("source") or {"spec": str(folder)},
        size={"bytes": size, "float_bytes": float_size, "ratio": round(size / float_size, 4)},
        graphs=graphs,
    )


def human_summary(result: Seq2SeqQuantizeResult) -> str:
    from toolkit.common.units import human_bytes

    lines = [f"{result.mode} onnx encoder-decoder: {result.out_dir} ({human_bytes(result.size_bytes)} vs "
             f"{human_bytes(result.float_size_bytes)} float, {result.size_ratio:.2f}x)"]
    lines += [f"  {name}: {human_bytes(graph['bytes'])} ({graph['ratio']:.2f}x)" for name, graph in result.graphs.items()]
    return "\n".join(lines)
