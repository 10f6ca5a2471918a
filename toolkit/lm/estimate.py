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
    # A LiteRT model's cache has a fixed number of positions, and every decode step attends over all of
    # them (the mask hides the empty ones), so each step reads the whole cache; None: the cache grows.
    cache_positions: int | None = None


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


# TFLite tensor types (schema TensorType) -> bits a value; weights are stored in these
TFLITE_BITS = {0: 32, 1: 16, 2: 32, 3: 8, 4: 64, 6: 8, 7: 16, 9: 8, 10: 64, 17: 4, 18: 16, 20: 4}
TFLITE_WEIGHT_TYPES = (0, 1, 3, 9, 17, 18, 20)  # FLOAT32, FLOAT16, UINT8, INT8, INT4, BFLOAT16, UINT4
TFLITE_INTEGER_WEIGHTS = (3, 9, 17, 20)
BLOCKWISE_DETAILS = 2  # schema QuantizationDetails.BlockwiseQuantization
LITERT_CACHE_PREFIX = "kv_cache_"
LITERT_DECODE = "decode"


def tflite_figures(tflite_path: Path) -> LmFigures:
    """The same figures from a LiteRT LM's flatbuffer, read in place (no buffer copied).

    Weights: every constant buffer once (the prefill and decode signatures share them), as stored.
    Parameters: the values of float and integer constants, less a block-wise int4 weight's scales and zero
    points. The matrix products run in int8 where a FULLY_CONNECTED takes integer weights directly
    (dynamic-range quantization: XNNPACK quantizes the activations at run time), else in fp32 (fp16 weights
    are dequantized first). The KV cache: the decode signature's kv_cache_* inputs (batch, positions, kv
    heads, head size)."""
    import mmap

    import numpy as np
    from ai_edge_litert import schema_py_generated as schema

    from toolkit.safety.tflite import check_tflite_file

    check_tflite_file(tflite_path)
    with open(tflite_path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        model = schema.Model.GetRootAs(data, 0)
        fully_connected = {i for i in range(model.OperatorCodesLength())
                           if max(model.OperatorCodes(i).BuiltinCode(),
                                  model.OperatorCodes(i).DeprecatedBuiltinCode())
                           == schema.BuiltinOperator.FULLY_CONNECTED}
        constants: dict[int, tuple[int, int]] = {}  # buffer -> (bytes as stored, values)
        auxiliary: set[int] = set()  # buffers of block-wise scales and zero points
        precision = "fp32"
        for s_index in range(model.SubgraphsLength()):
            subgraph = model.Subgraphs(s_index)
            for t_index in range(subgraph.TensorsLength()):
                tensor = subgraph.Tensors(t_index)
                buffer_index = tensor.Buffer()
                stored = buffer_bytes(model, buffer_index)
                if not stored or buffer_index in constants:
                    continue
                values = int(np.prod(tensor.ShapeAsNumpy())) if tensor.ShapeLength() else 1
                counted = values if tensor.Type() in TFLITE_WEIGHT_TYPES else 0
                constants[buffer_index] = (stored, counted)
                quantization = tensor.Quantization()
                if quantization is not None and quantization.DetailsType() == BLOCKWISE_DETAILS:
                    details = schema.BlockwiseQuantization()
                    table = quantization.Details()
                    details.Init(table.Bytes, table.Pos)
                    for aux in (details.Scales(), details.ZeroPoints()):
                        if aux >= 0:
                            auxiliary.add(subgraph.Tensors(aux).Buffer())
            for o_index in range(subgraph.OperatorsLength()):
                operator = subgraph.Operators(o_index)
                if operator.OpcodeIndex() not in fully_connected or operator.InputsLength() < 2:
                    continue
                weight = subgraph.Tensors(operator.Inputs(1))
                if weight.Type() in TFLITE_INTEGER_WEIGHTS and buffer_bytes(model, weight.Buffer()):
                    precision = "int8"
        kv_bytes, positions = litert_cache(model, schema)
    weight_bytes = sum(stored for stored, _ in constants.values())
    parameters = sum(values for buffer, (_, values) in constants.items() if buffer not in auxiliary)
    return LmFigures(weight_bytes, parameters, kv_bytes, precision, cache_positions=positions)


def buffer_bytes(model, index: int) -> int:
    """Bytes stored in buffer `index`: inline data, or a region past the flatbuffer (models over 2 GB)."""
    if index <= 0 or index >= model.BuffersLength():
        return 0
    buffer = model.Buffers(index)
    return int(buffer.DataLength() or (buffer.Size() if buffer.Offset() > 1 else 0))


def litert_cache(model, schema) -> tuple[int, int]:
    """(KV bytes per cached token, cache positions) from the decode signature's kv_cache_* inputs."""
    import numpy as np

    for d_index in range(model.SignatureDefsLength()):
        signature = model.SignatureDefs(d_index)
        if (signature.SignatureKey() or b"").decode() != LITERT_DECODE:
            continue
        subgraph = model.Subgraphs(signature.SubgraphIndex())
        per_token, positions = 0, None
        for i_index in range(signature.InputsLength()):
            entry = signature.Inputs(i_index)
            if not (entry.Name() or b"").decode().startswith(LITERT_CACHE_PREFIX):
                continue
            tensor = subgraph.Tensors(entry.TensorIndex())
            shape = [int(x) for x in tensor.ShapeAsNumpy()]
            if len(shape) != 4 or tensor.Type() not in TFLITE_BITS:
                raise BadInput(f"unexpected LiteRT KV cache input {entry.Name().decode()} of shape {shape}")
            positions = shape[1]
            per_token += int(np.prod(shape)) // shape[1] * TFLITE_BITS[tensor.Type()] // 8
        if positions:
            return per_token, positions
    raise BadInput("the TFLite model has no decode signature with kv_cache_* inputs: not a LiteRT language model")


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
    mean_context = figures.cache_positions or prompt_tokens + new_tokens / 2
    step_bytes = figures.weight_bytes + figures.kv_bytes_per_token * mean_context
    held = figures.cache_positions or prompt_tokens + new_tokens
    decode_ms = step_bytes / bandwidth * 1000
    return {"ttft_ms": significant(max(compute_ms, weights_ms)), "prefill_flops": prefill_flops,
            "prefill_bound": "compute" if compute_ms >= weights_ms else "memory",
            "decode_ms_per_token": significant(decode_ms), "decode_tokens_per_s": significant(1000 / decode_ms),
            "decode_bytes_per_token": int(step_bytes), "mean_context_tokens": mean_context,
            "kv_cache_bytes": int(figures.kv_bytes_per_token * held)}


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
    if Path(onnx_path).suffix.lower() == ".tflite":
        figures = tflite_figures(Path(onnx_path))
    else:
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
            "why": ("decode: every weight byte and the KV cache read per token at the profile's memory bandwidth"
                    + (" (LiteRT: the whole fixed-size cache every step)" if figures.cache_positions else "")
                    + "; prefill: 2 x parameters x prompt tokens FLOPs at the CPU's peak; lower bounds on time")}
