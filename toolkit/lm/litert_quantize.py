"""Block-wise int4 for a LiteRT language model: `edgeward quantize exported/lm-tflite --mode int4-weight`.

ai-edge-quantizer 0.10's policy has no block-wise *weight-only* int4 for FULLY_CONNECTED (only
channel-wise, which is the `weight-int4` mode); its block-wise int4 is the dynamic recipe
(`dynamic_wi4_afp32` with BLOCKWISE_32/64/128 granularity): int4 weights in blocks of 32, 64 or 128
along the input axis, activations quantized to int8 at run time, which XNNPACK runs with its int4
kernels. That is what litert-torch's own `dynamic_int4_block32/128` conversion recipes produce.
The matrix multiplies (FULLY_CONNECTED: attention, MLP and an untied LM head) get those blocks; the
embedding table (EMBEDDING_LOOKUP, often the largest tensor of a small model) gets int4 weights with
one scale per row, as litert-torch's `dynamic_wi8_emb4` recipe does (the policy has no block-wise
embedding). A layer whose input width is not a multiple of the block fails in the
quantizer and the mode is refused (exit 3) naming the block, so a smaller one can be tried.
"""

from __future__ import annotations

import logging
from pathlib import Path

from toolkit.quantize.modes import QuantMode

logger = logging.getLogger(__name__)

BLOCK_SIZES = (32, 64, 128)
DEFAULT_BLOCK = 32
LITERT_INT4 = QuantMode(
    "int4-weight", "tflite", "toolkit.lm.litert_quantize:int4_block", False,
    "LiteRT language model: int4 block-wise matrix weights (dynamic_wi4_afp32, block 32/64/128), int4 embedding",
    "ai-edge-quantizer",
)


def int4_block(model_path: Path, out_path: Path, *, block_size: int = DEFAULT_BLOCK, **_) -> dict:
    """Quantize `model_path` (a LiteRT LM) into `out_path` with block-wise int4 weights; notes for the manifest."""
    from ai_edge_quantizer import quantizer, recipe_manager
    from ai_edge_quantizer.qtyping import QuantGranularity, TFLOperationName

    from toolkit.common.quiet import quiet
    from toolkit.common.text import first_line
    from toolkit.errors import BadInput, Unsupported

    if block_size not in BLOCK_SIZES:
        raise BadInput(f"--block-size {block_size}: LiteRT int4 takes a block of {', '.join(map(str, BLOCK_SIZES))}")
    manager = recipe_manager.RecipeManager()
    manager.add_dynamic_config(regex=".*", operation_name=TFLOperationName.FULLY_CONNECTED, num_bits=4,
                               granularity=getattr(QuantGranularity, f"BLOCKWISE_{block_size}"))
    manager.add_weight_only_config(regex=".*", operation_name=TFLOperationName.EMBEDDING_LOOKUP, num_bits=4,
                                   granularity=QuantGranularity.CHANNELWISE)
    try:
        with quiet():
            engine = quantizer.Quantizer(str(model_path), manager.get_quantization_recipe())
            result = engine.quantize(enable_progress_report=False)
    except ValueError as error:
        raise Unsupported(f"int4 blocks of {block_size} do not fit {model_path.name} ({first_line(error)}): "
                          "try a smaller --block-size") from None
    out_path.write_bytes(bytes(result.quantized_model))
    return {"recipe": "dynamic_wi4_afp32", "granularity": f"blockwise_{block_size}", "block_size": block_size,
            "ops": ["FULLY_CONNECTED"], "embedding": "int4 weight-only, one scale per row"}
