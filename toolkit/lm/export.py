"""Export a decoder-only Hugging Face language model to ONNX with a KV cache.

Two exporters write the same interface (`past_key_values.N.key/value` inputs, `logits` and
`present.*` outputs): onnxruntime-genai's model builder, first when it is installed and knows the
family, because its fused graph decodes about twice as fast (see `toolkit.lm.genai_builder`);
else optimum's text-generation-with-past export. `exporter=` picks one. The config and tokenizer
travel with the graph. Right after export the graph is checked against transformers on the same
tokens twice: all positions at once from an empty cache, and the last tokens fed one at a time
through the cache (what generation does).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolkit.common.quiet import quiet
from toolkit.common.text import first_line
from toolkit.errors import BadInput, Unsupported
from toolkit.lm.folder import CHECKED_FAMILIES, context_length, copy_side_files, head_dim, require_tokenizer

logger = logging.getLogger(__name__)

TASK = "text-generation-with-past"
MODEL_FILE = "model.onnx"
CHECK_TOKENS = 12  # tokens compared right after export (the last 4 through the cache)
CACHED_TOKENS = 4
LIBRARIES = ("torch", "onnx", "onnxruntime", "optimum", "optimum-onnx", "onnxruntime-genai", "transformers",
             "tokenizers")
EXPORTERS = ("auto", "genai", "optimum")
BUILDER_TOLERANCE = 1e-3  # largest logit difference to transformers, relative to the logits' scale
ROUTES = {"genai": "onnxruntime_genai.models.builder (-p fp32 -e cpu)", "optimum": "optimum.exporters.onnx.main_export"}


@dataclass
class LmExport:
    out_dir: Path
    model_path: Path
    max_abs_error: float
    manifest: dict = field(default_factory=dict)


def export_lm_onnx(folder, out_dir, *, opset: int = 18, force: bool = False,
                   trust_remote_code: bool = False, exporter: str = "auto") -> LmExport:
    """`folder` (a `...ForCausalLM` HF folder) -> `out_dir` with model.onnx, config, tokenizer, manifest.
    `exporter`: "auto" (onnxruntime-genai's builder where it works, else optimum), "genai" or "optimum";
    `opset` applies to optimum's export (the builder picks its own)."""
    if exporter not in EXPORTERS:
        raise BadInput(f"unknown language-model exporter {exporter!r}: use one of {', '.join(EXPORTERS)}")
    from toolkit.artifacts import check_writable, new_manifest, staged_folder, write_manifest
    from toolkit.sources.hf import check_folder

    folder = Path(folder)
    out_dir = Path(out_dir)
    check_writable(out_dir, force)
    config = check_folder(folder, trust_remote_code=trust_remote_code)
    require_tokenizer(folder)
    model_type = config.get("model_type", "?")
    architecture = (config.get("architectures") or ["?"])[0]
    what = f"{architecture} ({model_type})"
    with tempfile.TemporaryDirectory(prefix="edgeward-lm-export-") as scratch, staged_folder(out_dir, force) as stage:
        used, error = export_and_check(folder, stage, Path(scratch), config, exporter, opset=opset,
                                       trust_remote_code=trust_remote_code, what=what)
        copy_side_files(folder, stage)
        lm = lm_record(stage / MODEL_FILE, config)
        manifest = new_manifest(
            "export", stage, source={"spec": str(folder), "kind": "hf"},
            options={"to": "onnx", "opset": opset if used == "optimum" else None, "task": TASK,
                     "exporter": used, "route": ROUTES[used]},
            libraries=LIBRARIES, model_file=MODEL_FILE, format="onnx", export_error=error, lm=lm,
            inputs=lm.pop("inputs"), outputs=lm.pop("outputs"),
        )
        write_manifest(stage, manifest)
    if model_type not in CHECKED_FAMILIES:
        logger.info("%s is not among the families checked here (%s)", model_type, ", ".join(CHECKED_FAMILIES))
    return LmExport(out_dir, out_dir / MODEL_FILE, error["max_abs_error"], manifest)


def export_and_check(folder: Path, stage: Path, scratch: Path, config: dict, exporter: str, *, opset: int,
                     trust_remote_code: bool, what: str) -> tuple[str, dict]:
    """Run the exporter asked for (auto: the builder, and optimum where the builder cannot or its graph
    does not run) and check the graph against transformers; returns (exporter used, the check's figures)."""
    from toolkit.lm.genai_builder import GRAPH_FILES, build_with_genai, cannot_build, vocabulary_collision

    if exporter in ("auto", "genai"):
        # a known wrong graph is not worth building when optimum may be used; forced, the check below catches it
        why_not = (cannot_build(config, trust_remote_code)
                   or (vocabulary_collision(config) if exporter == "auto" else None)
                   or build_with_genai(folder, stage, scratch))
        if why_not is None:
            try:
                figures = check_against_transformers(folder, stage / MODEL_FILE, config, trust_remote_code)
                relative = figures["max_abs_error"] / max(figures["logit_scale"], 1e-30)
                if relative <= BUILDER_TOLERANCE:
                    return "genai", figures
                # a vocabulary as wide as a layer (genai_builder's docstring): the fused graph is not the model
                why_not = f"its graph differs from transformers by {relative:.2g} of the logits' scale"
            except Exception as error:  # onnxruntime refusing the fused graph at run time
                why_not = f"onnxruntime cannot run its graph: {first_line(error)}"
            for name in GRAPH_FILES:
                (stage / name).unlink(missing_ok=True)
        if exporter == "genai":
            raise Unsupported(f"onnxruntime-genai cannot export the {what} language model: {why_not}")
        logger.info("exporting with optimum: onnxruntime-genai's builder was not used (%s)", why_not)
    run_optimum(folder, stage, opset=opset, trust_remote_code=trust_remote_code, what=what)
    check_onnx(stage / MODEL_FILE)  # not for the builder's graph: onnxruntime's own ops fail onnx's checker
    return "optimum", check_against_transformers(folder, stage / MODEL_FILE, config, trust_remote_code)


def run_optimum(folder: Path, stage: Path, *, opset: int, trust_remote_code: bool, what: str) -> None:
    try:
        from optimum.exporters.onnx import main_export
    except ImportError:
        from toolkit.errors import missing_library

        raise missing_library("optimum-onnx") from None
    try:
        with quiet():
            main_export(str(folder), output=str(stage), task=TASK, opset=opset, do_validation=False,
                        local_files_only=True, trust_remote_code=trust_remote_code, library_name="transformers")
    except Exception as error:
        raise Unsupported(f"optimum cannot export the {what} language model with a KV cache: "
                          f"{first_line(error)}") from None
    if not (stage / MODEL_FILE).is_file():
        made = sorted(p.name for p in stage.iterdir())
        raise Unsupported(f"optimum wrote {made} for the {what} language model, not one {MODEL_FILE}")


def check_onnx(path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as error:
        raise Unsupported(f"the exported language model fails onnx.checker: {first_line(error)}") from None


def check_against_transformers(folder: Path, model_path: Path, config: dict, trust_remote_code: bool) -> dict:
    """Largest |logits| difference to transformers: all positions at once, and the last ones via the cache."""
    from toolkit.lm.decoder import KvDecoder, open_session

    decoder = KvDecoder(open_session(model_path), context=context_length(config), head_dim=head_dim(config))
    count = min(CHECK_TOKENS, (context_length(config) or CHECK_TOKENS))
    return {**compare_logits(folder, config, trust_remote_code, decoder, count, "exported"), "float": True}


def compare_logits(folder: Path, config: dict, trust_remote_code: bool, decoder, count: int, what: str) -> dict:
    """`decoder` (a KvDecoder or LiteRtDecoder) against transformers on `count` seeded random tokens: every
    position in one call, and the last CACHED_TOKENS one a step through its cache."""
    import torch

    from toolkit.sources.hf import load_model

    reference = load_model(folder, config, trust_remote_code=trust_remote_code)
    vocab = int(config.get("vocab_size") or reference.config.vocab_size)
    ids = np.random.default_rng(0).integers(0, vocab, size=count, dtype=np.int64)
    with torch.no_grad():
        expected = reference(input_ids=torch.from_numpy(ids[None]), use_cache=False).logits[0].float().numpy()
    whole = decoder.all_logits(ids)
    decoder.forward(ids[:-CACHED_TOKENS])
    stepped = np.stack([decoder.forward(ids[i:i + 1]) for i in range(count - CACHED_TOKENS, count)])
    whole_error = float(np.max(np.abs(whole - expected)))
    cached_error = float(np.max(np.abs(stepped - expected[-CACHED_TOKENS:])))
    if not np.isfinite(whole_error + cached_error):
        raise Unsupported(f"the {what} {config.get('model_type')} model gives non-finite logits")
    return {"all_positions": whole_error, "through_cache": cached_error, "tokens": int(count),
            "max_abs_error": max(whole_error, cached_error), "logit_scale": float(np.max(np.abs(expected)))}


def lm_record(model_path: Path, config: dict) -> dict:
    """What generation and bench need to know without opening the graph: the KV layout and the context."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph

    def spec(value) -> dict:
        dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
        return {"name": value.name, "shape": dims, "dtype": onnx.helper.tensor_dtype_to_np_dtype(
            value.type.tensor_type.elem_type).name}

    inputs = [spec(value) for value in graph.input]
    past = [item for item in inputs if item["name"].startswith("past_key_values.")]
    if not past:
        raise Unsupported(f"{model_path.name} has no past_key_values inputs: not a decoder with a KV cache")
    heads, head_size = past[0]["shape"][1], past[0]["shape"][3]
    if not isinstance(head_size, int) or head_size <= 0:  # the builder's graphs leave it symbolic
        head_size = head_dim(config)
    return {"model_type": config.get("model_type"), "architecture": (config.get("architectures") or [None])[0],
            "layers": len(past) // 2, "kv_heads": heads, "head_size": head_size,
            "context": context_length(config), "vocab_size": config.get("vocab_size"),
            "inputs": inputs, "outputs": [spec(value) for value in graph.output]}
