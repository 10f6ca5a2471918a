"""A Hugging Face decoder re-authored with litert-torch's generative layers, from its config and safetensors.

litert-torch 0.10 has two LM routes. `generative.export_hf` (straight from an HF folder) imports
`transformers.cache_utils.LinearAttentionCacheLayerMixin`, which only transformers 5 has; this
project pins transformers < 4.58 for optimum-onnx, so that route fails on import. The classic
route re-authors the network with `generative.utilities.model_builder` (a `DecoderOnlyModel` whose
KV cache is an explicit input and output) and loads the folder's safetensors through
`utilities.loader.ModelLoader`; it needs no download and no newer transformers. Its examples hard-code
one config per published checkpoint; here the `cfg.ModelConfig` is built from the folder's
config.json instead, for the families whose layers map one to one (see `FAMILIES`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from toolkit.errors import Unsupported

logger = logging.getLogger(__name__)

# model_type -> what differs from the Llama layout (checked here against transformers' logits)
FAMILIES = ("llama", "qwen2", "qwen3", "mistral", "phi3")


def architecture_name(config: dict) -> str:
    return f"{(config.get('architectures') or ['?'])[0]} ({config.get('model_type', '?')})"


def why_not_convertible(config: dict) -> str | None:
    """None when `config` maps onto litert-torch's layers here, else the reason (for exit 3)."""
    model_type = config.get("model_type")
    if model_type not in FAMILIES:
        return (f"{architecture_name(config)}: litert-torch's generative layers are mapped here for "
                f"{', '.join(FAMILIES)} only")
    scaling = config.get("rope_scaling") or {}
    kind = scaling.get("rope_type") or scaling.get("type")
    if kind not in (None, "default", "llama3"):
        return f"{architecture_name(config)}: rope scaling {kind!r} is not mapped to litert-torch"
    if config.get("sliding_window") and config.get("use_sliding_window"):
        return f"{architecture_name(config)}: sliding-window attention is not mapped to litert-torch"
    if config.get("attention_bias") or config.get("mlp_bias"):
        if model_type != "qwen2":
            return f"{architecture_name(config)}: attention or MLP biases are not mapped to litert-torch"
    return None


def model_config(config: dict, cache_length: int):
    """litert-torch's `ModelConfig` for an HF config dict (one of `FAMILIES`)."""
    from functools import partial

    import litert_torch.generative.layers.model_config as cfg

    model_type = config["model_type"]
    heads = int(config["num_attention_heads"])
    hidden = int(config["hidden_size"])
    head_size = int(config.get("head_dim") or hidden // heads)
    norm = cfg.NormalizationConfig(type=cfg.NormalizationType.RMS_NORM,
                                   epsilon=float(config.get("rms_norm_eps", 1e-6)))
    qk_norm = model_type == "qwen3"
    attention = cfg.AttentionConfig(
        num_heads=heads, head_dim=head_size,
        num_query_groups=int(config.get("num_key_value_heads") or heads),
        rotary_base=int(config.get("rope_theta", 10000)), rotary_percentage=1.0,
        qkv_use_bias=model_type == "qwen2",
        qkv_transpose_before_split=True,
        qkv_fused_interleaved=False,
        query_norm_config=norm if qk_norm else cfg.NormalizationConfig(),
        key_norm_config=norm if qk_norm else cfg.NormalizationConfig(),
    )
    if model_type == "phi3":  # gate and up in one matrix (gate_up_proj), split by SILU_GLU
        feed_forward = cfg.FeedForwardConfig(type=cfg.FeedForwardType.SEQUENTIAL,
                                             activation=cfg.ActivationConfig(cfg.ActivationType.SILU_GLU),
                                             intermediate_size=int(config["intermediate_size"]))
    else:
        feed_forward = cfg.FeedForwardConfig(type=cfg.FeedForwardType.GATED,
                                             activation=cfg.ActivationConfig(cfg.ActivationType.SILU),
                                             intermediate_size=int(config["intermediate_size"]))
    block = cfg.TransformerBlockConfig(attn_config=attention, ff_config=feed_forward,
                                       pre_attention_norm_config=norm, post_attention_norm_config=norm)
    extra = {}
    scaling = config.get("rope_scaling") or {}
    if (scaling.get("rope_type") or scaling.get("type")) == "llama3":
        extra["build_rope"] = partial(
            llama3_rope, factor=float(scaling["factor"]), low_freq_factor=float(scaling["low_freq_factor"]),
            high_freq_factor=float(scaling["high_freq_factor"]),
            original_length=int(scaling["original_max_position_embeddings"]))
    return cfg.ModelConfig(
        vocab_size=int(config["vocab_size"]), num_layers=int(config["num_hidden_layers"]),
        max_seq_len=max(cache_length, int(config.get("max_position_embeddings") or cache_length)),
        embedding_dim=hidden, block_configs=block, final_norm_config=norm,
        lm_head_share_weight_with_embedding=bool(config.get("tie_word_embeddings", False)), **extra)


def llama3_rope(input_pos, n_elem: int, base: int, *, factor: float, low_freq_factor: float,
                high_freq_factor: float, original_length: int):
    """Llama 3's scaled rotary frequencies (transformers' `_compute_llama3_parameters`) as (cos, sin)."""
    import math

    import torch

    theta = 1.0 / (base ** (torch.arange(0, n_elem, 2).float() / n_elem))
    wavelength = 2 * math.pi / theta
    low_wavelength, high_wavelength = original_length / low_freq_factor, original_length / high_freq_factor
    scaled = torch.where(wavelength > low_wavelength, theta / factor, theta)
    smooth = (original_length / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor)
    medium = ~(wavelength < high_wavelength) * ~(wavelength > low_wavelength)
    theta = torch.where(medium, (1 - smooth) * scaled / factor + smooth * scaled, scaled)
    angles = torch.outer(input_pos.float(), theta)
    return torch.cos(angles), torch.sin(angles)


def tensor_names(config: dict):
    from litert_torch.generative.utilities.loader import ModelLoader

    layer = "model.layers.{}."
    common = dict(ff_down_proj=layer + "mlp.down_proj", attn_output_proj=layer + "self_attn.o_proj",
                  pre_attn_norm=layer + "input_layernorm", post_attn_norm=layer + "post_attention_layernorm",
                  embedding="model.embed_tokens", final_norm="model.norm")
    if not config.get("tie_word_embeddings", False):
        common["lm_head"] = "lm_head"
    if config["model_type"] == "phi3":
        return ModelLoader.TensorNames(ff_up_proj=layer + "mlp.gate_up_proj",
                                       attn_fused_qkv_proj=layer + "self_attn.qkv_proj", **common)
    if config["model_type"] == "qwen3":
        common.update(attn_query_norm=layer + "self_attn.q_norm", attn_key_norm=layer + "self_attn.k_norm")
    return ModelLoader.TensorNames(
        ff_up_proj=layer + "mlp.up_proj", ff_gate_proj=layer + "mlp.gate_proj",
        attn_query_proj=layer + "self_attn.q_proj", attn_key_proj=layer + "self_attn.k_proj",
        attn_value_proj=layer + "self_attn.v_proj", **common)


def import_model_builder():
    """litert-torch's `model_builder`, imported without TensorFlow.

    Its `layers/lora.py` imports `tensorflow.lite.python.schema_py_generated` (the TFLite flatbuffer
    schema, used only to read LoRA weights). ai-edge-litert ships the same generated module, so while
    that one import runs the TensorFlow name points at it; the stand-in names are removed afterwards,
    so nothing else takes them for an installed TensorFlow."""
    import importlib.util
    import sys
    import types

    from toolkit.common.quiet import quiet

    with quiet():
        # litert_torch imports torch's compiler, which asks importlib for tensorflow's spec: before the stand-ins
        import litert_torch  # noqa: F401
    stand_ins = {}
    if importlib.util.find_spec("tensorflow") is None and "litert_torch.generative.layers.lora" not in sys.modules:
        from ai_edge_litert import schema_py_generated

        for name in ("tensorflow", "tensorflow.lite", "tensorflow.lite.python"):
            stand_ins[name] = types.ModuleType(name)
        stand_ins["tensorflow.lite.python"].schema_py_generated = schema_py_generated
        stand_ins["tensorflow.lite.python.schema_py_generated"] = schema_py_generated
    sys.modules.update(stand_ins)
    try:
        with quiet():
            from litert_torch.generative.utilities import model_builder
    finally:
        for name in stand_ins:
            sys.modules.pop(name, None)
    return model_builder


def build_model(folder: Path, config: dict, cache_length: int):
    """The re-authored torch module with the folder's weights, a causal mask for `cache_length` positions."""
    why = why_not_convertible(config)
    if why:
        raise Unsupported(why)
    model_builder = import_model_builder()
    litert_config = model_config(config, cache_length)
    try:
        return model_builder.build_decoder_only_model(
            checkpoint_path=str(folder), config=litert_config, tensor_names=tensor_names(config),
            mask_cache_size=cache_length)
    except (KeyError, RuntimeError, ValueError) as error:
        from toolkit.common.text import first_line

        raise Unsupported(f"{architecture_name(config)}: its weights do not load into litert-torch's layers "
                          f"({first_line(error)})") from None
