"""Let a decoder graph return the logits of its last positions only: an optional `logits_to_keep` input.

A prefill returns logits for every prompt position (64 positions x a 32000-word vocabulary = 7.8 MiB a
copy, in onnxruntime's output and numpy's), and the LM head computes them all, where generation reads
the last row. The rewrite slices the hidden states before the LM head:
`Slice(hidden, starts=-logits_to_keep, axis 1)`. `logits_to_keep` is a graph input backed by an
initializer [0] (onnxruntime lists it in `get_overridable_initializers`, not `get_inputs`): a caller that
does not feed it, such as `KvDecoder.all_logits` and validation, still gets every position (-0 = 0);
a generation loop feeds `np.array([1], np.int64)` and gets one row of logits.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

LOGITS = "logits"
LOGITS_TO_KEEP = "logits_to_keep"
# Ops between the LM head and the `logits` output that act on each position alone (Gemma's soft cap:
# Div, Tanh, Mul); their other operands must be constants.
PER_POSITION_OPS = ("Tanh", "Mul", "Div", "Add", "Sub", "Cast")
LM_HEAD_OPS = ("MatMul", "MatMulNBits")


def add_logits_to_keep(model) -> bool:
    """Rewrite `model` (an onnx ModelProto) in place; False, unchanged, where its LM head is not found."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    if LOGITS not in {value.name for value in graph.output}:
        return False
    if LOGITS_TO_KEEP in {value.name for value in graph.input}:
        return False  # done already
    head = lm_head(graph)
    if head is None:
        logger.info("no LM head MatMul feeds %r: the graph keeps returning every position's logits", LOGITS)
        return False
    hidden = head.input[0]
    start, kept = f"{LOGITS_TO_KEEP}/start", f"{LOGITS_TO_KEEP}/hidden"
    ends, axes = f"{LOGITS_TO_KEEP}/ends", f"{LOGITS_TO_KEEP}/axes"
    graph.initializer.extend([
        numpy_helper.from_array(np.zeros(1, np.int64), LOGITS_TO_KEEP),
        numpy_helper.from_array(np.array([np.iinfo(np.int64).max], np.int64), ends),
        numpy_helper.from_array(np.ones(1, np.int64), axes),
    ])
    graph.input.append(helper.make_tensor_value_info(LOGITS_TO_KEEP, TensorProto.INT64, [1]))
    slicing = [helper.make_node("Neg", [LOGITS_TO_KEEP], [start], name=f"{LOGITS_TO_KEEP}/Neg"),
               helper.make_node("Slice", [hidden, start, ends, axes], [kept], name=f"{LOGITS_TO_KEEP}/Slice")]
    head.input[0] = kept
    position = next(i for i, node in enumerate(graph.node) if node is head)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes[:position] + slicing + nodes[position:])
    for value in graph.output:  # the output's position axis is no longer the input's sequence length
        dims = value.type.tensor_type.shape.dim
        if value.name == LOGITS and len(dims) == 3:
            dims[1].Clear()
            dims[1].dim_param = "kept_positions"
    return True


def lm_head(graph):
    """The MatMul (or MatMulNBits) whose result becomes `logits` through per-position ops only, or None."""
    producers = {name: node for node in graph.node for name in node.output}
    constants = {tensor.name for tensor in graph.initializer}
    constants |= {node.output[0] for node in graph.node if node.op_type == "Constant"}
    node = producers.get(LOGITS)
    while node is not None and node.op_type in PER_POSITION_OPS:
        varying = [name for name in node.input if name and name not in constants]
        if len(varying) != 1:
            return None
        node = producers.get(varying[0])
    if node is None or node.op_type not in LM_HEAD_OPS:
        return None
    return node
