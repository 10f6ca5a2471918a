"""Export a model source to ONNX or TFLite as an artifact folder, checked against its source.

Right after conversion the new model and the source run on the same inputs (seeded
random inputs at the pinned shapes, plus real data when given) and the largest absolute
difference of their outputs, and that difference relative to the outputs' scale, are
recorded in the manifest; above 1e-4, or 1e-3 of the scale, a float export warns (the
model is kept, as optimum does with its atol check).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolkit.errors import BadInput, EdgewardWarning, Unsupported

logger = logging.getLogger(__name__)

FORMATS = ("onnx", "tflite")
FLOAT_TOLERANCE = 1e-4
RELATIVE_TOLERANCE = 1e-3  # of the largest |output| of the source
MAX_CHECK_EXAMPLES = 1024
LIBRARIES = ("torch", "onnx", "onnxruntime", "onnxscript", "litert-torch", "ai-edge-litert", "optimum",
             "optimum-onnx", "transformers")


@dataclass
class ExportResult:
    out_dir: Path
    model_path: Path
    max_abs_error: float
    manifest: dict = field(default_factory=dict)

    @property
    def size_bytes(self) -> int:
        return sum(entry["bytes"] for entry in self.manifest.get("files", {}).values())


def default_out_dir(source, to: str) -> Path:
    return Path("exported") / f"{source.name}-{to}"


def export(spec_or_source, to: str, out_dir=None, *, opset: int = 18, dynamic_batch: bool = False,
           force: bool = False, data=None, input_shapes: dict | None = None, cache_length: int | None = None,
           **source_options) -> ExportResult:
    """Convert a source (spec or `Source`) to `to` in `out_dir`; nothing is written unless it all works.
    `cache_length`: KV cache positions of a language model exported to tflite (only there)."""
    from toolkit.artifacts import check_writable, new_manifest, staged_folder, write_manifest
    from toolkit.sources import Source, load_source

    if to not in FORMATS:
        raise BadInput(f"unknown format {to!r}: use onnx or tflite")
    if not 7 <= int(opset) <= 23:
        raise BadInput(f"--opset {opset}: choose an ONNX opset between 7 and 23")
    target = None if out_dir is None else Path(out_dir)
    if target is not None:
        check_writable(target, force)  # before any expensive work
    if cache_length is not None and not _is_causal_lm_to_tflite(spec_or_source, to):
        raise BadInput("--cache-length applies to a Hugging Face language model exported --to tflite")
    if not isinstance(spec_or_source, Source) and not input_shapes and data is None:
        speech = _export_speech(spec_or_source, target, to, opset=opset, force=force, **source_options)
        if speech is not None:
            return speech
    if to == "tflite" and not isinstance(spec_or_source, Source) and not input_shapes and data is None:
        lm = _export_causal_lm_tflite(spec_or_source, target, force=force, cache_length=cache_length,
                                      **source_options)
        if lm is not None:
            return lm
    if to == "onnx" and not isinstance(spec_or_source, Source) and not input_shapes and data is None:
        lm = _export_causal_lm(spec_or_source, target, opset=opset, force=force, **source_options)
        if lm is not None:
            return lm
    if isinstance(spec_or_source, Source):
        source = spec_or_source
        if input_shapes:
            source.input_shapes = dict(input_shapes)
    else:
        source = load_source(spec_or_source, input_shapes=input_shapes, **source_options)
    if target is None:
        target = default_out_dir(source, to)
        check_writable(target, force)
    dataset = _dataset(data, source)
    logger.debug("exporting %s (%s) to %s ...", source.spec, source.kind, to)
    with staged_folder(target, force) as stage:
        if to == "onnx":
            from toolkit.export.to_onnx import export_onnx

            model_path, notes = export_onnx(source, stage, opset=opset, dynamic_batch=dynamic_batch)
        else:
            from toolkit.export.to_tflite import export_tflite

            if dynamic_batch:
                warnings.warn("TFLite models are exported with a fixed batch; runtimes resize it when given another",
                              EdgewardWarning, stacklevel=2)
            model_path, notes = export_tflite(source, stage)
        from toolkit.runtime import open_model

        candidate = open_model(model_path)
        error = measure_error(source, candidate, dataset)
        manifest = new_manifest(
            "export", stage, source=source.record(),
            options={"to": to, "opset": opset if to == "onnx" else None, "dynamic_batch": dynamic_batch,
                     "input_shapes": source.input_shapes or None, **notes},
            libraries=LIBRARIES, model_file=model_path.name, format=to, export_error=error,
            inputs=[spec.as_dict() for spec in candidate.inputs],
            outputs=[spec.as_dict() for spec in candidate.outputs],
            source_inputs=[spec.as_dict() for spec in source.inputs],
            **({"source_rebuild": source.meta["rebuild"]} if source.meta.get("rebuild") else {}),
        )
        write_manifest(stage, manifest)
    warn_if_far(error, to)
    return ExportResult(target, target / model_path.name, error["max_abs_error"], manifest)


def _export_causal_lm(spec, target, *, opset: int, force: bool, trust_remote_code: bool = False,
                      **_) -> ExportResult | None:
    """A decoder-only HF folder goes to toolkit.lm (with a KV cache); None for anything else."""
    from toolkit.lm.folder import is_causal_lm

    folder = Path(str(spec))
    if not is_causal_lm(folder):
        return None
    from toolkit.lm.export import export_lm_onnx

    target = target if target is not None else Path("exported") / f"{folder.name}-onnx"
    done = export_lm_onnx(folder, target, opset=opset, force=force, trust_remote_code=trust_remote_code)
    warn_if_far(done.manifest["export_error"], "onnx")
    return ExportResult(done.out_dir, done.model_path, done.max_abs_error, done.manifest)


def _is_causal_lm_to_tflite(spec, to: str) -> bool:
    from toolkit.lm.folder import is_causal_lm
    from toolkit.sources import Source

    return to == "tflite" and not isinstance(spec, Source) and is_causal_lm(Path(str(spec)))


def _export_causal_lm_tflite(spec, target, *, force: bool, trust_remote_code: bool = False,
                             cache_length: int | None = None, **_) -> ExportResult | None:
    """A decoder-only HF folder goes to litert-torch's generative path (prefill and decode signatures over
    an external KV cache; toolkit.lm.litert_export); None for anything else. An architecture it cannot
    convert is Unsupported, naming it: tracing it as a plain model would drop the cache."""
    from toolkit.lm.folder import is_causal_lm

    folder = Path(str(spec))
    if not is_causal_lm(folder):
        return None
    from toolkit.lm.litert_export import export_lm_tflite

    target = target if target is not None else Path("exported") / f"{folder.name}-tflite"
    done = export_lm_tflite(folder, target, force=force, trust_remote_code=trust_remote_code,
                            cache_length=cache_length)
    return ExportResult(done.out_dir, done.model_path, done.max_abs_error, done.manifest)


def _export_speech(spec, target, to: str, *, opset: int, force: bool, trust_remote_code: bool = False,
                   **_) -> ExportResult | None:
    """An encoder-decoder HF folder (Whisper, T5) goes to toolkit.speech; None for anything else."""
    from toolkit.speech.folder import is_seq2seq_folder

    folder = Path(str(spec))
    if not is_seq2seq_folder(folder):
        return None
    from toolkit.speech.export import TFLITE_WHY, export_speech_onnx

    if to != "onnx":
        raise Unsupported(f"{folder}: {TFLITE_WHY}")
    target = target if target is not None else Path("exported") / f"{folder.name}-onnx"
    done = export_speech_onnx(folder, target, opset=opset, force=force, trust_remote_code=trust_remote_code)
    warn_if_far(done.manifest["export_error"], "onnx")
    return ExportResult(done.out_dir, done.model_path, done.max_abs_error, done.manifest)


def warn_if_far(error: dict, to: str) -> bool:
    """A float export further than 1e-4 from its source, or than 1e-3 of its outputs' scale,
    is kept, with a warning (EdgewardWarning)."""
    relative = error.get("relative_error")
    far_absolute = error["max_abs_error"] > FLOAT_TOLERANCE
    far_relative = relative is not None and relative > RELATIVE_TOLERANCE
    far = bool(error["float"] and (far_absolute or far_relative))
    if far:
        bar = f"> {FLOAT_TOLERANCE:g}" if far_absolute else f"> {RELATIVE_TOLERANCE:g} of the outputs' scale"
        warnings.warn(f"the {to} model differs from its source by up to {error['max_abs_error']:.3g}"
                      f"{relative_text(error)} ({bar})", EdgewardWarning, stacklevel=3)
    return far


def relative_text(error: dict) -> str:
    """`, 2.1e-07 relative to outputs of up to 3.4` (empty when the record has no scale)."""
    if error.get("relative_error") is None or not error.get("output_scale"):
        return ""
    return f", {error['relative_error']:.3g} relative to outputs of up to {error['output_scale']:.3g}"


def _dataset(data, source):
    if data is None:
        return None
    from toolkit.data import Dataset, check_matches, load_data

    names = [spec.name for spec in source.inputs]
    dataset = data if isinstance(data, Dataset) else load_data(data, names)
    dataset = dataset.renamed(names)
    check_matches(dataset, source.inputs)
    if len(dataset) == 0:
        raise BadInput(f"data {dataset.name!r} is empty")
    return dataset


def measure_error(source, candidate, dataset=None) -> dict:
    """Largest |source - candidate| over all outputs, on random inputs and on `dataset`."""
    from toolkit.runtime import run_batched

    reference = source.runner()
    random_feeds = source.example_inputs(seed=0)
    random_error, scale, relative = _differences(reference.run(random_feeds),
                                                 candidate.run(_for(candidate, random_feeds)))
    record = {"random": random_error, "random_shapes": {k: list(v.shape) for k, v in random_feeds.items()}}
    if dataset is not None:
        sample = dataset.take(MAX_CHECK_EXAMPLES)
        expected = run_batched(reference, sample.inputs)
        got = run_batched(candidate, _for(candidate, sample.inputs))
        record["data"], data_scale, data_relative = _differences(expected, got)
        scale, relative = max(scale, data_scale), max(relative, data_relative)
        record["data_name"] = dataset.name
        record["data_examples"] = len(sample)
    record["max_abs_error"] = max(record["random"], record.get("data", 0.0))
    # An absolute figure alone says nothing about outputs of ~1e-27 (or ~1e6): say it relative too.
    record["output_scale"] = scale
    record["relative_error"] = relative
    record["relative_tolerance"] = RELATIVE_TOLERANCE
    record["float"] = all(np.dtype(spec.dtype).kind == "f" for spec in candidate.outputs if spec.dtype)
    record["tolerance"] = FLOAT_TOLERANCE
    return record


def _for(runner, feeds: dict) -> dict:
    """Only the inputs this runner takes (an exported model may drop an unused one)."""
    names = [spec.name for spec in runner.inputs]
    kept = {name: feeds[name] for name in names if name in feeds}
    return kept if len(kept) == len(names) else feeds


def _differences(expected: list, got: list) -> tuple[float, float, float]:
    """(largest |source - export|, the outputs' scale, the largest error relative to its output's scale).

    An output's scale is its largest |value| in the source; an output that is all zeros has
    no scale and counts in the absolute figure only.
    """
    if len(expected) != len(got):
        raise Unsupported(f"the export gives {len(got)} outputs, its source {len(expected)}")
    worst, scale, relative = 0.0, 0.0, 0.0
    for a, b in zip(expected, got, strict=True):
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a.shape != b.shape:
            if a.size != b.size:
                raise Unsupported(f"the export gives an output of shape {list(b.shape)}, its source {list(a.shape)}")
            b = b.reshape(a.shape)
        if a.size:
            error, output_scale = float(np.max(np.abs(a - b))), float(np.max(np.abs(a)))
            worst, scale = max(worst, error), max(scale, output_scale)
            if output_scale > 0:
                relative = max(relative, error / output_scale)
    return worst, scale, relative
