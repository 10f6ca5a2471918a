"""ONNX quantization with onnxruntime.quantization (and its float16 converter).

Every mode runs `quant_pre_process` first (shape inference and ORT's basic graph
optimisations) because the quantizers need tensor shapes to decide what they can quantize.
Each function takes the float model's path and writes the quantized model to `out_path`;
it returns notes for the manifest. Models over ~1.8 GB keep their weights in external
data beside the model (`model.onnx.data`), since a protobuf cannot hold more than 2 GB.
"""

from __future__ import annotations

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
    """quant_pre_process into `workdir`; falls back to skipping ORT's optimiser, then symbolic shapes."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = workdir / "preprocessed.onnx"
    large = _is_large(model_path)
    attempts = ({}, {"skip_optimization": True}, {"skip_optimization": True, "skip_symbolic_shape": True})
    last_error: Exception | None = None
    for options in attempts:
        try:
            with quiet_output():
                quant_pre_process(
                    str(model_path), str(out), save_as_external_data=large,
                    all_tensors_to_one_file=True, **options,
                )
            return out
        except Exception as error:  # shape inference raises many types; try a gentler pass
            last_error = error
    raise Unsupported(f"{model_path.name}: shape inference for quantization failed: {_first_line(last_error)}")


def save(model, out_path: Path) -> None:
    """Drop the exporter's debug metadata (stack traces, local paths) and save, large or not."""
    import onnx

    for node in _all_nodes(model.graph):
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


def _all_nodes(graph):
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.g is not None and attribute.g.node:
                yield from _all_nodes(attribute.g)
            for subgraph in attribute.graphs:
                yield from _all_nodes(subgraph)


def _finish(tmp_path: Path, out_path: Path) -> None:
    import onnx

    save(onnx.load(str(tmp_path)), out_path)


def dynamic_int8(model_path: Path, out_path: Path, *, workdir: Path, per_channel: bool = True,
                 exclude_nodes=None, **_) -> dict:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    pre = pre_process(model_path, workdir)
    tmp = workdir / "quantized.onnx"
    with quiet_output():
        quantize_dynamic(
            str(pre), str(tmp), weight_type=QuantType.QInt8, per_channel=per_channel,
            nodes_to_exclude=_with_gemm_names(exclude_nodes), use_external_data_format=_is_large(pre),
        )
    _finish(tmp, out_path)
    return {"weight_type": "int8", "activations": "uint8, dynamic", "per_channel": per_channel}


def _with_gemm_names(exclude_nodes) -> list[str]:
    """Dynamic quantization rewrites Gemm `n` as MatMul `n_MatMul` + Add first: exclude both names."""
    names = list(exclude_nodes or [])
    return names + [f"{name}_MatMul" for name in names]


class DatasetReader:
    """onnxruntime's CalibrationDataReader over a Dataset, in batches the model accepts.

    onnxruntime only calls `get_next()` (its ABC accepts any class that has one).
    """

    def __init__(self, dataset, input_specs, batch_size: int = 16):
        batch = fixed_batch(input_specs) or batch_size
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


# Activations uint8, weights int8 (U8S8): onnxruntime's fast path on x86 (VPMADDUBSW/VNNI) and
# fine on ARM; S8S8 QDQ measured 1.6x slower than U8S8 on a BERT-like encoder here.
def static_int8(model_path: Path, out_path: Path, *, workdir: Path, calibration, input_specs,
                method: str = "minmax", per_channel: bool = True, exclude_nodes=None, **_) -> dict:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    pre = pre_process(model_path, workdir)
    tmp = workdir / "quantized.onnx"
    reader = DatasetReader(calibration, input_specs)
    with quiet_output():
        quantize_static(
            str(pre), str(tmp), reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=methods[method],
            nodes_to_exclude=list(exclude_nodes or []), use_external_data_format=_is_large(pre),
        )
    _finish(tmp, out_path)
    return {"format": "QDQ", "weight_type": "int8", "activation_type": "uint8", "per_channel": per_channel,
            "calibration_method": method, "calibration_batches": len(reader.feeds)}


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
    count = sum(1 for node in _all_nodes(quantized.graph) if node.op_type == "MatMulNBits")
    gathers = sum(1 for node in _all_nodes(quantized.graph) if node.op_type == "GatherBlockQuantized")
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
