"""ONNX quantization with onnxruntime.quantization (and its float16 converter).

Every mode runs `quant_pre_process` first (shape inference and ORT's basic graph
optimisations) because the quantizers need tensor shapes to decide what they can quantize.
Each function takes the float model's path and writes the quantized model to `out_path`;
it returns notes for the manifest. Models over ~1.8 GB keep their weights in external
data beside the model (`model.onnx.data`), since a protobuf cannot hold more than 2 GB;
language models always do (`is_language_model`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from toolkit.common.batching import fixed_batch
from toolkit.common.cpu import u8s8_saturates_here
from toolkit.common.quiet import quiet
from toolkit.common.text import first_line
from toolkit.errors import NothingQuantized, Unsupported
from toolkit.quantize.calibration import calibration_batches
from toolkit.quantize.onnx_embeddings import (
    EMBEDDING_BLOCK_SIZE,
    int4_embeddings,
    opset_version,
    replace_nodes,
    sum_before_layernorm,
)
from toolkit.quantize.onnx_fusion import fuse_transformer
from toolkit.quantize.onnx_graph import LARGE_MODEL_BYTES, all_nodes, is_large

DEBUG_METADATA_PREFIXES = ("pkg.torch.onnx.", "namespace")
INT4_BLOCK_SIZE = 32
INT4_GATHER_OPSET = 21  # int4 tensors (GatherBlockQuantized tables) need opset 21
LM_ACCURACY_LEVEL = 4  # MatMulNBits with int8 activations, for language models


def pre_process(model_path: Path, workdir: Path) -> Path:
    """quant_pre_process into `workdir`, after turning Constant weights into initializers.

    Falls back to skipping ORT's optimiser, then symbolic shapes (with the optimiser), then
    both: ORT's symbolic shape inference gives up on many exported graphs (Paddle's, If
    branches), where the optimiser still folds BatchNorm into Conv and constants.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    workdir = workdir.resolve()
    out = workdir / "preprocessed.onnx"
    large = is_large(model_path)
    source = (_constants_as_initializers(model_path, workdir) or model_path).resolve()
    attempts = ({}, {"skip_optimization": True}, {"skip_symbolic_shape": True},
                {"skip_optimization": True, "skip_symbolic_shape": True})
    last_error: Exception | None = None
    for options in attempts:
        try:
            # Where symbolic shape inference gives up, onnxruntime saves its half-done model
            # (sym_shape_infer_temp.onnx and a uuid-named .data file) into the working directory.
            with quiet(), contextlib.chdir(workdir):
                quant_pre_process(
                    str(source), str(out), save_as_external_data=large,
                    all_tensors_to_one_file=True, **options,
                )
            return out
        except Exception as error:  # shape inference raises many types; try a gentler pass
            last_error = error
    raise Unsupported(f"{model_path.name}: shape inference for quantization failed: {first_line(last_error)}")


def _constants_as_initializers(model_path: Path, workdir: Path) -> Path | None:
    """A copy of the model whose Constant nodes holding a tensor are initializers, or None if it has none.

    Exporters such as paddle2onnx and older torch.onnx store every weight as a Constant node;
    onnxruntime's quantizers only quantize initializers, so such a model came out bigger
    (weights kept float, quantize nodes added). Constants inside If/Loop/Scan branches become
    initializers of their branch, where the quantizers look for them too.
    """
    import onnx

    if is_large(model_path):
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


def save(model, out_path: Path, *, language_model: bool = False) -> None:
    """Drop the exporter's debug metadata (stack traces, local paths) and save, large or not.

    Past ~1.8 GB, and for a `language_model` whatever its size, the tensors over 1 KiB go to
    `<name>.data` beside the graph; a language model also gets its `logits_to_keep` input.
    """
    import onnx

    for node in all_nodes(model.graph):
        keep = [p for p in node.metadata_props if not p.key.startswith(DEBUG_METADATA_PREFIXES)]
        del node.metadata_props[:]
        node.metadata_props.extend(keep)
    if language_model:
        from toolkit.lm.onnx_last_logits import add_logits_to_keep

        add_logits_to_keep(model)
    large = model.ByteSize() > LARGE_MODEL_BYTES if _fits_protobuf(model) else True
    onnx.save_model(
        model, str(out_path), save_as_external_data=large or language_model, all_tensors_to_one_file=True,
        location=f"{out_path.name}.data", size_threshold=1024,
    )
    data_path = out_path.with_name(f"{out_path.name}.data")
    if data_path.is_file():  # onnx creates it 0600; readable like the graph beside it (a board, shared storage)
        data_path.chmod(out_path.stat().st_mode & 0o777)


def is_language_model(model_path: Path) -> bool:
    """Whether the model is a decoder whose quantized form is saved as `save(..., language_model=True)`.

    Its weights go to model.onnx.data whatever its size: onnxruntime maps an external-data file, where
    it keeps an inline model's parsed initializers beside the copies MatMulNBits prepacks
    (benchmarks/results/lm_memory.md, int4 decoder with 33.3 MiB of weights: peak 74.3 MiB over the
    baseline inline, 61.3 MiB with external data). Other models stay one file: they are small, and the
    device runner's predict/bench path pushes one model file (the language-model bench pushes the data
    file beside it).
    """
    from toolkit.lm.folder import is_lm_artifact

    return is_lm_artifact(model_path)


def _fits_protobuf(model) -> bool:
    try:
        model.ByteSize()
        return True
    except Exception:  # protobuf refuses to size a message over 2 GB
        return False


def _finish(tmp_path: Path, out_path: Path, *, language_model: bool = False) -> None:
    import onnx

    save(onnx.load(str(tmp_path)), out_path, language_model=language_model)


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

    reduce_range = u8s8_saturates_here()
    pre = pre_process(model_path, workdir)
    # per-channel DequantizeLinear (its `axis`) needs opset 13; an older model that cannot be
    # converted keeps onnxruntime's ConvInteger (per-tensor weights) as before
    pre = _at_least_opset(pre, 13, workdir)
    large = is_large(pre)
    weight_only_convs = per_channel and opset_version(onnx.load(str(pre), load_external_data=False)) >= 13
    op_types = [op for op in IntegerOpsRegistry if op in DYNAMIC_OP_TYPES or not weight_only_convs]
    tmp = workdir / "quantized.onnx"
    # Weights inside If/Loop branches too (silero-vad's LSTMs); onnxruntime's branch pass fails
    # on a branch that uses the outer graph's initializers, so that retries with the main graph only.
    subgraphs = True
    for subgraphs in (True, False):
        try:
            with quiet():
                quantize_dynamic(
                    str(pre), str(tmp), weight_type=QuantType.QInt8, per_channel=per_channel,
                    reduce_range=reduce_range, op_types_to_quantize=op_types,
                    nodes_to_exclude=_with_gemm_names(exclude_nodes), use_external_data_format=large,
                    extra_options={"EnableSubgraph": subgraphs},
                )
            break
        except Exception:  # onnxruntime raises bare Exceptions and asserts from its branch pass
            if not subgraphs or not _has_subgraphs(pre):
                raise
    model = onnx.load(str(tmp))
    convs = int8_conv_weights(model.graph, set(exclude_nodes or [])) if weight_only_convs else 0
    save(model, out_path, language_model=is_language_model(model_path))
    return {"weight_type": "int8", "activations": "uint8, dynamic (MatMul/Gemm/LSTM)", "per_channel": per_channel,
            "reduce_range": reduce_range,
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
    # uint8 weights where uint8 x int8 saturates (x86 without VNNI): measured here, 7-bit int8
    # weights (reduce_range) cost PP-OCR rec 7 dB more SQNR than uint8 weights did
    weight_type = QuantType.QUInt8 if u8s8_saturates_here() else QuantType.QInt8

    def quantize(pre: Path) -> None:
        reader.rewind()
        with quiet():
            quantize_static(
                str(pre), str(tmp), reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                activation_type=QuantType.QUInt8, weight_type=weight_type, calibrate_method=methods[method],
                op_types_to_quantize=static_op_types(), nodes_to_exclude=list(exclude_nodes or []), use_external_data_format=is_large(pre),
            )

    quantize(pre)
    notes = {}
    try:
        _check_static_did_something(pre, tmp, model_path)
    except Unsupported:
        # Every weight sits in If branches. Where the calibration data decides those Ifs (silero-vad's
        # sr), quantize the model specialised to the taken branches; otherwise the error stands.
        from toolkit.quantize import onnx_if  # only models with If nodes need it

        specialised = onnx_if.specialise_ifs(model_path, reader.feeds, workdir)
        if specialised is None:
            raise
        source, notes["specialised"] = specialised
        pre = _at_least_opset(pre_process(source, workdir), 13, workdir)
        quantize(pre)
        _check_static_did_something(pre, tmp, model_path)
        onnx_if.warn_specialised(notes["specialised"])
    _finish(tmp, out_path, language_model=is_language_model(model_path))
    return {"format": "QDQ", "weight_type": "uint8" if weight_type == QuantType.QUInt8 else "int8",
            "activation_type": "uint8", "per_channel": per_channel,
            "calibration_method": method, "calibration_batches": len(reader.feeds),
            "float_ops": list(STATIC_SKIPPED_OPS), **notes}


# --- static-int8 on models whose layers sit in If branches chosen by a fixed scalar input ---

def _at_least_opset(path: Path, version: int, workdir: Path) -> Path:
    """The model converted to opset `version` when older (per-channel QDQ and its int32 bias
    DequantizeLinear need opset 13; paddle2onnx writes 11 or 12). Unchanged if conversion fails."""
    import onnx

    if is_large(path):
        return path
    model = onnx.load(str(path))
    if opset_version(model) >= version:
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
    with quiet():
        model = convert_float_to_float16(
            onnx.load(str(pre)), keep_io_types=True, node_block_list=list(exclude_nodes or []) or None,
        )
    save(model, out_path, language_model=is_language_model(model_path))
    return {"weights": "float16", "io_types": "float32 kept"}


def int4_weight(model_path: Path, out_path: Path, *, workdir: Path, exclude_nodes=None,
                block_size: int = INT4_BLOCK_SIZE, **_) -> dict:
    """int4 block-wise weights: MatMul -> MatMulNBits, embedding Gather -> GatherBlockQuantized.

    Gemm (how torch exports nn.Linear) is rewritten as MatMul first so that it applies.
    Quantizing Gather makes onnxruntime's quantizer stamp opset 21 on the model (int4
    tensors) without converting its nodes, so an older model goes through onnx's version
    converter first; where that fails, only MatMul is quantized (MatMulNBits lives in the
    com.microsoft domain and leaves the standard opset alone).
    """
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    from toolkit.lm.folder import is_lm_artifact

    pre = pre_process(model_path, workdir)
    original_opset = opset_version(onnx.load(str(pre), load_external_data=False))
    pre = _at_least_opset(pre, INT4_GATHER_OPSET, workdir)
    model = onnx.load(str(pre))
    opset = opset_version(model)
    op_types = ("MatMul", "Gather") if opset >= INT4_GATHER_OPSET else ("MatMul",)
    excluded = set(exclude_nodes or [])
    rewritten = gemm_to_matmul(model, excluded)
    # A language model's MatMuls run with int8 activations (accuracy level 4), as onnxruntime-genai's
    # builder does on CPU: decode measured 1.8x faster than float compute here (toolkit/lm/genai_builder.py).
    accuracy_level = LM_ACCURACY_LEVEL if is_lm_artifact(model_path) else None
    with quiet():
        quantizer = MatMulNBitsQuantizer(
            model, bits=4, block_size=block_size, is_symmetric=True, nodes_to_exclude=list(excluded),
            op_types_to_quantize=op_types,  # Gather: embedding tables -> GatherBlockQuantized
            accuracy_level=accuracy_level,
        )
        quantizer.process()
    quantized = quantizer.model.model
    merged = 0
    if accuracy_level is not None:  # a decoder's gate and up (q, k and v) projections: one MatMulNBits each
        from toolkit.lm.onnx_merged_matmuls import merge_shared_input_matmuls

        merged = merge_shared_input_matmuls(quantized)
    count = sum(1 for node in all_nodes(quantized.graph) if node.op_type == "MatMulNBits")
    gathers = sum(1 for node in all_nodes(quantized.graph) if node.op_type == "GatherBlockQuantized")
    if count + gathers == 0:
        raise NothingQuantized(
            f"int4-weight left {model_path.name} unchanged: it has no MatMul or Gemm with constant weights "
            "(e.g. a convolution-only network); use dynamic-int8 or static-int8"
        )
    save(quantized, out_path, language_model=is_language_model(model_path))
    notes = {"bits": 4, "block_size": block_size, "matmulnbits_nodes": count,
             "gather_block_quantized_nodes": gathers, "gemm_rewritten": rewritten}
    if accuracy_level is not None:
        notes["accuracy_level"] = accuracy_level  # int8 activations in MatMulNBits
        notes["merged_matmulnbits"] = merged  # nodes that each replace MatMulNBits sharing an input
    if opset != original_opset:
        notes["opset_converted"] = [original_opset, opset]
    if "Gather" not in op_types:
        notes["gather_skipped"] = f"opset {opset} could not be converted to {INT4_GATHER_OPSET} (int4 tables need it)"
    return notes


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
    replace_nodes(model.graph, new_nodes)
    return rewritten


# --- dynamic-int8-int4emb: int8 MatMuls at run time, int4 embedding tables, fast LayerNorm ---



def dynamic_int8_int4emb(model_path: Path, out_path: Path, *, workdir: Path, per_channel: bool = True,
                         exclude_nodes=None, fuse: bool = True, **_) -> dict:
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
    A BERT-like encoder is first fused (`onnx_fusion.fuse_transformer`: Attention -> QAttention,
    BiasGelu): 0.88x the unfused model's p50 on the benchmark's BERT (AVX2, 1 thread); the
    manifest says whether it ran (`transformer_fusion`). Plain dynamic-int8 stays unfused: there
    the fused model was no faster (onnxruntime turns its Add + LayerNorm into SkipLayerNorm).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    excluded = set(exclude_nodes or [])
    reduce_range = u8s8_saturates_here()
    pre = pre_process(model_path, workdir)
    fusion = fuse_transformer(pre, workdir, config_dir=model_path.parent) if fuse else None
    if fusion is not None and fusion.fused:
        pre = fusion.model_path
    tmp = workdir / "quantized.onnx"
    with quiet():
        quantize_dynamic(
            str(pre), str(tmp), weight_type=QuantType.QInt8, per_channel=per_channel, reduce_range=reduce_range,
            op_types_to_quantize=[op for op in IntegerOpsRegistry if op != "Gather"],
            nodes_to_exclude=_with_gemm_names(excluded), use_external_data_format=is_large(pre),
            # contrib ops (Attention) have no type in onnx's shape inference: their outputs are float
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    model = onnx.load(str(tmp))
    tables = int4_embeddings(model, excluded)
    unfused = sum_before_layernorm(model)
    save(model, out_path, language_model=is_language_model(model_path))
    return {"weight_type": "int8", "activations": "uint8, dynamic", "per_channel": per_channel,
            "reduce_range": reduce_range,
            "embedding_tables_int4": tables, "embedding_block_size": EMBEDDING_BLOCK_SIZE,
            "embedding_scales": "float16", "add_layernorm_as_sum": unfused,
            "transformer_fusion": fusion.notes() if fusion is not None else {"applied": False, "reason": "off"}}
