"""ONNX quantization with onnxruntime.quantization (and its float16 converter).

Every mode runs `quant_pre_process` first (shape inference and ORT's basic graph
optimisations) because the quantizers need tensor shapes to decide what they can quantize.
Each function takes the float model's path and writes the quantized model to `out_path`;
it returns notes for the manifest. Models over ~1.8 GB keep their weights in external
data beside the model (`model.onnx.data`), since a protobuf cannot hold more than 2 GB.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from toolkit.errors import Unsupported
from toolkit.quantize.common import calibration_batches, fixed_batch, quiet_output

LARGE_MODEL_BYTES = 1_800_000_000
DEBUG_METADATA_PREFIXES = ("pkg.torch.onnx.", "namespace")
INT4_BLOCK_SIZE = 32


def model_bytes(path: Path) -> int:
    """The model file plus the external data files it names."""
    import onnx

    from toolkit.safety import external_locations

    model = onnx.load(str(path), load_external_data=False)
    files = {path.parent / location for location in external_locations(model)}
    return path.stat().st_size + sum(f.stat().st_size for f in files if f.is_file())


def _is_large(path: Path) -> bool:
    return model_bytes(path) > LARGE_MODEL_BYTES


def pre_process(model_path: Path, workdir: Path) -> Path:
    """quant_pre_process into `workdir`, after turning Constant weights into initializers.

    Falls back to skipping ORT's optimiser, then symbolic shapes (with the optimiser), then
    both: ORT's symbolic shape inference gives up on many exported graphs (Paddle's, If
    branches), where the optimiser still folds BatchNorm into Conv and constants.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = workdir / "preprocessed.onnx"
    large = _is_large(model_path)
    source = _constants_as_initializers(model_path, workdir) or model_path
    attempts = ({}, {"skip_optimization": True}, {"skip_symbolic_shape": True},
                {"skip_optimization": True, "skip_symbolic_shape": True})
    last_error: Exception | None = None
    for options in attempts:
        try:
            with quiet_output():
                quant_pre_process(
                    str(source), str(out), save_as_external_data=large,
                    all_tensors_to_one_file=True, **options,
                )
            return out
        except Exception as error:  # shape inference raises many types; try a gentler pass
            last_error = error
    raise Unsupported(f"{model_path.name}: shape inference for quantization failed: {_first_line(last_error)}")


def _constants_as_initializers(model_path: Path, workdir: Path) -> Path | None:
    """A copy of the model whose Constant nodes holding a tensor are initializers, or None if it has none.

    Exporters such as paddle2onnx and older torch.onnx store every weight as a Constant node;
    onnxruntime's quantizers only quantize initializers, so such a model came out bigger
    (weights kept float, quantize nodes added). Constants inside If/Loop/Scan branches become
    initializers of their branch, where the quantizers look for them too.
    """
    import onnx

    if _is_large(model_path):
        return None
    model = onnx.load(str(model_path))
    if not _convert_constants(model.graph):
        return None
    out = workdir / "constants_as_initializers.onnx"
    onnx.save_model(model, str(out))
    return out


def _convert_constants(graph) -> int:
    count, kept = 0, []
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.g is not None and attribute.g.node:
                count += _convert_constants(attribute.g)
            for subgraph in attribute.graphs:
                count += _convert_constants(subgraph)
        value = node.attribute[0] if len(node.attribute) == 1 else None
        if (node.op_type == "Constant" and node.domain in ("", "ai.onnx") and value is not None
                and value.name == "value" and len(node.output) == 1):
            tensor = graph.initializer.add()
            tensor.CopyFrom(value.t)
            tensor.name = node.output[0]
            count += 1
        else:
            kept.append(node)
    if count:
        del graph.node[:]
        graph.node.extend(kept)
    return count


def save(model, out_path: Path) -> None:
    """Drop the exporter's debug metadata (stack traces, local paths) and save, large or not."""
    import onnx

    for node in all_nodes(model.graph):
        keep = [p for p in node.metadata_props if not p.key.startswith(DEBUG_METADATA_PREFIXES)]
        del node.metadata_props[:]
        node.metadata_props.extend(keep)
    large = model.ByteSize() > LARGE_MODEL_BYTES if _fits_protobuf(model) else True
    onnx.save_model(
        model, str(out_path), save_as_external_data=large, all_tensors_to_one_file=True,
        location=f"{out_path.name}.data", size_threshold=1024,
    )


def _fits_protobuf(model) -> bool:
    try:
        model.ByteSize()
        return True
    except Exception:  # protobuf refuses to size a message over 2 GB
        return False


def all_nodes(graph):
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.g is not None and attribute.g.node:
                yield from all_nodes(attribute.g)
            for subgraph in attribute.graphs:
                yield from all_nodes(subgraph)


def _finish(tmp_path: Path, out_path: Path) -> None:
    import onnx

    save(onnx.load(str(tmp_path)), out_path)


# Conv is not given to onnxruntime's dynamic quantizer: its ConvInteger path quantizes the weights
# per tensor whatever `per_channel` says (PP-OCR's models: 1.7-12 dB SQNR, the same as per-tensor
# int8 weights alone), and it is known to be slow and inexact on CNNs (onnxruntime's docs
# advise static quantization for them; Optimum's dynamic configs quantize MatMul only). Conv
# weights are stored int8 per output channel instead (DequantizeLinear -> float Conv).
DYNAMIC_OP_TYPES = ("MatMul", "Attention", "LSTM", "Gather", "Transpose", "EmbedLayerNormalization")
WEIGHT_ONLY_CONV_OPS = {"Conv": 0, "ConvTranspose": 1}  # op -> output-channel axis of its weight


def dynamic_int8(model_path: Path, out_path: Path, *, workdir: Path, per_channel: bool = True,
                 exclude_nodes=None, **_) -> dict:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    pre = pre_process(model_path, workdir)
    # per-channel DequantizeLinear (its `axis`) needs opset 13; an older model that cannot be
    # converted keeps onnxruntime's ConvInteger (per-tensor weights) as before
    pre = _at_least_opset(pre, 13, workdir)
    large = _is_large(pre)
    weight_only_convs = per_channel and _opset(onnx.load(str(pre), load_external_data=False)) >= 13
    op_types = [op for op in IntegerOpsRegistry if op in DYNAMIC_OP_TYPES or not weight_only_convs]
    tmp = workdir / "quantized.onnx"
    # Weights inside If/Loop branches too (silero-vad's LSTMs); onnxruntime's branch pass fails
    # on a branch that uses the outer graph's initializers, so that retries with the main graph only.
    subgraphs = True
    for subgraphs in (True, False):
        try:
            with quiet_output():
                quantize_dynamic(
                    str(pre), str(tmp), weight_type=QuantType.QInt8, per_channel=per_channel,
                    op_types_to_quantize=op_types,
                    nodes_to_exclude=_with_gemm_names(exclude_nodes), use_external_data_format=large,
                    extra_options={"EnableSubgraph": subgraphs},
                )
            break
        except Exception:  # onnxruntime raises bare Exceptions and asserts from its branch pass
            if not subgraphs or not _has_subgraphs(pre):
                raise
    model = onnx.load(str(tmp))
    convs = int8_conv_weights(model.graph, set(exclude_nodes or [])) if weight_only_convs else 0
    save(model, out_path)
    return {"weight_type": "int8", "activations": "uint8, dynamic (MatMul/Gemm/LSTM)", "per_channel": per_channel,
            "subgraphs_quantized": subgraphs,
            "conv": ("int8 weights per output channel, float activations (DequantizeLinear -> Conv)"
                     if weight_only_convs else "ConvInteger, per-tensor int8 weights"),
            "conv_weights_int8": convs}


def int8_conv_weights(graph, excluded: set[str]) -> int:
    """Store the constant weights of Conv/ConvTranspose as symmetric int8 per output channel, in place.

    Each weight W becomes DequantizeLinear(W_int8, scale[C], axis) feeding the unchanged float
    Conv: a quarter of the bytes, float activations. Branches (If/Loop) are visited; a weight
    is rewritten where its own graph holds it. Needs opset 13 (DequantizeLinear's axis).
    """
    from onnx import TensorProto, helper, numpy_helper

    count = 0
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.g is not None and attribute.g.node:
                count += int8_conv_weights(attribute.g, excluded)
            for subgraph in attribute.graphs:
                count += int8_conv_weights(subgraph, excluded)
    inputs = {value.name for value in graph.input}  # an initializer that is also an input can be fed: leave it
    initializers = {tensor.name: tensor for tensor in graph.initializer if tensor.name not in inputs}
    users: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    done: dict[str, str] = {}
    new_nodes = []
    for node in graph.node:
        axis = WEIGHT_ONLY_CONV_OPS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        weight = initializers.get(node.input[1]) if axis is not None and len(node.input) > 1 else None
        if (weight is None or node.name in excluded or weight.data_type != TensorProto.FLOAT
                or len(weight.dims) < 3 or users.get(weight.name, 0) != 1):
            new_nodes.append(node)
            continue
        array = numpy_helper.to_array(weight).astype(np.float32)
        reduce = tuple(i for i in range(array.ndim) if i != axis)
        peak = np.abs(array).max(axis=reduce)
        scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
        shape = [-1 if i == axis else 1 for i in range(array.ndim)]
        quantized = np.clip(np.round(array / scale.reshape(shape)), -127, 127).astype(np.int8)
        base = weight.name
        graph.initializer.extend([
            numpy_helper.from_array(quantized, f"{base}_int8"),
            numpy_helper.from_array(scale, f"{base}_int8_scale"),
            numpy_helper.from_array(np.zeros(scale.shape, np.int8), f"{base}_int8_zero_point"),
        ])
        new_nodes.append(helper.make_node(
            "DequantizeLinear", [f"{base}_int8", f"{base}_int8_scale", f"{base}_int8_zero_point"], [f"{base}_dequantized"],
            name=f"{base}_DequantizeLinear", axis=axis,
        ))
        node.input[1] = f"{base}_dequantized"
        done[base] = node.name
        new_nodes.append(node)
        count += 1
    if done:
        kept = [tensor for tensor in graph.initializer if tensor.name not in done]
        del graph.initializer[:]
        graph.initializer.extend(kept)
        del graph.node[:]
        graph.node.extend(new_nodes)
    return count


def _has_subgraphs(path: Path) -> bool:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return any(a.g.node or a.graphs for node in model.graph.node for a in node.attribute)


def _with_gemm_names(exclude_nodes) -> list[str]:
    """Dynamic quantization rewrites Gemm `n` as MatMul `n_MatMul` + Add first: exclude both names."""
    names = list(exclude_nodes or [])
    return names + [f"{name}_MatMul" for name in names]


class DatasetReader:
    """onnxruntime's CalibrationDataReader over a Dataset, in batches the model accepts.

    onnxruntime only calls `get_next()` (its ABC accepts any class that has one).
    """

    def __init__(self, dataset, input_specs, batch_size: int = 16):
        dataset = dataset.for_model(input_specs)
        batch = fixed_batch(input_specs, dataset.inputs) or batch_size
        names = {spec.name for spec in input_specs}
        self.feeds = [
            {name: np.ascontiguousarray(array) for name, array in feed.items() if name in names}
            for feed in calibration_batches(dataset, batch)
        ]
        self.position = 0

    def get_next(self):
        if self.position >= len(self.feeds):
            return None
        self.position += 1
        return self.feeds[self.position - 1]

    def rewind(self):
        self.position = 0


# Elementwise arithmetic is left float: quantizing the outputs of Add/Mul/Sigmoid/Softmax (residual
# sums, decomposed HardSwish, LayerNorm and squeeze-excite blocks, output probabilities) adds a
# rounding step per op for little speed on CPU. Measured on PP-OCR's cls/det/rec: 16.3/14.4/7.2 dB
# SQNR with them quantized, 19.0/15.1/9.4 dB without.
STATIC_SKIPPED_OPS = ("Add", "Mul", "Softmax", "Sigmoid", "Where", "ArgMax")


def static_op_types() -> list[str]:
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted(op for op in set(QDQRegistry) | set(QLinearOpsRegistry) if op not in STATIC_SKIPPED_OPS)


# Activations uint8, weights int8 (U8S8): onnxruntime's fast path on x86 (VPMADDUBSW/VNNI) and
# fine on ARM; S8S8 QDQ measured 1.6x slower than U8S8 on a BERT-like encoder here.
def static_int8(model_path: Path, out_path: Path, *, workdir: Path, calibration, input_specs,
                method: str = "minmax", per_channel: bool = True, exclude_nodes=None, **_) -> dict:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    pre = _at_least_opset(pre_process(model_path, workdir), 13, workdir)
    tmp = workdir / "quantized.onnx"
    reader = DatasetReader(calibration, input_specs)

    def quantize(pre: Path) -> None:
        reader.rewind()
        with quiet_output():
            quantize_static(
                str(pre), str(tmp), reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=methods[method],
                op_types_to_quantize=static_op_types(), nodes_to_exclude=list(exclude_nodes or []), use_external_data_format=_is_large(pre),
            )

    quantize(pre)
    notes = {}
    try:
        _check_static_did_something(pre, tmp, model_path)
    except Unsupported:
        # Every weight sits in If branches. Where the calibration data decides those Ifs (silero-vad's
        # sr), quantize the model specialised to the taken branches; otherwise the error stands.
        specialised = specialise_ifs(model_path, reader.feeds, workdir)
        if specialised is None:
            raise
        source, notes["specialised"] = specialised
        pre = _at_least_opset(pre_process(source, workdir), 13, workdir)
        quantize(pre)
        _check_static_did_something(pre, tmp, model_path)
        _warn_specialised(notes["specialised"])
    _finish(tmp, out_path)
    return {"format": "QDQ", "weight_type": "int8", "activation_type": "uint8", "per_channel": per_channel,
            "calibration_method": method, "calibration_batches": len(reader.feeds),
            "float_ops": list(STATIC_SKIPPED_OPS), **notes}


# --- static-int8 on models whose layers sit in If branches chosen by a fixed scalar input ---

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

    if _is_large(model_path) or not feeds:
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


def _warn_specialised(specialised: dict) -> None:
    from toolkit.console import warn

    values = {name: value for name, value in specialised.items() if name != "if_nodes"}
    settings = ", ".join(f"{name}={value}" for name, value in values.items())
    names = ", ".join(values)
    warn(f"static-int8 specialised the model to {settings}, the value in every calibration example; "
         f"other values of {names} are not supported by this model")


def _at_least_opset(path: Path, version: int, workdir: Path) -> Path:
    """The model converted to opset `version` when older (per-channel QDQ and its int32 bias
    DequantizeLinear need opset 13; paddle2onnx writes 11 or 12). Unchanged if conversion fails."""
    import onnx

    if _is_large(path):
        return path
    model = onnx.load(str(path))
    if _opset(model) >= version:
        return path
    try:
        converted = onnx.version_converter.convert_version(model, version)
    except Exception:  # the converter lacks adapters for some ops; onnxruntime then decides
        return path
    out = workdir / f"opset{version}.onnx"
    onnx.save_model(converted, str(out))
    return out


def _check_static_did_something(pre: Path, quantized: Path, model_path: Path) -> None:
    """Unsupported when static-int8 left every weight float because they sit in If/Loop/Scan branches.

    onnxruntime's QDQ quantizer and its calibrator only see the main graph; a model whose
    layers all live in branches (silero_vad.onnx: one If on the sample rate) came out unchanged
    (`static_int8` then tries `specialise_ifs` before giving up).
    """
    import onnx

    model = onnx.load(str(quantized), load_external_data=False)
    if any(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in model.graph.node):
        return
    float_model = onnx.load(str(pre), load_external_data=False)
    holders = [node for node in float_model.graph.node
               if any(a.g.node or a.graphs for a in node.attribute)
               and any(n.op_type in _WEIGHT_OPS for n in all_nodes(_branches(node)))]
    if holders:
        node = holders[0]
        inner = sorted({n.op_type for n in all_nodes(_branches(node)) if n.op_type in _WEIGHT_OPS})
        raise Unsupported(
            f"static-int8 cannot quantize {model_path.name}: its {', '.join(inner)} layers sit inside the branches "
            f"of {node.op_type} node {node.name or node.output[0]!r}, which onnxruntime's static quantizer and "
            "calibrator do not enter; use dynamic-int8 (it quantizes weights that a branch holds itself), or a "
            "variant of the model without If branches"
        )


_WEIGHT_OPS = ("Conv", "MatMul", "Gemm", "LSTM", "GRU", "RNN", "ConvTranspose")


def _branches(node):
    """A graph-like holder of all the subgraphs of `node`, for `all_nodes`."""
    import onnx

    holder = onnx.GraphProto()
    for attribute in node.attribute:
        if attribute.g is not None and attribute.g.node:
            holder.node.extend(attribute.g.node)
        for subgraph in attribute.graphs:
            holder.node.extend(subgraph.node)
    return holder


def fp16(model_path: Path, out_path: Path, *, workdir: Path, exclude_nodes=None, **_) -> dict:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    pre = pre_process(model_path, workdir)
    with quiet_output():
        model = convert_float_to_float16(
            onnx.load(str(pre)), keep_io_types=True, node_block_list=list(exclude_nodes or []) or None,
        )
    save(model, out_path)
    return {"weights": "float16", "io_types": "float32 kept"}


def int4_weight(model_path: Path, out_path: Path, *, workdir: Path, exclude_nodes=None, **_) -> dict:
    """int4 block-wise weights: MatMul -> MatMulNBits, embedding Gather -> GatherBlockQuantized.

    Gemm (how torch exports nn.Linear) is rewritten as MatMul first so that it applies.
    """
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    pre = pre_process(model_path, workdir)
    model = onnx.load(str(pre))
    excluded = set(exclude_nodes or [])
    rewritten = gemm_to_matmul(model, excluded)
    with quiet_output():
        quantizer = MatMulNBitsQuantizer(
            model, bits=4, block_size=INT4_BLOCK_SIZE, is_symmetric=True, nodes_to_exclude=list(excluded),
            op_types_to_quantize=("MatMul", "Gather"),  # Gather: embedding tables -> GatherBlockQuantized
        )
        quantizer.process()
    quantized = quantizer.model.model
    count = sum(1 for node in all_nodes(quantized.graph) if node.op_type == "MatMulNBits")
    gathers = sum(1 for node in all_nodes(quantized.graph) if node.op_type == "GatherBlockQuantized")
    if count + gathers == 0:
        raise Unsupported(
            f"int4-weight left {model_path.name} unchanged: it has no MatMul or Gemm with constant weights "
            "(e.g. a convolution-only network); use dynamic-int8 or static-int8"
        )
    save(quantized, out_path)
    return {"bits": 4, "block_size": INT4_BLOCK_SIZE, "matmulnbits_nodes": count,
            "gather_block_quantized_nodes": gathers, "gemm_rewritten": rewritten}


def gemm_to_matmul(model, excluded: set[str]) -> int:
    """Rewrite Gemm(A, W[, C]) with a constant W as MatMul(A, W') + Add(C), in place.

    MatMulNBits replaces MatMul only, and torch exports nn.Linear as Gemm; folding
    alpha/beta/transB into the constants keeps the result identical. Names follow
    onnxruntime's own rewrite (`n_MatMul`, `n_Add`); excluded Gemms are left alone.
    """
    from onnx import helper, numpy_helper

    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    new_nodes, rewritten = [], 0
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        weight = initializers.get(node.input[1]) if node.op_type == "Gemm" and len(node.input) > 1 else None
        if weight is None or node.name in excluded or attrs.get("transA", 0):
            new_nodes.append(node)
            continue
        matrix = numpy_helper.to_array(weight).astype(np.float32)
        matrix = (matrix.T if attrs.get("transB", 0) else matrix) * float(attrs.get("alpha", 1.0))
        weight_name = f"{node.name or node.output[0]}_matmul_weight"
        model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(matrix), weight_name))
        has_bias = len(node.input) > 2 and node.input[2]
        product = f"{node.output[0]}_matmul" if has_bias else node.output[0]
        new_nodes.append(helper.make_node("MatMul", [node.input[0], weight_name], [product], name=f"{node.name}_MatMul"))
        if has_bias:
            bias_name = node.input[2]
            beta = float(attrs.get("beta", 1.0))
            if beta != 1.0 and bias_name in initializers:
                bias = numpy_helper.to_array(initializers[bias_name]) * beta
                bias_name = f"{bias_name}_scaled"
                model.graph.initializer.append(numpy_helper.from_array(bias.astype(np.float32), bias_name))
            new_nodes.append(helper.make_node("Add", [product, bias_name], [node.output[0]], name=f"{node.name}_Add"))
        rewritten += 1
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    used = {name for node in model.graph.node for name in node.input}
    kept = [tensor for tensor in model.graph.initializer if tensor.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return rewritten


def _first_line(error) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:300]


# --- dynamic-int8-int4emb: int8 MatMuls at run time, int4 embedding tables, fast LayerNorm ---

EMBEDDING_BLOCK_SIZE = 32
EMBEDDING_MIN_ELEMENTS = 65_536  # smaller tables (token types, short position tables) stay float
INT4_CLIP_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75)


def dynamic_int8_int4emb(model_path: Path, out_path: Path, *, workdir: Path, per_channel: bool = True,
                      exclude_nodes=None, **_) -> dict:
    """dynamic-int8 for MatMul/Conv, embedding tables as int4, and Add+LayerNorm kept apart.

    Three measured choices (BERT-like encoder, onnxruntime 1.32, one x86 thread):
    - the int8 MatMuls are onnxruntime's dynamic quantization, as in dynamic-int8 (and Optimum);
    - a large Gather table (an embedding) is stored as int4 in row blocks of 32 with a float16
      scale per block, and unpacked after the Gather with standard ops (Gather, Cast, Reshape,
      Mul): ~35 µs for 128 tokens, where the contrib GatherBlockQuantized took ~220 µs;
    - `Add -> LayerNormalization` becomes `Sum -> LayerNormalization`: same arithmetic, but
      onnxruntime's graph optimiser no longer fuses it into SkipLayerNormalization, whose CPU
      kernel measured 7x slower than Add + LayerNormalization (132 vs 19 µs at 128x256).
    A model without embeddings (a CNN) gets dynamic-int8 plus the LayerNorm rewrite.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    excluded = set(exclude_nodes or [])
    pre = pre_process(model_path, workdir)
    tmp = workdir / "quantized.onnx"
    with quiet_output():
        quantize_dynamic(
            str(pre), str(tmp), weight_type=QuantType.QInt8, per_channel=per_channel,
            op_types_to_quantize=[op for op in IntegerOpsRegistry if op != "Gather"],
            nodes_to_exclude=_with_gemm_names(excluded), use_external_data_format=_is_large(pre),
        )
    model = onnx.load(str(tmp))
    tables = int4_embeddings(model, excluded)
    unfused = sum_before_layernorm(model)
    save(model, out_path)
    return {"weight_type": "int8", "activations": "uint8, dynamic", "per_channel": per_channel,
            "embedding_tables_int4": tables, "embedding_block_size": EMBEDDING_BLOCK_SIZE,
            "embedding_scales": "float16", "add_layernorm_as_sum": unfused}


def _opset(model) -> int:
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

    if _opset(model) < 13:
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
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    used = {name for node in model.graph.node for name in node.input}
    kept = [tensor for tensor in model.graph.initializer if tensor.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return len(done)


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
