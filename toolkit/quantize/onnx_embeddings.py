"""Graph rewrites for dynamic-int8-int4emb: int4 embedding tables and an unfused LayerNorm.

See `toolkit.quantize.onnx_modes.dynamic_int8_int4emb` for the measurements behind them.
"""

from __future__ import annotations

import contextlib

import numpy as np

EMBEDDING_BLOCK_SIZE = 32
EMBEDDING_MIN_ELEMENTS = 65_536  # smaller tables (token types, short position tables) stay float
INT4_CLIP_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75)


def opset_version(model) -> int:
    return next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), 0)


def quantize_int4_rows(table: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int4 per block of `block` columns; per block, the clip ratio with the least squared error.

    Returns (packed uint8 [rows, cols/2], two values a byte, low nibble first, stored +8;
    float16 scales [rows, cols/block, 1]).
    """
    rows, cols = table.shape
    blocks = table.reshape(rows, cols // block, block).astype(np.float32)
    peak = np.abs(blocks).max(axis=-1, keepdims=True)
    best_q = best_scale = best_error = None
    for ratio in INT4_CLIP_RATIOS:
        scale = (peak * ratio / 7.0).astype(np.float16).astype(np.float32)
        scale[scale == 0] = 1.0
        q = np.clip(np.round(blocks / scale), -8, 7)
        error = ((q * scale - blocks) ** 2).sum(axis=-1, keepdims=True)
        if best_error is None:
            best_q, best_scale, best_error = q, scale, error
            continue
        better = error < best_error
        best_q = np.where(better, q, best_q)
        best_scale = np.where(better, scale, best_scale)
        best_error = np.minimum(error, best_error)
    unsigned = (best_q.reshape(rows, cols) + 8).astype(np.uint8)
    packed = (unsigned[:, 0::2] | (unsigned[:, 1::2] << 4)).astype(np.uint8)
    return packed, best_scale.astype(np.float16)


def int4_embeddings(model, excluded: set[str], block: int = EMBEDDING_BLOCK_SIZE) -> int:
    """Rewrite Gather(table, ids) over a large constant float table as an int4 lookup, in place.

    table -> packed uint8 [rows, cols/2] + float16 scales [rows, cols/block, 1]; after the
    Gather a 256-entry table turns each byte into its two values (-8..7), which are scaled
    per block. Standard ONNX ops only (opset 13+), so any runtime runs it.
    """
    from onnx import TensorProto, helper, numpy_helper

    if opset_version(model) < 13:
        return 0
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    ranks = _value_ranks(model)
    lut_name = "edgeward_int4_lut"
    byte = np.arange(256)
    lut = np.stack([(byte & 15) - 8, (byte >> 4) - 8], axis=1).astype(np.float32)
    new_nodes, done = [], {}
    for node in model.graph.node:
        table = initializers.get(node.input[0]) if node.op_type == "Gather" and node.domain in ("", "ai.onnx") else None
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        rank = ranks.get(node.input[1]) if len(node.input) > 1 else None
        if (table is None or node.name in excluded or axis != 0 or rank is None or len(table.dims) != 2
                or table.data_type != TensorProto.FLOAT or table.dims[1] % block
                or table.dims[0] * table.dims[1] < EMBEDDING_MIN_ELEMENTS):
            new_nodes.append(node)
            continue
        rows, cols = table.dims
        base = node.name or node.output[0]
        if table.name not in done:
            packed, scales = quantize_int4_rows(numpy_helper.to_array(table), block)
            model.graph.initializer.extend([numpy_helper.from_array(packed, f"{table.name}_int4"),
                                            numpy_helper.from_array(scales, f"{table.name}_int4_scales")])
            done[table.name] = True
        keep = [0] * rank
        model.graph.initializer.extend([
            numpy_helper.from_array(np.array(keep + [cols // block, block], np.int64), f"{base}_int4_blocks"),
            numpy_helper.from_array(np.array(keep + [cols], np.int64), f"{base}_int4_shape"),
        ])
        ids = node.input[1]
        new_nodes += [
            helper.make_node("Gather", [f"{table.name}_int4", ids], [f"{base}_int4_bytes"], name=f"{base}_int4_gather"),
            helper.make_node("Cast", [f"{base}_int4_bytes"], [f"{base}_int4_index"], name=f"{base}_int4_index",
                             to=TensorProto.INT32),
            helper.make_node("Gather", [lut_name, f"{base}_int4_index"], [f"{base}_int4_values"], name=f"{base}_int4_unpack"),
            helper.make_node("Reshape", [f"{base}_int4_values", f"{base}_int4_blocks"], [f"{base}_int4_blocked"],
                             name=f"{base}_int4_blocked"),
            helper.make_node("Gather", [f"{table.name}_int4_scales", ids], [f"{base}_int4_scale16"],
                             name=f"{base}_int4_scale_gather"),
            helper.make_node("Cast", [f"{base}_int4_scale16"], [f"{base}_int4_scale"], name=f"{base}_int4_scale",
                             to=TensorProto.FLOAT),
            helper.make_node("Mul", [f"{base}_int4_blocked", f"{base}_int4_scale"], [f"{base}_int4_scaled"],
                             name=f"{base}_int4_scaled"),
            helper.make_node("Reshape", [f"{base}_int4_scaled", f"{base}_int4_shape"], [node.output[0]], name=base),
        ]
    if not done:
        return 0
    model.graph.initializer.append(numpy_helper.from_array(lut, lut_name))
    replace_nodes(model.graph, new_nodes)
    return len(done)


def replace_nodes(graph, new_nodes) -> None:
    """Give `graph` these nodes and drop the initializers no node reads any more."""
    del graph.node[:]
    graph.node.extend(new_nodes)
    used = {name for node in graph.node for name in node.input}
    kept = [tensor for tensor in graph.initializer if tensor.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def _value_ranks(model) -> dict[str, int]:
    """Known ranks of the graph's inputs and values (ONNX shape inference; contrib ops stay unknown)."""
    import onnx

    values = [*model.graph.input, *model.graph.value_info]
    with contextlib.suppress(Exception):  # a model over 2 GB, or one shape inference cannot follow
        values += list(onnx.shape_inference.infer_shapes(model).graph.value_info)
    ranks = {}
    for value in values:
        tensor_type = value.type.tensor_type
        if tensor_type.HasField("shape"):
            ranks[value.name] = len(tensor_type.shape.dim)
    for tensor in model.graph.initializer:
        ranks[tensor.name] = len(tensor.dims)
    return ranks


def sum_before_layernorm(model) -> int:
    """Turn each Add whose only use is a LayerNormalization's input into Sum (same result), in place.

    onnxruntime fuses Add + LayerNormalization into SkipLayerNormalization, whose CPU kernel
    measured 7x slower than the two ops apart (onnxruntime 1.32); it does not fuse Sum.
    """
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {value.name for value in model.graph.output}
    count = 0
    for node in model.graph.node:
        if node.op_type != "Add" or node.domain not in ("", "ai.onnx") or node.output[0] in outputs:
            continue
        users = consumers.get(node.output[0], [])
        if len(users) == 1 and users[0].op_type == "LayerNormalization" and users[0].input[0] == node.output[0]:
            node.op_type = "Sum"
            count += 1
    return count
