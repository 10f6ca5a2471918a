"""Fit and latency without a device: count the work in a graph, hold it against a profile.

For ONNX (shapes from onnx's shape inference, symbolic dimensions taken as 1) and TFLite
(the interpreter's op and tensor details, read without delegates) this counts parameters,
FLOPs and MACs per op, weight bytes and activation memory (the peak of tensors alive at
once in execution order). The latency estimate is a roofline: each op takes the longer of
its compute at the accelerator's peak for the model's precision and its memory traffic at
the profile's bandwidth. Real runs add dispatch overhead and rarely reach peak, so the
estimate is a lower bound; small models are dominated by per-op overhead it does not model.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from toolkit.errors import BadInput

ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip", "Max", "Min", "Pow",
               "Sqrt", "Exp", "Erf", "Gelu", "HardSwish", "HardSigmoid", "PRelu", "Neg", "Abs", "Where",
               "ADD", "SUB", "MUL", "DIV", "RELU", "RELU6", "LOGISTIC", "TANH", "HARD_SWISH", "LEAKY_RELU",
               "PRELU", "MAXIMUM", "MINIMUM", "EXP", "SQRT", "RSQRT", "GELU", "POW", "SQUARED_DIFFERENCE"}
NORMALIZE = {"BatchNormalization": 2, "LayerNormalization": 8, "InstanceNormalization": 8, "Softmax": 5,
             "LogSoftmax": 5, "SOFTMAX": 5, "LOG_SOFTMAX": 5, "L2_NORMALIZATION": 3}
POOLS = {"MaxPool", "AveragePool", "MAX_POOL_2D", "AVERAGE_POOL_2D"}
GLOBAL_POOLS = {"GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceSum", "ReduceMax", "MEAN", "SUM",
                "REDUCE_MAX"}


@dataclass
class OpCount:
    name: str
    op: str
    flops: int
    macs: int
    bytes_moved: int
    output_shape: list
    folded: bool = False  # a runtime folds it away before running (see FOLDED)


@dataclass
class GraphCount:
    format: str
    precision: str
    parameters: int
    weight_bytes: int
    flops: int
    macs: int
    activation_peak_bytes: int
    activation_total_bytes: int
    ops: list[OpCount] = field(default_factory=list)

    def by_op_type(self) -> dict[str, dict]:
        table: dict[str, dict] = {}
        for op in self.ops:
            row = table.setdefault(op.op, {"count": 0, "flops": 0, "macs": 0})
            row["count"] += 1
            row["flops"] += op.flops
            row["macs"] += op.macs
        return dict(sorted(table.items(), key=lambda item: -item[1]["flops"]))


def _prod(shape) -> int:
    return int(math.prod(int(d) for d in shape)) if shape is not None else 0


# ------------------------------------------------------------------ ONNX


def count_onnx(path: Path, input_shapes: dict | None = None) -> GraphCount:
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from toolkit.safety.onnx import check_onnx_file

    model = check_onnx_file(path)  # parsed once, external data confined, weights not loaded
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    for graph_input in graph.input:  # symbolic dims: the resolved shapes (toolkit.bench.shapes), else 1
        given = (input_shapes or {}).get(graph_input.name)
        for axis, dim in enumerate(graph_input.type.tensor_type.shape.dim):
            if given and axis < len(given):
                dim.dim_value = int(given[axis])
            elif not dim.HasField("dim_value"):
                dim.dim_value = 1
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as error:
        raise BadInput(f"{path}: shape inference failed: {str(error).splitlines()[0][:200]}") from None
    shapes, itemsize = {}, {}
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        tensor_type = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in tensor_type.shape.dim]
        shapes[value.name] = dims
        itemsize[value.name] = _onnx_itemsize(tensor_type.elem_type)
    for name, init in initializers.items():
        shapes[name] = list(init.dims)
        itemsize[name] = _onnx_itemsize(init.data_type)
    constant_outputs = set()
    for node in graph.node:
        if node.op_type == "Constant":
            constant_outputs.update(node.output)
    parameters = sum(_prod(init.dims) for init in initializers.values() if len(init.dims) > 0)
    weight_bytes = sum(_prod(init.dims) * _onnx_itemsize(init.data_type) for init in initializers.values())
    ops = []
    graph_inputs = {i.name for i in graph.input} - set(initializers)
    graph_outputs = {o.name for o in graph.output}
    for node in graph.node:
        if node.op_type == "Constant":
            continue
        out_shape = shapes.get(node.output[0]) if node.output else None
        in_shapes = [shapes.get(name) for name in node.input]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        flops, macs = _onnx_flops(node.op_type, in_shapes, out_shape, attrs)
        moved = sum(_prod(shapes.get(n)) * itemsize.get(n, 4) for n in [*node.input, *node.output]
                    if n and shapes.get(n) is not None)
        # a quantize of a graph input or a dequantize of a graph output is real work; other Q/DQ fuse
        boundary = (node.op_type == "QuantizeLinear" and node.input[0] in graph_inputs) or (
            node.op_type == "DequantizeLinear" and node.output[0] in graph_outputs)
        ops.append(OpCount(node.name or node.output[0], node.op_type, flops, macs, moved, out_shape or [],
                           folded=node.op_type in FOLDED and not boundary))
    precision = _onnx_precision(graph, initializers, np, numpy_helper)
    produced = {out for node in graph.node if node.op_type != "Constant" for out in node.output}
    activations = [(node.output, [n for n in node.input if n in produced]) for node in graph.node
                   if node.op_type != "Constant"]
    inputs = [i.name for i in graph.input if i.name not in initializers]
    outputs = [o.name for o in graph.output]
    peak, total = _activation_memory(activations, inputs, outputs, lambda n: _prod(shapes.get(n)) * itemsize.get(n, 4)
                                     if shapes.get(n) is not None else 0)
    return GraphCount("onnx", precision, parameters, weight_bytes, sum(o.flops for o in ops),
                      sum(o.macs for o in ops), peak, total, ops)


def _onnx_itemsize(elem_type: int) -> int:
    return {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2, 21: 1, 22: 1}.get(
        elem_type, 4)


def _onnx_flops(op: str, ins: list, out, attrs: dict) -> tuple[int, int]:
    out_elems = _prod(out) if out else 0
    if op in ("Conv", "ConvInteger", "QLinearConv"):
        weight = ins[3] if op == "QLinearConv" else ins[1]
        if not weight or not out:
            return 0, 0
        per_output = _prod(weight[1:])  # Cin/group x kh x kw
        macs = out_elems * per_output
        return 2 * macs + (out_elems if len(ins) > 2 and op == "Conv" else 0), macs
    if op == "ConvTranspose":
        if not ins[0] or not ins[1]:
            return 0, 0
        macs = _prod(ins[0]) * _prod(ins[1][1:])
        return 2 * macs, macs
    if op in ("Gemm", "MatMul", "MatMulInteger", "QLinearMatMul", "MatMulNBits"):
        a = ins[0]
        if not a or not out:
            return 0, 0
        k = a[-1] if not (op == "Gemm" and attrs.get("transA")) else a[0]
        macs = out_elems * int(k)
        return 2 * macs + (out_elems if op == "Gemm" and len(ins) > 2 else 0), macs
    if op in ELEMENTWISE:
        return out_elems, 0
    if op in NORMALIZE:
        return NORMALIZE[op] * out_elems, 0
    if op in POOLS:
        return out_elems * _prod(attrs.get("kernel_shape", [1])), 0
    if op in GLOBAL_POOLS:
        return _prod(ins[0]) if ins and ins[0] else 0, 0
    return 0, 0


def _onnx_precision(graph, initializers, np, numpy_helper) -> str:
    ops = {node.op_type for node in graph.node}
    if ops & {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"} or (
            "DequantizeLinear" in ops and any(init.data_type in (2, 3) for init in initializers.values())):
        return "int8"
    if "MatMulNBits" in ops:
        return "int4"
    if any(init.data_type == 10 for init in initializers.values()):
        return "fp16"
    return "fp32"


def _activation_memory(nodes, inputs, outputs, size_of) -> tuple[int, int]:
    """Peak bytes of activations alive together when ops run in order, and their total."""
    last_use: dict[str, int] = {}
    for index, (_, consumed) in enumerate(nodes):
        for name in consumed:
            last_use[name] = index
    for name in outputs:
        last_use[name] = len(nodes)
    alive = {name: size_of(name) for name in inputs}
    for name in inputs:
        last_use.setdefault(name, 0)
    peak = total = sum(alive.values())
    for index, (produced, _) in enumerate(nodes):
        for name in produced:
            if name:
                alive[name] = size_of(name)
                total += alive[name]
        peak = max(peak, sum(alive.values()))
        for name in [n for n in alive if last_use.get(n, index) <= index]:
            del alive[name]
    return peak, total


# ------------------------------------------------------------------ TFLite


def count_tflite(path: Path) -> GraphCount:
    import numpy as np

    from toolkit.safety.tflite import check_tflite_file

    check_tflite_file(path)
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        from toolkit.errors import missing_library

        raise missing_library("ai-edge-litert") from None
    try:
        interpreter = Interpreter(model_path=str(path),
                                  experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        interpreter.allocate_tensors()
        op_details = interpreter._get_ops_details()
        tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    except Exception as error:  # a broken file is exit 2, a valid one LiteRT cannot run (custom op) exit 3
        from toolkit.runtime import tflite_load_error

        raise tflite_load_error(path, error) from None
    inputs = [d["index"] for d in interpreter.get_input_details()]
    outputs = [d["index"] for d in interpreter.get_output_details()]
    produced = {int(i) for op in op_details for i in op["outputs"]}
    constants = {int(i) for op in op_details for i in op["inputs"] if i >= 0} - produced - set(inputs)

    def shape(index):
        return [int(d) for d in tensors[index]["shape"]] if index in tensors else None

    def nbytes(index):
        return _prod(shape(index)) * np.dtype(tensors[index]["dtype"]).itemsize if index in tensors else 0

    parameters = sum(_prod(shape(i)) for i in constants if np.dtype(tensors[i]["dtype"]).kind in "fiu"
                     and len(shape(i) or []) > 0 and not _is_shape_tensor(tensors[i], np))
    weight_bytes = sum(nbytes(i) for i in constants)
    ops = []
    for op in op_details:
        name = op["op_name"]
        if name == "DELEGATE":
            continue
        ins = [shape(int(i)) if i >= 0 else None for i in op["inputs"]]
        out = shape(int(op["outputs"][0])) if len(op["outputs"]) else None
        flops, macs = _tflite_flops(name, ins, out)
        moved = sum(nbytes(int(i)) for i in [*op["inputs"], *op["outputs"]] if i >= 0)
        ops.append(OpCount(f"{name}_{op['index']}", name, flops, macs, moved, out or [], folded=name in FOLDED))
    activations = [([int(i) for i in op["outputs"]], [int(i) for i in op["inputs"] if i in produced])
                   for op in op_details if op["op_name"] != "DELEGATE"]
    peak, total = _activation_memory(activations, inputs, outputs, nbytes)
    weight_kinds = {np.dtype(tensors[i]["dtype"]).name for i in constants if len(shape(i) or []) >= 2}
    input_kinds = {np.dtype(tensors[i]["dtype"]).name for i in inputs}
    if weight_kinds & {"int8", "uint8"}:
        precision = "int8"
    elif "int4" in weight_kinds:
        precision = "int4"
    elif weight_kinds == {"float16"} or input_kinds == {"float16"}:
        precision = "fp16"
    else:
        precision = "fp32"
    return GraphCount("tflite", precision, parameters, weight_bytes, sum(o.flops for o in ops),
                      sum(o.macs for o in ops), peak, total, ops)


def _is_shape_tensor(detail, np) -> bool:
    return np.dtype(detail["dtype"]).name in ("int32", "int64") and len(detail["shape"]) == 1


def _tflite_flops(op: str, ins: list, out) -> tuple[int, int]:
    out_elems = _prod(out) if out else 0
    if op in ("CONV_2D", "CONV_3D") and len(ins) > 1 and ins[1]:
        macs = out_elems * _prod(ins[1][1:])  # filter [Cout, kh, kw, Cin]
        return 2 * macs + (out_elems if len(ins) > 2 and ins[2] else 0), macs
    if op == "DEPTHWISE_CONV_2D" and len(ins) > 1 and ins[1]:
        macs = out_elems * _prod(ins[1][1:3])  # filter [1, kh, kw, Cout]
        return 2 * macs + (out_elems if len(ins) > 2 and ins[2] else 0), macs
    if op == "TRANSPOSE_CONV" and len(ins) > 2 and ins[1] and ins[2]:
        macs = _prod(ins[2]) * _prod(ins[1][:3])
        return 2 * macs, macs
    if op == "FULLY_CONNECTED" and len(ins) > 1 and ins[1]:
        macs = out_elems * int(ins[1][-1])  # weights [units, K]
        return 2 * macs + (out_elems if len(ins) > 2 and ins[2] else 0), macs
    if op == "BATCH_MATMUL" and ins and ins[0]:
        macs = out_elems * int(ins[0][-1])
        return 2 * macs, macs
    if op in ELEMENTWISE:
        return out_elems, 0
    if op in NORMALIZE:
        return NORMALIZE[op] * out_elems, 0
    if op in POOLS:
        return out_elems * 4, 0  # the kernel size is in the op's options, not its details: 2x2 assumed
    if op in GLOBAL_POOLS:
        return _prod(ins[0]) if ins and ins[0] else 0, 0
    return 0, 0


# ------------------------------------------------------------------ against a profile


def count_graph(path: Path, input_shapes: dict | None = None) -> GraphCount:
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return count_onnx(path, input_shapes)
    if suffix == ".tflite":
        return count_tflite(path)
    from toolkit.errors import Unsupported

    raise Unsupported(f"{path.name}: estimates cover .onnx and .tflite graphs (found {suffix or 'no suffix'})")


def roofline(count: GraphCount, peak_gops: float, bandwidth_gbps: float) -> dict:
    """Per-op max(compute, memory) time, summed; says which bound dominates."""
    compute_s = memory_s = total_s = 0.0
    for op in count.ops:
        op_compute = op.flops / (peak_gops * 1e9) if peak_gops else 0.0
        op_memory = op.bytes_moved / (bandwidth_gbps * 1e9) if bandwidth_gbps else 0.0
        compute_s += op_compute
        memory_s += op_memory
        total_s += max(op_compute, op_memory)
    return {"latency_ms": round(total_s * 1000, 6), "compute_ms": round(compute_s * 1000, 6),
            "memory_ms": round(memory_s * 1000, 6), "bound": "compute" if compute_s >= memory_s else "memory",
            "arithmetic_intensity": round(count.flops / max(1, sum(o.bytes_moved for o in count.ops)), 3)}


CONVOLUTIONS = {"Conv", "ConvInteger", "QLinearConv", "ConvTranspose", "CONV_2D", "CONV_3D", "DEPTHWISE_CONV_2D",
                "TRANSPOSE_CONV"}
MATMULS = {"Gemm", "MatMul", "MatMulInteger", "QLinearMatMul", "MatMulNBits", "FULLY_CONNECTED", "BATCH_MATMUL"}
# nodes a runtime folds away before it runs the graph: constants and the shape arithmetic of an
# exported graph (fixed shapes make it constant), and the quantize/dequantize pairs that a QDQ
# graph fuses into its integer kernels
FOLDED = {"Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "ConstantOfShape", "Range", "Cast", "Equal",
          "Expand", "Slice", "QuantizeLinear", "DequantizeLinear", "Identity", "Reshape", "Flatten",
          "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "DEQUANTIZE", "SHAPE", "GATHER", "STRIDED_SLICE", "CAST"}
OP_CLASSES = ("conv", "matmul", "elementwise", "other")


def op_class(op: str) -> str:
    """conv, matmul, elementwise or other: the classes whose efficiency a calibration learns."""
    if op in CONVOLUTIONS:
        return "conv"
    if op in MATMULS:
        return "matmul"
    if op in ELEMENTWISE:
        return "elementwise"
    return "other"


def roofline_by_class(count: GraphCount, peak_gops: float, bandwidth_gbps: float) -> dict:
    """The roofline split by op class: {class: {roofline_ms, compute_ms, memory_ms, flops, nodes}}, the
    ops a runtime folds away in a class of their own (`folded`), and `dispatched_nodes`, the nodes
    it still dispatches (what per-node overhead multiplies)."""
    table = {name: {"roofline_ms": 0.0, "compute_ms": 0.0, "memory_ms": 0.0, "flops": 0, "nodes": 0}
             for name in (*OP_CLASSES, "folded")}
    for op in count.ops:
        row = table["folded" if op.folded else op_class(op.op)]
        compute = op.flops / (peak_gops * 1e9) if peak_gops else 0.0
        memory = op.bytes_moved / (bandwidth_gbps * 1e9) if bandwidth_gbps else 0.0
        row["roofline_ms"] += max(compute, memory) * 1000
        row["compute_ms"] += compute * 1000
        row["memory_ms"] += memory * 1000
        row["flops"] += op.flops
        row["nodes"] += 1
    for row in table.values():
        for key in ("roofline_ms", "compute_ms", "memory_ms"):
            row[key] = round(row[key], 6)
    return {"classes": table, "dispatched_nodes": len(count.ops) - table["folded"]["nodes"]}


def _peak_for(accelerator: dict, precision: str) -> tuple[float | None, str]:
    """The accelerator's peak for the model's precision, falling back to the nearest it states."""
    peaks = accelerator.get("peak_gops") or {}
    order = {"int4": ["int4", "int8", "fp16", "fp32"], "int8": ["int8", "fp16", "fp32"],
             "fp16": ["fp16", "bf16", "fp32"], "bf16": ["bf16", "fp16", "fp32"], "fp32": ["fp32"]}[precision]
    for candidate in order:
        value = (peaks.get(candidate) or {}).get("value")
        if isinstance(value, int | float) and value > 0:
            return float(value), candidate
    return None, ""


def estimate(model_path, profile, input_shapes: dict | None = None) -> dict:
    """Fit and roofline latency of a model on a profile, marked `estimate` with its reasons.

    `input_shapes` ({name: [dims]}) fills the graph's symbolic dimensions (default 1)."""
    from toolkit.artifacts import resolve_model

    path = resolve_model(model_path)
    count = count_graph(path, input_shapes)
    file_bytes = path.stat().st_size
    ram_mb = profile.value("ram_mb")
    storage_mb = profile.value("flash_mb") if profile.value("flash_mb") is not None else (
        profile.value("storage_gb") * 1000 if profile.value("storage_gb") is not None else None)
    need_ram = (file_bytes + count.activation_peak_bytes) / 2**20
    fit = {"model_mb": round(file_bytes / 2**20, 4), "activation_peak_mb": round(count.activation_peak_bytes / 2**20, 4),
           "ram_needed_mb": round(need_ram, 4), "ram_mb": ram_mb,
           "storage_mb": storage_mb, "fits_ram": ram_mb is None or need_ram <= ram_mb,
           "fits_storage": storage_mb is None or file_bytes / 2**20 <= storage_mb}
    fit["fits"] = fit["fits_ram"] and fit["fits_storage"]
    fit["note"] = ("model + peak activations held in RAM (a runtime arena adds a little more); "
                   + ("flash holds the model" if profile.value("flash_mb") is not None else "storage holds the model"))
    bandwidth = profile.value("memory_bandwidth_gbps")
    per_accelerator = []
    for accelerator in profile.accelerators():
        peak, used = _peak_for(accelerator, count.precision)
        if peak is None:
            continue
        row = {"accelerator": accelerator["name"], "type": accelerator.get("type", ""), "precision": used,
               "peak_gops": peak, "memory_bandwidth_gbps": bandwidth, **roofline(count, peak, bandwidth)}
        figure = accelerator["peak_gops"][used]
        row["peak_basis"] = figure.get("source") or f"estimate: {figure.get('estimate')}"
        row["by_class"] = roofline_by_class(count, peak, bandwidth)
        per_accelerator.append(row)
    primary = next((row for row in per_accelerator if row["type"] == "cpu"), per_accelerator[0] if per_accelerator
                   else None)
    return {
        "estimate": True,
        "why": ("roofline: each op takes max(FLOPs / peak, bytes moved / memory bandwidth); a lower bound that "
                "ignores per-op dispatch overhead and assumes peak throughput"),
        "model": {"path": str(path), "format": count.format, "precision": count.precision,
                  "size_bytes": file_bytes},
        "device": profile.name,
        "parameters": count.parameters,
        "weight_bytes": count.weight_bytes,
        "flops": count.flops,
        "macs": count.macs,
        "activation_peak_bytes": count.activation_peak_bytes,
        "activation_total_bytes": count.activation_total_bytes,
        "ops": count.by_op_type(),
        "node_count": len(count.ops),
        "fit": fit,
        "latency": primary,
        "latency_by_accelerator": per_accelerator,
    }


def as_dict(count: GraphCount) -> dict:
    return asdict(count)
