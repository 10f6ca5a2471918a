"""Estimate a language model's speed on a device profile, with no device attached.

Decode is memory-bound: every token reads every weight byte and the KV cache held so far, so
one decode step takes (weight bytes + KV bytes at that step) / memory bandwidth. Prefill is
compute-bound: 2 × parameters × prompt tokens FLOPs over the CPU's peak for the precision the
matrix products run in (a floor of reading the weights once). Both are lower bounds on time
(upper bounds on tokens/s): no dispatch overhead, peak bandwidth and throughput.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from toolkit.errors import BadInput

logger = logging.getLogger(__name__)

PAST_PREFIX = "past_key_values."
NBITS_WEIGHT_INPUTS = (1, 2, 3)  # MatMulNBits' packed weight, scales, zero points
HALF_BYTE_TYPES = (21, 22)  # onnx.TensorProto.UINT4, INT4: dims count values, stored two a byte


@dataclass
class LmFigures:
    """What the estimate needs from the graph."""

    weight_bytes: int  # every initializer, as stored (int4 blocks, scales, float tensors)
    parameters: int  # weights counted as numbers (an int4 MatMulNBits weight counts K × N)
    kv_bytes_per_token: int  # all layers' key + value for one cached token
    compute_precision: str  # what the matrix products run in: fp32, fp16 or int8


def graph_figures(onnx_path: Path, head_dim: int | None) -> LmFigures:
    import numpy as np
    import onnx
    from onnx import helper

    model = onnx.load(str(onnx_path), load_external_data=False)
    graph = model.graph
    nbits_aux, parameters, precision = set(), 0, "fp32"
    for node in graph.node:
        if node.op_type == "MatMulNBits":
            attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            parameters += int(attributes["K"]) * int(attributes["N"])
            nbits_aux.update(node.input[i] for i in NBITS_WEIGHT_INPUTS if i < len(node.input))
            if attributes.get("accuracy_level") == 4:
                precision = "int8"  # int4 weights, int8 compute (onnxruntime's accuracy_level 4)
        elif node.op_type == "GatherBlockQuantized":  # an int4 embedding: its scales and zero points are no weights
            nbits_aux.update(node.input[i] for i in (2, 3) if i < len(node.input))
    weight_bytes = 0
    for tensor in graph.initializer:
        count = int(np.prod(tensor.dims)) if tensor.dims else 1
        if tensor.data_type in HALF_BYTE_TYPES:
            weight_bytes += (count + 1) // 2  # two 4-bit values a byte
        else:
            weight_bytes += count * np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
        if tensor.name not in nbits_aux and tensor.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16,
                                                                  onnx.TensorProto.BFLOAT16, *HALF_BYTE_TYPES):
            parameters += count
            if tensor.data_type == onnx.TensorProto.FLOAT16 and precision == "fp32":
                precision = "fp16"
    kv_bytes = 0
    for value in graph.input:
        if not value.name.startswith(PAST_PREFIX):
            continue
        dims = value.type.tensor_type.shape.dim
        heads = dims[1].dim_value if len(dims) == 4 else 0
        size = dims[3].dim_value if len(dims) == 4 and dims[3].dim_value else head_dim
        if not heads or not size:
            raise BadInput(f"{onnx_path}: the KV cache input {value.name} does not fix its heads and head size")
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)).itemsize
        kv_bytes += heads * size * itemsize
    return LmFigures(weight_bytes, parameters, kv_bytes, precision)


def significant(value: float) -> float:
    """Six significant figures: a tiny model's step takes microseconds, a large one's seconds."""
    return float(f"{value:.6g}")


def estimate_decode(figures: LmFigures, *, prompt_tokens: int, new_tokens: int, bandwidth_gbps: float,
                    peak_gops: float) -> dict:
    """The arithmetic: TTFT from compute (a floor of one weight read), decode from memory bandwidth.

    Decode step i (1 .. new_tokens - 1) reads the weights and a cache of prompt + i tokens, so
    the mean step reads the cache at prompt + new_tokens / 2 tokens."""
    bandwidth = bandwidth_gbps * 1e9
    prefill_flops = 2 * figures.parameters * prompt_tokens
    compute_ms = prefill_flops / (peak_gops * 1e9) * 1000
    weights_ms = figures.weight_bytes / bandwidth * 1000
    mean_context = prompt_tokens + new_tokens / 2
    step_bytes = figures.weight_bytes + figures.kv_bytes_per_token * mean_context
    decode_ms = step_bytes / bandwidth * 1000
    return {"ttft_ms": significant(max(compute_ms, weights_ms)), "prefill_flops": prefill_flops,
            "prefill_bound": "compute" if compute_ms >= weights_ms else "memory",
            "decode_ms_per_token": significant(decode_ms), "decode_tokens_per_s": significant(1000 / decode_ms),
            "decode_bytes_per_token": int(step_bytes), "mean_context_tokens": mean_context,
            "kv_cache_bytes": figures.kv_bytes_per_token * (prompt_tokens + new_tokens)}


PEAK_ORDER = {"int8": ("int8", "fp16", "fp32"), "fp16": ("fp16", "fp32"), "fp32": ("fp32",)}


def peak_for(accelerator: dict, precision: str) -> tuple[float | None, str]:
    """The accelerator's peak GOPS for `precision`, else the nearest wider precision it states."""
    peaks = accelerator.get("peak_gops") or {}
    for candidate in PEAK_ORDER[precision]:
        value = (peaks.get(candidate) or {}).get("value")
        if isinstance(value, int | float) and value > 0:
            return float(value), candidate
    return None, ""


def estimate_lm(onnx_path: Path, config_head_dim: int | None, profile, *, prompt_tokens: int,
                new_tokens: int) -> dict:
    """The estimate record of an exported LM on a device profile (`language_model` of the bench record)."""
    figures = graph_figures(onnx_path, config_head_dim)
    bandwidth = profile.figure("memory_bandwidth_gbps")
    cpu = next((a for a in profile.accelerators() if a.get("type") == "cpu"), None)
    if cpu is None or bandwidth is None:
        raise BadInput(f"device profile {profile.name} gives no CPU peak or memory bandwidth to estimate from")
    peak, used = peak_for(cpu, figures.compute_precision)
    if peak is None:
        raise BadInput(f"device profile {profile.name}: its CPU states no peak throughput")
    result = estimate_decode(figures, prompt_tokens=prompt_tokens, new_tokens=new_tokens,
                             bandwidth_gbps=float(bandwidth["value"]), peak_gops=peak)
    peak_figure = cpu["peak_gops"][used]
    return {"estimate": True, "prompt_tokens": prompt_tokens, "new_tokens": new_tokens, **result,
            **asdict(figures), "memory_bandwidth_gbps": float(bandwidth["value"]),
            "memory_bandwidth_basis": bandwidth.get("source") or f"estimate: {bandwidth.get('estimate')}",
            "peak_gops": peak, "peak_precision": used,
            "peak_basis": peak_figure.get("source") or f"estimate: {peak_figure.get('estimate')}",
            "why": ("decode: every weight byte and the KV cache read per token at the profile's memory bandwidth; "
                    "prefill: 2 x parameters x prompt tokens FLOPs at the CPU's peak; lower bounds on time")}
