"""Per-layer error: which node of a quantized (or otherwise altered) model broke it?

Both graphs are run on the same data with their intermediate tensors exposed, and each
float tensor is compared with its counterpart in the candidate. Tensors are matched by
name; in an onnxruntime QDQ graph the value a consumer actually sees is the
DequantizeLinear output, so float tensor `T` maps to `T_DequantizeLinear_Output`
(or `T_DequantizeLinear_Output_1`, or `T` itself when it was not quantized). For
TFLite, ai-edge-quantizer's own validator (`model_validator.compare_model`, per-tensor
SNR) does the comparison, and the interpreter's op list gives the graph.

A tensor's SQNR says how much error has accumulated by then; what a user wants is the
node that *adds* it. Treating errors as independent noise, a node's own noise-to-signal
ratio is its output's minus its worst input's, and `local_sqnr_db` is that as SQNR (model
inputs and weights count as exact, so quantizing a model input is charged to its first
consumer). Nodes are ranked by `local_sqnr_db`, worst first; a node whose inputs are
already below DAMAGED_DB is downstream of the damage and ranked after the healthy ones,
so a broken node is named before everything it broke. A node whose output vanished in
the candidate (Conv+Relu fused into one QDQ Conv) is grouped with the node whose output
is compared.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from toolkit.errors import BadInput, Unsupported

CAP_DB = 100.0  # beyond this the two tensors agree to float rounding
DAMAGED_DB = 10.0  # an input this bad means the damage happened upstream
QDQ_SUFFIXES = ("_DequantizeLinear_Output", "_DequantizeLinear_Output_1", "")
TFLITE_SAMPLES = 32  # ai-edge-quantizer builds two interpreters per example


@dataclass
class Node:
    name: str
    op_type: str
    inputs: list[str]
    outputs: list[str]


@dataclass
class LayerError:
    node: str
    op_type: str
    order: int  # position in the float graph
    tensor: str  # the float tensor compared
    candidate_tensor: str
    sqnr_db: float
    input_sqnr_db: float
    local_sqnr_db: float
    downstream: bool  # its inputs were already damaged (below DAMAGED_DB)
    nodes: list[str] = field(default_factory=list)  # float nodes this entry covers (fused chains)


@dataclass
class PerLayerResult:
    format: str
    candidate: str
    parent: str
    samples: int
    layers: list[LayerError]  # graph order
    worst: list[LayerError]  # ranked, `top` of them
    matched_tensors: int
    float_tensors: int

    def to_dict(self) -> dict:
        return {
            "format": self.format, "candidate": self.candidate, "parent": self.parent, "samples": self.samples,
            "matched_tensors": self.matched_tensors, "float_tensors": self.float_tensors,
            "ranking": f"local_sqnr_db, worst first; nodes whose inputs are below {DAMAGED_DB:g} dB after",
            "worst": [asdict(layer) for layer in self.worst],
            "layers": [asdict(layer) for layer in self.layers],
        }


def per_layer_error(candidate, parent, data, *, top: int = 10, batch_size: int = 64) -> PerLayerResult:
    """Compare CANDIDATE with its float PARENT (same format) tensor by tensor on DATA."""
    from toolkit.artifacts import resolve_model

    candidate, parent = resolve_model(candidate), resolve_model(parent)
    if candidate.suffix != parent.suffix:
        raise BadInput(f"per-layer error compares models of one format: {candidate.name} vs {parent.name}")
    if candidate.suffix == ".onnx":
        graph, sqnr, mapping, samples = _onnx_sqnr(candidate, parent, data, batch_size)
    elif candidate.suffix == ".tflite":
        graph, sqnr, mapping, samples = _tflite_sqnr(candidate, parent, data)
    else:
        raise Unsupported(f"{candidate.name}: per-layer error needs .onnx or .tflite")
    layers = node_errors(graph, sqnr, mapping)
    ranked = sorted(layers, key=lambda layer: (layer.downstream, _key(layer.local_sqnr_db), layer.order))
    float_tensors = sum(len(node.outputs) for node in graph[0])
    ranked = [layer for layer in ranked if layer.local_sqnr_db < CAP_DB]  # exact nodes are nobody's worst
    return PerLayerResult(candidate.suffix[1:], str(candidate), str(parent), samples, layers, ranked[:top],
                          len(sqnr), float_tensors)


# ---------------------------------------------------------------- the graph logic (format-free)


def node_errors(graph, sqnr: dict[str, float], mapping: dict[str, str]) -> list[LayerError]:
    """One entry per float node with a compared output, in graph order."""
    nodes, graph_inputs, constants = graph
    producer = {out: node for node in nodes for out in node.outputs}
    memo: dict[str, float | None] = {}

    def upstream(tensor: str, depth: int = 0) -> float | None:
        if tensor in graph_inputs:
            return CAP_DB
        if tensor in constants or tensor not in producer or depth > 200:
            return None
        if tensor in sqnr:
            return min(sqnr[tensor], CAP_DB)
        if tensor not in memo:
            memo[tensor] = None  # cycle guard
            values = [v for v in (upstream(t, depth + 1) for t in producer[tensor].inputs) if v is not None]
            memo[tensor] = min(values) if values else None
        return memo[tensor]

    def fused_chain(node: Node) -> list[str]:
        chain, stack, seen = [], list(node.inputs), set()
        while stack:
            tensor = stack.pop()
            if tensor in seen or tensor in sqnr or tensor in constants or tensor not in producer:
                continue
            seen.add(tensor)
            chain.append(producer[tensor].name)
            stack.extend(producer[tensor].inputs)
        return [*reversed(chain), node.name]

    layers = []
    for order, node in enumerate(nodes):
        compared = [out for out in node.outputs if out in sqnr]
        if not compared:
            continue
        tensor = min(compared, key=lambda out: sqnr[out])
        out_db = sqnr[tensor]
        values = [v for v in (upstream(t) for t in node.inputs) if v is not None]
        in_db = min(values) if values else CAP_DB
        local = local_sqnr_db(in_db, out_db)
        layers.append(LayerError(node.name, node.op_type, order, tensor, mapping.get(tensor, tensor),
                                 _round(out_db), _round(in_db), _round(local), bool(in_db < DAMAGED_DB),
                                 fused_chain(node)))
    return layers


def local_sqnr_db(in_db: float, out_db: float) -> float:
    """The SQNR of the noise a node adds: its output's noise-to-signal minus its input's."""
    if math.isnan(out_db):
        return -math.inf
    added = 10.0 ** (-min(out_db, CAP_DB) / 10.0) - 10.0 ** (-min(in_db, CAP_DB) / 10.0)
    if added <= 10.0 ** (-CAP_DB / 10.0):
        return CAP_DB
    return min(CAP_DB, -10.0 * math.log10(added))


def _round(value: float) -> float:
    return round(value, 3) if math.isfinite(value) else value


def _key(value: float) -> float:
    return -math.inf if math.isnan(value) else value


def sqnr_db(signal: float, noise: float) -> float:
    if noise == 0.0:
        return math.inf
    if not math.isfinite(noise):
        return math.nan
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


# ---------------------------------------------------------------- ONNX


def _onnx_sqnr(candidate: Path, parent: Path, data, batch_size: int):
    import onnx

    from toolkit.safety.onnx import check_onnx_file

    for path in (candidate, parent):
        check_onnx_file(path)
    float_model = onnx.load(str(parent))
    cand_model = onnx.load(str(candidate))
    graph = _onnx_graph(float_model)
    cand_tensors = {out for node in cand_model.graph.node for out in node.output}
    cand_tensors |= {value.name for value in cand_model.graph.input}
    mapping = {}
    for node in graph[0]:
        for tensor in node.outputs:
            found = next((tensor + s for s in QDQ_SUFFIXES if tensor + s in cand_tensors), None)
            if found:
                mapping[tensor] = found
    for tensor in graph[1]:  # model inputs quantized at the door: x -> x_DequantizeLinear_Output
        found = next((tensor + s for s in QDQ_SUFFIXES[:2] if tensor + s in cand_tensors), None)
        if found:
            mapping[tensor] = found

    float_session = _exposed_session(float_model, [t for t in mapping if t not in graph[1]])
    cand_session = _exposed_session(cand_model, list(mapping.values()))
    dataset = _as_dataset(data)
    float_feeds = _feeds_for(dataset, float_session)
    cand_feeds = _feeds_for(dataset, cand_session)
    signal: dict[str, float] = dict.fromkeys(mapping, 0.0)
    noise: dict[str, float] = dict.fromkeys(mapping, 0.0)
    skipped: set[str] = set()
    from toolkit.common.batching import batch_axes, example_total, fixed_batch, pad_examples, slice_examples

    # Each input cut along its own example axis (silero-vad's state [2, batch, 128]: axis 1);
    # 0-d inputs (a sample rate) go whole with every batch.
    float_specs, cand_specs = _specs(float_session), _specs(cand_session)
    float_axes, cand_axes = batch_axes(float_feeds, float_specs), batch_axes(cand_feeds, cand_specs)
    fixed = fixed_batch(float_specs, float_feeds) or fixed_batch(cand_specs, cand_feeds)
    size = fixed or batch_size
    count = example_total(float_feeds, float_axes)
    if fixed and count % size:  # a fixed batch: whole batches only (one padded batch if that is all there is)
        if count > size:
            count -= count % size
        else:
            short = size - count
            float_feeds = {k: pad_examples(v, float_axes[k], short) for k, v in float_feeds.items()}
            cand_feeds = {k: pad_examples(v, cand_axes[k], short) for k, v in cand_feeds.items()}
    for start in range(0, count, size):
        f_batch = slice_examples(float_feeds, float_axes, start, start + size)
        f_out = _run_exposed(float_session, f_batch)
        c_out = _run_exposed(cand_session, slice_examples(cand_feeds, cand_axes, start, start + size))
        for name, value in f_batch.items():
            f_out.setdefault(name, value)
        for tensor, cand_name in mapping.items():
            ref, cand = f_out.get(tensor), c_out.get(cand_name)
            if ref is None or cand is None or ref.shape != cand.shape or ref.dtype.kind != "f" or cand.dtype.kind != "f":
                skipped.add(tensor)
                continue
            ref64 = ref.astype(np.float64)
            signal[tensor] += float(np.square(ref64).sum())
            noise[tensor] += float(np.square(cand.astype(np.float64) - ref64).sum())
    sqnr = {t: sqnr_db(signal[t], noise[t]) for t in mapping if t not in skipped}
    return graph, sqnr, mapping, count


def _onnx_graph(model):
    initializers = {init.name for init in model.graph.initializer}
    inputs = {value.name for value in model.graph.input if value.name not in initializers}
    constants = set(initializers)
    nodes = []
    for index, node in enumerate(model.graph.node):
        if node.op_type == "Constant":
            constants.update(node.output)
            continue
        nodes.append(Node(node.name or f"{node.op_type}_{index}", node.op_type, list(node.input), list(node.output)))
    return nodes, inputs, constants


def _exposed_session(model, tensors: list[str]):
    """An onnxruntime session whose outputs include TENSORS (optimisations off: no fusion hides them)."""
    import onnx
    import onnxruntime as ort

    model = onnx.ModelProto.FromString(model.SerializeToString())
    present = {value.name for value in model.graph.output}
    for tensor in tensors:
        if tensor not in present:
            model.graph.output.append(onnx.ValueInfoProto(name=tensor))
            present.add(tensor)
    blob = model.SerializeToString()
    if len(blob) >= 2**31:
        raise Unsupported("per-layer error on ONNX models over 2 GB is not supported")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        return ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises several unrelated types
        raise Unsupported(f"per-layer: onnxruntime cannot load the exposed graph: {str(error).splitlines()[0][:200]}") from None


def _run_exposed(session, feeds) -> dict[str, np.ndarray]:
    try:
        values = session.run(None, feeds)
    except Exception as error:
        raise BadInput(f"per-layer: inference failed: {str(error).splitlines()[0][:200]}") from None
    return {output.name: value for output, value in zip(session.get_outputs(), values, strict=True)}


def _as_dataset(data):
    from toolkit.data import Dataset, load_data

    return data if isinstance(data, Dataset) else load_data(data)


def _specs(session) -> list:
    from toolkit.common.tensors import onnx_spec

    return [onnx_spec(arg) for arg in session.get_inputs()]


def _feeds_for(dataset, session) -> dict[str, np.ndarray]:
    from toolkit.validate.sides import prepare_feeds

    class _Specs:
        inputs = _specs(session)

    return prepare_feeds(dataset, _Specs, "per-layer")


# ---------------------------------------------------------------- TFLite


def _tflite_sqnr(candidate: Path, parent: Path, data):
    """Per-tensor SNR from ai-edge-quantizer's validator, on the first TFLITE_SAMPLES examples."""
    try:
        from ai_edge_litert.interpreter import Interpreter
        from ai_edge_quantizer import model_validator
        from ai_edge_quantizer.utils import validation_utils
    except ImportError:
        from toolkit.errors import missing_library

        raise missing_library("ai-edge-quantizer") from None
    from toolkit.safety.tflite import check_tflite_file

    for path in (candidate, parent):
        check_tflite_file(path)
    from toolkit.quantize.tflite_rewrite import with_default_signature

    # A model without a SignatureDef (older TensorFlow, MediaPipe) gets a default one.
    parent_bytes, _ = with_default_signature(parent.read_bytes())
    candidate_bytes, _ = with_default_signature(candidate.read_bytes())
    interpreter = Interpreter(model_content=parent_bytes)
    graph = _tflite_graph(interpreter)
    signatures = interpreter.get_signature_list()
    if not signatures:
        raise Unsupported(f"{parent.name}: per-layer error needs a TFLite model with a signature")
    key = next(iter(signatures))
    runner_inputs = signatures[key]["inputs"]
    dataset = _as_dataset(data)
    values = list(dataset.renamed(runner_inputs).inputs.items())
    by_name = dict(values)
    if not all(name in by_name for name in runner_inputs):
        if len(values) != len(runner_inputs):
            raise BadInput(f"per-layer: data has inputs {sorted(by_name)}, the model needs {runner_inputs}")
        by_name = {name: array for name, (_, array) in zip(runner_inputs, values, strict=True)}
    details = dict(interpreter.get_signature_runner(key).get_input_details())  # signature name -> detail
    from toolkit.common.batching import batch_axes, example_total, fixed_batch, slice_examples
    from toolkit.common.tensors import TensorSpec

    specs = [TensorSpec(name, [int(d) if d >= 0 else None for d in detail.get("shape_signature", detail["shape"])], "")
             for name, detail in details.items()]
    feeds = {name: np.asarray(by_name[name]) for name in runner_inputs}
    axes = batch_axes(feeds, specs)  # per-input example axis; 0-d inputs go whole
    batch = max(1, fixed_batch(specs, feeds) or 1)
    count = min(example_total(feeds, axes), TFLITE_SAMPLES * batch)
    samples = [
        {name: array.astype(_tflite_dtype(interpreter, key, name))
         for name, array in slice_examples(feeds, axes, i, i + batch).items()}
        for i in range(0, count - batch + 1, batch)
    ]
    metric = validation_utils.ValidationErrorMetric.SNR
    import warnings

    try:
        with warnings.catch_warnings():  # "preserve_all_tensors is for debugging": that is what this is
            warnings.simplefilter("ignore")
            result = model_validator.compare_model(parent_bytes, candidate_bytes, {key: samples}, [metric])
    except Exception as error:  # the validator raises ValueError/RuntimeError from the interpreter
        raise BadInput(f"per-layer: ai-edge-quantizer could not compare the models: {str(error).splitlines()[0][:200]}") from None
    sqnr = {}
    for tensor, metrics in result.get_all_tensor_results().items():
        ratio = metrics.get(metric.value)
        if ratio is not None and ratio > 0:
            sqnr[tensor] = 10.0 * math.log10(ratio)
    return graph, sqnr, {t: t for t in sqnr}, len(samples) * batch


def _tflite_dtype(interpreter, key, name):
    detail = interpreter.get_signature_runner(key).get_input_details()[name]
    return np.dtype(detail["dtype"])


def _tflite_graph(interpreter):
    names = {d["index"]: d["name"] for d in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()  # the public API has no op list; ai-edge tools use this too
    nodes, produced = [], set()
    for op in ops:
        outputs = [names[i] for i in op["outputs"] if i in names]
        produced.update(outputs)
        nodes.append(Node(f"{op['op_name']}#{op['index']}", op["op_name"],
                          [names[i] for i in op["inputs"] if i >= 0 and i in names], outputs))
    inputs = {names[d["index"]] for d in interpreter.get_input_details()}
    constants = {name for name in names.values() if name not in produced and name not in inputs}
    return nodes, inputs, constants
