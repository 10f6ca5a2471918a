"""Merge the MatMulNBits nodes that read the same input into one, split after: gate and up, or q, k and v.

A decode step runs every op once per token, and at one token each MatMulNBits is a small job whose
dispatch to the thread pool costs about as much as its arithmetic. A decoder's MLP gate and up
projections read the same normalised hidden state, as do the attention's q, k and v in optimum's graphs
(onnxruntime-genai's builder writes those as one already), so their int4 blocks and scales can be
stacked along N into one MatMulNBits whose output a Split cuts back. Each output column is computed from
its own blocks: the logits are the same. On benchmarks/bench_lm_genai.py's model, paired in-process runs
(150 rounds) decoded 1.02-1.04x as fast at 2 threads and 1.00-1.01x at 1. The cost is the prefill's
activations: the merged output and its Split's copies of it, 2.3 MiB more at the peak for a 64-token
prompt (benchmarks/results/lm_memory.md: 1.21x the int4 weights + KV cache, against 1.14x unmerged).
"""

from __future__ import annotations

import logging

import numpy as np

from toolkit.quantize.onnx_embeddings import opset_version

logger = logging.getLogger(__name__)

MERGED_ATTRIBUTES = ("K", "bits", "block_size", "accuracy_level")


def merge_shared_input_matmuls(model) -> int:
    """Rewrite `model` (an onnx ModelProto) in place; returns how many merged MatMulNBits nodes it made.

    Only nodes with constant weights and scales of their own, no zero points, g_idx or bias, and the
    same K, bits, block size and accuracy level are merged."""
    from onnx import helper, numpy_helper

    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    groups: dict[tuple, list] = {}  # (input, K, bits, block size, accuracy level) -> [(node, its attributes)]
    for node in graph.node:
        if mergeable(node, initializers, readers):
            attributes = {item.name: helper.get_attribute_value(item) for item in node.attribute}
            key = (node.input[0], *(attributes.get(name) for name in MERGED_ATTRIBUTES))
            groups.setdefault(key, []).append((node, attributes))
    opset = opset_version(model)
    replaced: dict[int, list] = {}  # id of a group's first node -> the merged node and its Split
    removed: set[int] = set()
    for members in (entries for entries in groups.values() if len(entries) > 1):
        group = [node for node, _ in members]
        attributes = members[0][1]
        widths = [node_attributes["N"] for _, node_attributes in members]
        name = f"{group[0].name or group[0].output[0]}/merged"
        stacked = []
        for index, suffix in ((1, "weight"), (2, "scales")):
            tensors = [initializers[node.input[index]] for node in group]
            value = np.concatenate([numpy_helper.to_array(tensor) for tensor in tensors], axis=0)
            stacked.append(numpy_helper.from_array(value, f"{name}/{suffix}"))
            for tensor in tensors:
                graph.initializer.remove(tensor)
        graph.initializer.extend(stacked)
        merged_output = f"{name}/output_0"
        merged = helper.make_node("MatMulNBits", [group[0].input[0], stacked[0].name, stacked[1].name],
                                  [merged_output], name=name, domain="com.microsoft",
                                  **{**attributes, "N": sum(widths)})
        outputs = [node.output[0] for node in group]
        if opset >= 13:
            sizes = numpy_helper.from_array(np.array(widths, dtype=np.int64), f"{name}/split_sizes")
            graph.initializer.append(sizes)
            split = helper.make_node("Split", [merged_output, sizes.name], outputs, name=f"{name}/Split", axis=-1)
        else:
            split = helper.make_node("Split", [merged_output], outputs, name=f"{name}/Split", axis=-1, split=widths)
        replaced[id(group[0])] = [merged, split]
        removed.update(id(node) for node in group)
    if not replaced:
        return 0
    nodes = []
    for node in graph.node:  # the merged pair takes the first node's place: its input is ready there
        if id(node) in replaced:
            nodes.extend(replaced[id(node)])
        elif id(node) not in removed:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    logger.debug("merged MatMulNBits nodes sharing an input into %d", len(replaced))
    return len(replaced)


def mergeable(node, initializers: dict, readers: dict) -> bool:
    """A MatMulNBits with its own constant weights and scales, and no zero points, g_idx or bias."""
    return (node.op_type == "MatMulNBits" and node.domain == "com.microsoft" and len(node.output) == 1
            and len([name for name in node.input if name]) == 3 and len(node.input) == 3
            and all(node.input[index] in initializers and readers.get(node.input[index]) == 1 for index in (1, 2)))
