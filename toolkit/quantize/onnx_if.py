"""Specialise `If` nodes whose condition the calibration data fixes (static-int8 through branches).

onnxruntime's static (QDQ) quantizer neither calibrates nor quantizes inside If
subgraphs. When every calibration example gives an If's condition the same value (a
sample rate passed as a 0-d input, say), the If is replaced by the branch it always takes,
so the quantizer sees those layers; the quantized model then serves that value only, which
the manifest and a warning say.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from toolkit.quantize.onnx_graph import all_nodes, is_large


def specialise_ifs(model_path: Path, feeds: list[dict], workdir: Path) -> tuple[Path, dict] | None:
    """A copy of the model with each If decided by the calibration data replaced by its taken branch.

    onnxruntime's static quantizer and calibrator do not enter If branches, so a model whose
    layers all sit in branches (silero_vad.onnx: `If(sr == 16000)` over the 16 kHz and 8 kHz
    networks) comes out unchanged. An If whose condition is computed (top-level nodes only) from
    initializers, Constant nodes and 0-d inputs that hold one value in every calibration feed
    (sr=16000) takes the same branch for all the data: its condition is evaluated (onnx's
    reference evaluator) and the If node becomes the nodes of that branch, whose local names are
    renamed where they clash, whose initializers join the main graph, and whose outputs feed the
    If's outputs through Identity nodes. Nested Ifs that become top-level are tried in turn. The
    inputs stay (a specialised input is simply unused): the result serves only those values.
    Layers the QDQ quantizer has no kernel for stay float: silero-vad's LSTM (in a nested If on
    a shape, which this leaves alone) keeps float weights; its Convs become int8.
    Returns (path, {input: value, ..., "if_nodes": [...]}) or None when no If can be decided.
    """
    import onnx

    if is_large(model_path) or not feeds:
        return None
    model = onnx.load(str(model_path))
    fixed = _fixed_scalar_inputs(model.graph, feeds)
    decided, used = [], set()
    progress = True
    while progress:  # an inlined branch may bring nested Ifs to the top level
        progress = False
        for node in [n for n in model.graph.node if n.op_type == "If" and n.domain in ("", "ai.onnx")]:
            taken = _if_condition(model, node, fixed, used)
            if taken is not None:
                _inline_branch(model.graph, node, taken)
                decided.append(node.name or node.output[0])
                progress = True
                break  # the node list changed: look again from the start
    if not decided:
        return None
    _drop_dead_nodes(model.graph)
    out = workdir / "specialised.onnx"
    onnx.save_model(model, str(out))
    values = {name: fixed[name].item() for name in sorted(used)}
    return out, {**values, "if_nodes": decided}


def _fixed_scalar_inputs(graph, feeds: list[dict]) -> dict[str, np.ndarray]:
    """The 0-d graph inputs that hold the same value in every calibration feed (as 0-d arrays).

    The feeds may carry a scalar as one element of shape (1,), which onnxruntime accepts too.
    """
    initializers = {tensor.name for tensor in graph.initializer}
    fixed = {}
    for value in graph.input:
        tensor_type = value.type.tensor_type
        if value.name in initializers or not tensor_type.HasField("shape") or len(tensor_type.shape.dim):
            continue
        arrays = [feed.get(value.name) for feed in feeds]
        if any(a is None or np.size(a) != 1 for a in arrays):
            continue
        scalars = [np.asarray(a).reshape(()) for a in arrays]
        if all(np.array_equal(a, scalars[0]) for a in scalars[1:]):
            fixed[value.name] = scalars[0]
    return fixed


def _if_condition(model, node, fixed: dict[str, np.ndarray], used: set[str]) -> bool | None:
    """The value of the If's condition when only initializers, Constants and `fixed` inputs decide it."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    producers = {output: n for n in graph.node for output in n.output}
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    needed, inputs, seen, stack = [], set(), set(), [node.input[0]]
    while stack:
        name = stack.pop()
        if name in seen or not name:
            continue
        seen.add(name)
        if name in fixed:
            inputs.add(name)
        elif name in producers:
            producer = producers[name]
            if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in producer.attribute):
                return None
            if producer not in needed:
                needed.append(producer)
            stack.extend(producer.input)
        elif name not in initializers:
            return None  # a graph input that varies, or an outer name: not decided by the data
    order = [n for n in graph.node if n in needed]  # the graph's own (topological) order
    subgraph = onnx.helper.make_graph(
        order, "if_condition",
        [onnx.helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(fixed[name].dtype), [])
         for name in sorted(inputs)],
        [onnx.helper.make_tensor_value_info(node.input[0], onnx.TensorProto.BOOL, None)],
        [initializers[name] for name in seen if name in initializers],
    )
    try:
        evaluator = ReferenceEvaluator(onnx.helper.make_model(subgraph, opset_imports=model.opset_import, ir_version=model.ir_version))
        (value,) = evaluator.run(None, {name: fixed[name] for name in inputs})
    except Exception:  # an op the reference evaluator lacks: leave the If alone
        return None
    if np.size(value) != 1:
        return None
    used.update(inputs)
    return bool(np.asarray(value).reshape(()))


def _inline_branch(graph, node, taken: bool) -> None:
    """Replace If `node` in `graph` by the nodes of its then (`taken`) or else branch, in place."""
    import onnx

    branch = next(a.g for a in node.attribute if a.name == ("then_branch" if taken else "else_branch"))
    local = {name for n in branch.node for name in n.output if name} | {t.name for t in branch.initializer}
    elsewhere = {v.name for v in (*graph.input, *graph.output, *graph.initializer)}
    for other in graph.node:
        if other is not node:
            elsewhere |= _node_names(other)
    renames = {name: _unique_name(name, elsewhere | local) for name in sorted(local & elsewhere)}
    nodes = [onnx.NodeProto() for _ in branch.node]
    for copy, original in zip(nodes, branch.node, strict=True):
        copy.CopyFrom(original)
        _rename_values(copy, renames)
    for tensor in branch.initializer:
        graph.initializer.add().CopyFrom(tensor)
        graph.initializer[-1].name = renames.get(tensor.name, tensor.name)
    for value in branch.value_info:
        graph.value_info.add().CopyFrom(value)
        graph.value_info[-1].name = renames.get(value.name, value.name)
    prefix = node.name or node.output[0]
    nodes += [onnx.helper.make_node("Identity", [renames.get(result.name, result.name)], [output],
                                    name=f"{prefix}_output_{i}")
              for i, (result, output) in enumerate(zip(branch.output, node.output, strict=True))]
    position = list(graph.node).index(node)
    kept = list(graph.node)
    del graph.node[:]
    graph.node.extend(kept[:position] + nodes + kept[position + 1:])


def _node_names(node) -> set[str]:
    """Every value name `node` and its subgraphs use or define."""
    names = {name for name in (*node.input, *node.output) if name}
    for attribute in node.attribute:
        for subgraph in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
            names |= {v.name for v in (*subgraph.input, *subgraph.output, *subgraph.initializer)}
            for inner in subgraph.node:
                names |= _node_names(inner)
    return names


def _unique_name(name: str, taken: set[str]) -> str:
    for i in range(1, 1_000_000):
        candidate = f"{name}__specialised{i}"
        if candidate not in taken:
            taken.add(candidate)
            return candidate
    raise AssertionError(name)


def _rename_values(node, renames: dict[str, str]) -> None:
    """Rename inputs/outputs of `node` and the outer-scope references of its subgraphs."""
    if not renames:
        return
    for i, name in enumerate(node.input):
        node.input[i] = renames.get(name, name)
    for i, name in enumerate(node.output):
        node.output[i] = renames.get(name, name)
    for attribute in node.attribute:
        subgraphs = [attribute.g] if attribute.HasField("g") else []
        for subgraph in [*subgraphs, *attribute.graphs]:
            for inner in subgraph.node:
                _rename_values(inner, renames)
            for value in subgraph.output:
                value.name = renames.get(value.name, value.name)


def _drop_dead_nodes(graph) -> None:
    """Remove nodes none of whose outputs is used (the decided conditions), in place."""
    while True:
        used = {name for n in all_nodes(graph) for name in n.input} | {v.name for v in graph.output}
        for n in all_nodes(graph):
            for attribute in n.attribute:
                for subgraph in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                    used |= {v.name for v in subgraph.output}
        kept = [n for n in graph.node if any(name in used for name in n.output if name)]
        if len(kept) == len(graph.node):
            return
        del graph.node[:]
        graph.node.extend(kept)


def warn_specialised(specialised: dict) -> None:
    import warnings

    from toolkit.errors import EdgewardWarning

    values = {name: value for name, value in specialised.items() if name != "if_nodes"}
    fixed = ", ".join(f"{name}={value}" for name, value in values.items())
    names = ", ".join(values)
    warnings.warn(f"static-int8 specialised the model to {fixed}, the value in every calibration example; "
                  f"other values of {names} are not supported by this model", EdgewardWarning, stacklevel=3)
