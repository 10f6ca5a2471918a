"""Export a decoder-only Hugging Face language model to LiteRT (.tflite) with an external KV cache.

The network is re-authored with litert-torch's generative layers from the folder's config and
weights (`toolkit.lm.litert_model` says why that route and not `export_hf`), then converted by
`litert_torch.generative.utilities.converter.convert_to_tflite` into one flatbuffer with
`prefill_N` signatures (N tokens at once) and a `decode` signature (one token), all taking and
returning the whole KV cache. Prefill returns logits at every position, so validation can score
each one. Right after conversion the model is checked against transformers as the ONNX export is:
all positions from an empty cache, and the last tokens fed one at a time through the cache.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.errors import BadInput, Unsupported
from toolkit.lm.folder import context_length, copy_side_files, require_tokenizer

logger = logging.getLogger(__name__)

MODEL_FILE = "model.tflite"
DEFAULT_CACHE = 1024  # KV cache positions when the model's context is longer (memory: layers x 2 x this x kv width)
PREFILL_LENGTHS = (16, 128)  # prefill signatures; a longer prompt runs through them in windows
CHECK_TOKENS = 12
LIBRARIES = ("torch", "litert-torch", "ai-edge-litert", "transformers", "tokenizers")
ROUTE = "litert_torch.generative (model_builder re-authoring + converter.convert_to_tflite)"
# litert-torch's conversion-time recipes (utilities.converter.QuantizationName)
QUANTIZE = ("none", "dynamic_int8", "weight_only_int8", "fp16", "dynamic_int4_block32", "dynamic_int4_block128")


@dataclass
class LmTfliteExport:
    out_dir: Path
    model_path: Path
    max_abs_error: float
    manifest: dict = field(default_factory=dict)


def cache_length_for(config: dict, cache_length: int | None) -> int:
    context = context_length(config) or DEFAULT_CACHE
    if cache_length is None:
        return min(context, DEFAULT_CACHE)
    if not 2 <= int(cache_length) <= context:
        raise BadInput(f"--cache-length {cache_length}: choose between 2 and the model's context of {context}")
    return int(cache_length)


def export_lm_tflite(folder, out_dir, *, force: bool = False, trust_remote_code: bool = False,
                     cache_length: int | None = None, quantize: str = "none",
                     prefill_lengths=PREFILL_LENGTHS) -> LmTfliteExport:
    """`folder` (a `...ForCausalLM` HF folder) -> `out_dir` with model.tflite, config, tokenizer, manifest.
    `cache_length`: KV cache positions (default the context, at most DEFAULT_CACHE); `prefill_lengths`: the
    prefill signatures' windows; `quantize`: one of litert-torch's conversion-time recipes (QUANTIZE)."""
    from toolkit.artifacts import check_writable, new_manifest, staged_folder, write_manifest
    from toolkit.lm.litert_model import architecture_name, why_not_convertible
    from toolkit.sources.hf import check_folder

    if quantize not in QUANTIZE:
        raise BadInput(f"unknown LiteRT language-model quantization {quantize!r}: use one of {', '.join(QUANTIZE)}")
    folder, out_dir = Path(folder), Path(out_dir)
    check_writable(out_dir, force)
    config = check_folder(folder, trust_remote_code=trust_remote_code)
    require_tokenizer(folder)
    why = why_not_convertible(config)
    if why:
        raise Unsupported(why)
    cache = cache_length_for(config, cache_length)
    if not prefill_lengths or any(int(n) < 1 for n in prefill_lengths):
        raise BadInput(f"prefill lengths {list(prefill_lengths)}: give one or more positive window lengths")
    prefill = sorted({min(int(n), cache) for n in prefill_lengths})
    with tempfile.TemporaryDirectory(prefix="edgeward-litert-") as scratch, staged_folder(out_dir, force) as stage:
        convert(folder, config, stage / MODEL_FILE, Path(scratch), cache=cache, prefill=prefill, quantize=quantize)
        error = check_against_transformers(folder, stage / MODEL_FILE, config, trust_remote_code)
        error["float"] = quantize == "none"
        copy_side_files(folder, stage)
        lm = {"model_type": config.get("model_type"), "architecture": (config.get("architectures") or [None])[0],
              "layers": config.get("num_hidden_layers"), "kv_heads": config.get("num_key_value_heads"),
              "head_size": head_size(config), "context": cache, "model_context": context_length(config),
              "vocab_size": config.get("vocab_size"), "runtime": "litert",
              "signatures": [f"prefill_{n}" for n in prefill] + ["decode"]}
        manifest = new_manifest(
            "export", stage, source={"spec": str(folder), "kind": "hf"},
            options={"to": "tflite", "exporter": "litert-torch", "route": ROUTE, "cache_length": cache,
                     "prefill_lengths": prefill, "quantize": quantize},
            libraries=LIBRARIES, model_file=MODEL_FILE, format="tflite", export_error=error, lm=lm,
        )
        write_manifest(stage, manifest)
    logger.debug("exported %s to LiteRT: largest logit difference %.3g", architecture_name(config),
                error["max_abs_error"])
    return LmTfliteExport(out_dir, out_dir / MODEL_FILE, error["max_abs_error"], manifest)


def head_size(config: dict) -> int:
    return int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])


def convert(folder: Path, config: dict, target: Path, scratch: Path, *, cache: int, prefill: list[int],
            quantize: str) -> None:
    """Re-author, convert (quantizing at conversion if asked) and write `target`."""
    from toolkit.common.quiet import quiet
    from toolkit.common.text import first_line
    from toolkit.lm.litert_model import architecture_name, build_model

    model = build_model(folder, config, cache)
    with quiet():
        from litert_torch.generative.utilities import converter, export_config
    try:
        with quiet():
            written = converter.convert_to_tflite(
                model, output_path=str(scratch), output_name_prefix="model", prefill_seq_len=prefill,
                kv_cache_max_len=cache, quantize=quantize,
                export_config=export_config.ExportConfig(output_logits_on_prefill=True))
    except Exception as error:  # the converter raises many unrelated types
        raise Unsupported(f"{architecture_name(config)}: litert-torch cannot convert it "
                          f"({first_line(error)})") from None
    Path(written).replace(target)


def check_against_transformers(folder: Path, model_path: Path, config: dict, trust_remote_code: bool) -> dict:
    """Largest |logits| difference to transformers: all positions at once, and the last ones via the cache."""
    from toolkit.lm.export import compare_logits
    from toolkit.lm.litert_decoder import LiteRtDecoder, open_interpreter

    decoder = LiteRtDecoder(open_interpreter(model_path))
    figures = compare_logits(folder, config, trust_remote_code, decoder, min(CHECK_TOKENS, decoder.context), "LiteRT")
    return {**figures, "relative_error": figures["max_abs_error"] / max(figures["logit_scale"], 1e-30)}
