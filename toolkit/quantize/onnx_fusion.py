"""Transformer-encoder fusion before dynamic int8: Attention and BiasGelu from onnxruntime's optimizer.

onnxruntime fuses a float encoder's attention at load time, but not once its MatMuls are
MatMulInteger: a model quantized unfused keeps attention as a dozen small ops per layer.
Fusing first (`onnxruntime.transformers.optimizer.optimize_model`) lets the dynamic
quantizer turn each `Attention` into one `QAttention`.

Only Attention, Gelu/BiasGelu and LayerNormalization are fused. SkipLayerNormalization is left
out (its CPU kernel measured slower than Add + LayerNormalization here, see
`onnx_embeddings.sum_before_layernorm`), and so is EmbedLayerNormalization (it would hide the
embedding Gathers that int4 tables replace).

The encoder is recognised from the Hugging Face `config.json` beside the model (model type,
heads, hidden size), or else from the graph (the optimizer detects heads and hidden size).
The fused graph is run against the original on random inputs; a fusion that fuses no
attention, fails or changes the outputs is dropped with a log line and the original is used.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolkit.common.quiet import quiet
from toolkit.common.text import first_line
from toolkit.quantize.onnx_graph import is_large

logger = logging.getLogger(__name__)

# Hugging Face model types whose encoder onnxruntime's "bert" fusions recognise -> (heads key, hidden key)
ENCODER_CONFIG_KEYS = {
    "bert": ("num_attention_heads", "hidden_size"),
    "roberta": ("num_attention_heads", "hidden_size"),
    "xlm-roberta": ("num_attention_heads", "hidden_size"),
    "camembert": ("num_attention_heads", "hidden_size"),
    "electra": ("num_attention_heads", "hidden_size"),
    "distilbert": ("n_heads", "dim"),
}
FUSED_OPS = ("Attention", "BiasGelu", "Gelu", "FastGelu", "LayerNormalization")
MAX_RELATIVE_ERROR = 1e-3  # fused against original, max |difference| / max |output|
CHECK_SEQUENCE = 8  # tokens in the check's random inputs where the sequence axis is free (within any position table)


@dataclass
class EncoderShape:
    """What the optimizer needs to know; zeros let it read heads and hidden size from the graph."""

    model_type: str = "bert"
    num_heads: int = 0
    hidden_size: int = 0
    source: str = "graph"  # "config.json" or "graph"


@dataclass
class FusionResult:
    model_path: Path  # the fused model, or the original when fusion did not apply
    fused: bool
    encoder: EncoderShape | None = None
    ops: dict[str, int] = field(default_factory=dict)  # fused operator -> count
    max_relative_error: float | None = None
    reason: str | None = None  # why the original was kept

    def notes(self) -> dict:
        """The manifest's record of the pre-pass."""
        if not self.fused:
            return {"applied": False, "reason": self.reason}
        return {"applied": True, "route": "onnxruntime.transformers.optimizer (model_type bert)",
                "detected_from": self.encoder.source, "num_heads": self.encoder.num_heads,
                "hidden_size": self.encoder.hidden_size, "fused_ops": self.ops,
                "max_relative_error": self.max_relative_error}


def encoder_shape(model_path: Path) -> EncoderShape | None:
    """The encoder's heads and hidden size from config.json beside MODEL_PATH; None when it is no encoder.

    Without a config.json the graph decides (the optimizer detects what it can).
    """
    config_path = Path(model_path).parent / "config.json"
    if not config_path.is_file():
        return EncoderShape()
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError):
        return EncoderShape()
    keys = ENCODER_CONFIG_KEYS.get(str(config.get("model_type", "")).lower())
    if keys is None:
        return None
    heads, hidden = (config.get(key) for key in keys)
    if not isinstance(heads, int) or not isinstance(hidden, int):
        return EncoderShape()
    return EncoderShape("bert", heads, hidden, "config.json")


def fuse_transformer(model_path: Path, workdir: Path, *, config_dir: Path | None = None) -> FusionResult:
    """Fuse MODEL_PATH's attention into `workdir/fused.onnx`; the original back when that does not apply.

    `config_dir`: where the Hugging Face config.json is (default: beside the model).
    """
    model_path = Path(model_path)
    encoder = encoder_shape((config_dir or model_path.parent) / model_path.name)
    if encoder is None:
        return _kept(model_path, "config.json names a model type that is not a BERT-like encoder")
    if is_large(model_path):
        return _kept(model_path, "over the 2 GB a single protobuf holds: the optimizer would not save it")
    if not _has_attention_pattern(model_path):
        return _kept(model_path, "no Softmax and LayerNormalization: not a transformer encoder")
    out = Path(workdir) / "fused.onnx"
    try:
        ops = _optimize(model_path, out, encoder)
    except Exception as error:  # the optimizer raises many types on graphs it does not expect
        return _kept(model_path, f"onnxruntime's transformer optimizer failed: {first_line(error)}")
    if not ops.get("Attention"):
        return _kept(model_path, "onnxruntime's transformer optimizer fused no Attention")
    try:
        error = fused_error(model_path, out)
    except Exception as failure:  # a fused graph onnxruntime cannot run is not used
        return _kept(model_path, f"the fused model does not run: {first_line(failure)}")
    if not error <= MAX_RELATIVE_ERROR:
        return _kept(model_path, f"the fused model's outputs differ from the original's (relative error {error:.2e})")
    logger.info("transformer fusion: %s (%s heads, hidden %s, from %s), relative error %.1e",
                ", ".join(f"{count} {op}" for op, count in ops.items()), encoder.num_heads,
                encoder.hidden_size, encoder.source, error)
    return FusionResult(out, True, encoder, ops, float(f"{error:.3g}"))


def _kept(model_path: Path, reason: str) -> FusionResult:
    logger.info("transformer fusion skipped for %s: %s", model_path.name, reason)
    return FusionResult(model_path, False, reason=reason)


def _has_attention_pattern(model_path: Path) -> bool:
    import onnx

    ops = {node.op_type for node in onnx.load(str(model_path), load_external_data=False).graph.node}
    return "Softmax" in ops and bool(ops & {"LayerNormalization", "ReduceMean"})  # ReduceMean: LayerNorm unfused


def _optimize(model_path: Path, out: Path, encoder: EncoderShape) -> dict[str, int]:
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions("bert")
    options.enable_skip_layer_norm = False
    options.enable_bias_skip_layer_norm = False
    options.enable_embed_layer_norm = False
    with quiet():
        model = optimizer.optimize_model(
            str(model_path), model_type=encoder.model_type, num_heads=encoder.num_heads,
            hidden_size=encoder.hidden_size, optimization_options=options, opt_level=0,
        )
        model.save_model_to_file(str(out))
    statistics = model.get_fused_operator_statistics()
    return {op: int(statistics[op]) for op in FUSED_OPS if statistics.get(op)}


def fused_error(original: Path, fused: Path, seed: int = 0) -> float:
    """Max |fused - original| over all outputs, relative to the original outputs' largest magnitude."""
    from toolkit.runtime import open_model
    from toolkit.sources.source import random_inputs

    with quiet():
        runners = [open_model(path) for path in (original, fused)]
    specs = runners[0].inputs
    shapes = {spec.name: [_fixed(dim, axis) for axis, dim in enumerate(spec.shape)] for spec in specs}
    feeds = random_inputs(specs, shapes, seed=seed)
    reference, candidate = (runner.run(feeds) for runner in runners)
    worst = 0.0
    for want, got in zip(reference, candidate, strict=True):
        want, got = np.asarray(want, np.float64), np.asarray(got, np.float64)
        scale = float(np.max(np.abs(want))) or 1.0
        worst = max(worst, float(np.max(np.abs(want - got))) / scale)
    return worst


def _fixed(dim, axis: int) -> int:
    if isinstance(dim, int) and dim > 0:
        return dim
    return 1 if axis == 0 else CHECK_SEQUENCE

