"""Per-layer error of a language model: which decoder layer did quantization hurt?

    from toolkit.lm.per_layer import lm_per_layer_error
    result = lm_per_layer_error("exported/qwen2-int4", "exported/qwen2-onnx", windows)

Both models read the same token windows as validation, all positions at once from an empty
cache (no KV cache, no prompt), and the hidden state at a few points of the network is
compared: the token embeddings, the residual stream after each decoder layer, the final norm
and the logits. Each point gets the relative error ‖c − r‖ / ‖r‖, its SQNR and the mean cosine
of the per-position vectors.

The points are found in each graph on its own, so the two sides may come from different exporters:

- onnxruntime-genai's builder fuses every residual add into the next norm
  (SkipSimplifiedLayerNormalization): its fourth output, the input + skip sum, is the residual
  stream, so `layers.{i}/input_layernorm` gives the output of layer i − 1 and the final norm
  (given that output here) the output of the last layer;
- op-by-op graphs (optimum) keep each layer's nodes under `/model/layers.{i}/`: the layer's
  output is the last tensor of that scope read by a node outside it (the residual add);
- a LiteRT model (litert-torch's re-authored graph, float or int4) has its points found and read by
  toolkit.lm.litert_per_layer, and is compared with a LiteRT reference or a Hugging Face folder.

An int4 graph keeps these names (only the MatMuls and the embedding Gather are replaced), and
the point is re-found in it anyway. The graphs get the points as extra outputs in a temporary
folder (never beside the artifact). A Hugging Face folder as the reference gives the same points
through forward hooks on its embedding, decoder layers and final norm.

As for other models (toolkit.validate.per_layer), a layer's own error is its output's
noise-to-signal minus its input's (the previous point's), and layers are ranked by that, worst
first, those fed by an already damaged input (below DAMAGED_DB) after: the layer that broke the
model is named before the layers it broke.
"""

from __future__ import annotations

import logging
import math
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit.common.units import human_number
from toolkit.errors import BadInput, Unsupported
from toolkit.validate.per_layer import (
    CAP_DB,
    DAMAGED_DB,
    LayerError,
    PerLayerResult,
    local_sqnr_db,
    sqnr_db,
)

logger = logging.getLogger(__name__)

MAX_WINDOWS = 8  # windows of validation text compared (each a full forward pass with every point exposed)
LAYER_SCOPE = re.compile(r"/(?:layers|h|layer|blocks)\.(\d+)/")
SKIP_NORMS = ("SkipSimplifiedLayerNormalization", "SkipLayerNormalization")
HEAD_OPS = ("MatMul", "MatMulNBits", "MatMulInteger", "Gemm")
# between the final norm and the LM head: a last-positions Slice, dynamic-int8's activation quantizer
BEFORE_HEAD_OPS = ("Slice", "DynamicQuantizeLinear", "QuantizeLinear", "DequantizeLinear", "Cast")
KINDS = {"embed_tokens": "embedding", "norm": "final norm", "lm_head": "logits"}


@dataclass
class LmLayerError(LayerError):
    relative_error: float = math.nan  # ‖candidate − reference‖ / ‖reference‖ over every position
    cosine: float = math.nan  # mean over positions of the cosine between the two hidden vectors


@dataclass
class LmPerLayerResult(PerLayerResult):
    reference_kind: str = "onnx"
    windows: int = 0

    @property
    def worst_layer(self) -> str | None:
        return self.worst[0].node if self.worst else None

    def to_dict(self) -> dict:
        return {**super().to_dict(), "kind": "language-model", "reference_format": self.reference_kind,
                "windows": self.windows, "positions": self.samples, "worst_layer": self.worst_layer}


@dataclass
class Point:
    label: str  # embed_tokens, layers.N, norm, lm_head
    tensor: str


# ---------------------------------------------------------------- the entry point


def check_per_layer_supported(candidate, top: int = 10, reference=None) -> None:
    """Refuse, before anything is opened, what per-layer cannot compare: an exported reference of
    another format than the candidate (ONNX against TFLite: the graphs' points differ in kind)."""
    from toolkit.lm.folder import is_lm_artifact
    from toolkit.lm.model import model_file

    if top < 1:
        raise BadInput(f"--top {top}: list at least one layer")
    if reference is None or not is_lm_artifact(reference) or not is_lm_artifact(candidate):
        return
    mine, theirs = (model_file(Path(path))[1].suffix.lower().lstrip(".") for path in (candidate, reference))
    if mine != theirs:
        raise BadInput(f"per-layer: the candidate is a {mine.upper()} model and the reference {reference} a "
                       f"{theirs.upper()} one: give the float {mine.upper()} export it was quantized from "
                       "(or the Hugging Face folder) as --reference")


def lm_per_layer_error(candidate, reference, windows: list[np.ndarray], *, top: int = 10,
                       threads: int | None = None, trust_remote_code: bool = False) -> LmPerLayerResult:
    """Compare the hidden states of `candidate` (an exported LM) and `reference` (an exported LM or
    a Hugging Face folder) after every layer, on the token `windows`."""
    from toolkit.lm.folder import is_lm_artifact
    from toolkit.lm.model import model_file

    check_per_layer_supported(candidate, top, reference)
    _, candidate_path = model_file(Path(candidate))
    model_format = candidate_path.suffix.lower().lstrip(".")
    windows = windows[:MAX_WINDOWS]
    with tempfile.TemporaryDirectory(prefix="edgeward-lm-per-layer-") as scratch:
        cand = exposed_graph(candidate_path, Path(scratch) / "candidate", threads)
        if is_lm_artifact(reference):
            _, reference_path = model_file(Path(reference))
            ref, reference_kind = exposed_graph(reference_path, Path(scratch) / "reference", threads), model_format
        else:
            ref, reference_kind = HookedModel(reference, trust_remote_code), "hf"
        labels = [label for label in cand.labels if label in ref.labels]
        check_layers(cand.labels, ref.labels, reference)
        tally = {label: PointTally() for label in labels}
        for window in windows:
            cand_values, ref_values = cand.run(window), ref.run(window)
            for label in labels:
                tally[label].add(cand_values[label], ref_values[label], label)
        tensors, ref_tensors = cand.tensors, ref.tensors
        del cand, ref  # close the sessions before their temporary files go (Windows keeps open files)
    layers = layer_rows(labels, tally, tensors, ref_tensors)
    ranked = sorted(layers, key=lambda layer: (layer.downstream, _key(layer.local_sqnr_db), layer.order))
    ranked = [layer for layer in ranked if layer.local_sqnr_db < CAP_DB]
    positions = sum(len(window) for window in windows)
    result = LmPerLayerResult(model_format, str(candidate), str(reference), positions, layers, ranked[:top],
                              len(labels), len(tensors), reference_kind=reference_kind, windows=len(windows))
    logger.info("per-layer: %d points compared on %d positions; worst: %s", len(labels), positions,
                result.worst_layer)
    return result


def exposed_graph(model_path: Path, folder: Path, threads: int | None):
    """The decoder with its points readable: an ONNX graph with extra outputs (saved in `folder`), or a
    LiteRT model whose interpreter keeps every tensor (toolkit.lm.litert_per_layer)."""
    if model_path.suffix.lower() == ".tflite":
        from toolkit.lm.litert_per_layer import LiteRtExposedGraph

        return LiteRtExposedGraph(model_path, threads)
    return ExposedGraph(model_path, folder, threads)


def check_layers(candidate_labels: list[str], reference_labels: list[str], reference) -> None:
    def layer_count(labels):
        return sum(label.startswith("layers.") for label in labels)

    mine, theirs = layer_count(candidate_labels), layer_count(reference_labels)
    if not mine or not theirs:
        raise Unsupported("per-layer: the decoder layers could not be found in the "
                          f"{'candidate' if not mine else 'reference'} graph")
    if mine != theirs:
        raise BadInput(f"per-layer: the candidate has {mine} decoder layers and the reference {reference} "
                       f"{theirs}: compare a model with the one it was quantized from")


class PointTally:
    """Running sums of one point over windows."""

    def __init__(self):
        self.signal = self.noise = self.cosine_sum = 0.0
        self.rows = 0

    def add(self, candidate: np.ndarray, reference: np.ndarray, label: str) -> None:
        if candidate.shape != reference.shape:
            raise BadInput(f"per-layer: {label} is {list(candidate.shape)} in the candidate and "
                           f"{list(reference.shape)} in the reference")
        width = reference.shape[-1]
        cand = candidate.astype(np.float64).reshape(-1, width)
        ref = reference.astype(np.float64).reshape(-1, width)
        self.signal += float(np.square(ref).sum())
        self.noise += float(np.square(cand - ref).sum())
        norms = np.linalg.norm(cand, axis=1) * np.linalg.norm(ref, axis=1)
        cosines = np.where(norms > 0, np.sum(cand * ref, axis=1) / np.where(norms > 0, norms, 1.0), 1.0)
        self.cosine_sum += float(np.sum(cosines))
        self.rows += len(ref)

    @property
    def relative_error(self) -> float:
        if not math.isfinite(self.noise):
            return math.nan
        return math.sqrt(self.noise / self.signal) if self.signal > 0 else (0.0 if self.noise == 0 else math.inf)


def layer_rows(labels: list[str], tally: dict, tensors: dict, ref_tensors: dict) -> list[LmLayerError]:
    """One row per point in network order; each point's input is the point before it."""
    rows, previous, previous_db = [], None, CAP_DB  # the token ids are exact
    for order, label in enumerate(labels):
        point = tally[label]
        out_db = sqnr_db(point.signal, point.noise)
        residual = previous is not None and label.startswith("layers.")
        local = residual_sqnr_db(previous, point) if residual else local_sqnr_db(previous_db, out_db)
        rows.append(LmLayerError(
            node=label, op_type=KINDS.get(label, "decoder layer"), order=order, tensor=ref_tensors[label],
            candidate_tensor=tensors[label], sqnr_db=_round(out_db), input_sqnr_db=_round(min(previous_db, CAP_DB)),
            local_sqnr_db=_round(local), downstream=bool(previous_db < DAMAGED_DB), nodes=[label],
            relative_error=_round(point.relative_error, 6), cosine=_round(point.cosine_sum / max(point.rows, 1), 6)))
        previous, previous_db = point, (out_db if not math.isnan(out_db) else -math.inf)
    return rows


def residual_sqnr_db(before: PointTally, after: PointTally) -> float:
    """A decoder layer adds its output to the residual stream it reads, in the same units, so the noise
    it adds is the growth of the noise's energy, measured against the layer's output. (The ratio form
    used elsewhere would credit a layer with removing noise whenever the stream's signal grows faster.)"""
    if not math.isfinite(after.noise):
        return -math.inf
    added = after.noise - before.noise
    if after.signal <= 0:
        return CAP_DB if added <= 0 else -math.inf
    if added <= after.signal * 10.0 ** (-CAP_DB / 10.0):
        return CAP_DB
    return min(CAP_DB, -10.0 * math.log10(added / after.signal))


def _round(value: float, digits: int = 3) -> float:
    if not math.isfinite(value):
        return value
    return float(f"{value:.{digits}g}") if digits > 3 else round(value, digits)


def _key(value: float) -> float:
    return -math.inf if math.isnan(value) else value


# ---------------------------------------------------------------- finding the points in an ONNX graph


def find_points(model) -> list[Point]:
    """The embedding, each layer's output, the final norm and the logits of a decoder graph, in order.
    May give a fused norm its residual output (an extra output of that node)."""
    nodes = list(model.graph.node)
    outputs = {value.name for value in model.graph.output}
    if "logits" not in outputs:
        raise Unsupported("per-layer: the graph has no logits output")
    producer = {name: node for node in nodes for name in node.output if name}
    points = []
    embedding = embedding_point(nodes)
    if embedding:
        points.append(embedding)
    points += skip_norm_points(nodes) or scoped_layer_points(nodes)
    norm = final_norm_output(producer)
    if norm:
        points.append(Point("norm", norm))
    points.append(Point("lm_head", "logits"))
    return points


def final_norm_output(producer: dict) -> str | None:
    """The LM head's input: back from `logits` through per-position ops (Gemma's soft cap) to the head
    MatMul, and past a Slice (toolkit.lm.onnx_last_logits keeps every position when not fed) or an
    activation quantizer before it."""
    node = producer.get("logits")
    for _ in range(8):
        if node is None or node.op_type in HEAD_OPS:
            break
        node = producer.get(node.input[0]) if node.input else None
    if node is None or node.op_type not in HEAD_OPS or not node.input:
        return None
    tensor = node.input[0]
    for _ in range(4):
        before = producer.get(tensor)
        if before is None or before.op_type not in BEFORE_HEAD_OPS:
            break
        tensor = before.input[0]
    return tensor if tensor in producer else None


def embedding_point(nodes) -> Point | None:
    """The output of the token-embedding lookup (the Gather reading input_ids), or of the last node
    of its scope (a scale applied to the lookup, as Gemma's)."""
    ids = {"input_ids"}  # and what only reshapes it (GPT-2 views input_ids before the lookup)
    for node in nodes:
        if node.op_type in ("Reshape", "Unsqueeze", "Squeeze", "Flatten", "Cast") and node.input[0] in ids:
            ids.update(node.output)
    gather = next((node for node in nodes if node.op_type in ("Gather", "GatherBlockQuantized")
                   and len(node.input) > 1 and node.input[1] in ids), None)
    if gather is None:
        return None
    scope = gather.name.rsplit("/", 1)[0] + "/" if "/" in gather.name else None
    last = gather
    if scope:
        for node in nodes:
            if node.name.startswith(scope) and node.output and node.output[0]:
                last = node
    return Point("embed_tokens", last.output[0])


def skip_norm_points(nodes) -> list[Point]:
    """onnxruntime-genai's graphs: the residual sum (output 3) of each layer's fused input norm and of
    the final norm. The final norm gets that output added when it lacks it."""
    fused = [node for node in nodes if node.op_type in SKIP_NORMS]
    if not fused:
        return []
    points = []
    for node in fused:
        scope = LAYER_SCOPE.search(node.name)
        if scope is None or "post_attention" in node.name:
            continue
        index = int(scope.group(1)) - 1
        if len(node.output) < 4 or not node.output[3]:
            while len(node.output) < 4:
                node.output.append("")
            node.output[3] = f"{node.name}/edgeward_residual"
        points.append(Point(f"layers.{index}", node.output[3]))
    return sorted(points, key=lambda point: int(point.label.split(".")[1]))


def scoped_layer_points(nodes) -> list[Point]:
    """Op-by-op graphs: for each `/layers.N/` scope, the last tensor it hands to a node outside it."""
    scope_of: dict[str, tuple[int, int]] = {}  # tensor -> (layer, position of its producer)
    for order, node in enumerate(nodes):
        match = LAYER_SCOPE.search(node.name)
        if match:
            scope_of.update({name: (int(match.group(1)), order) for name in node.output if name})
    last: dict[int, tuple[int, str]] = {}  # layer -> (position, tensor)
    for node in nodes:
        match = LAYER_SCOPE.search(node.name)
        reader = int(match.group(1)) if match else None
        for name in node.input:
            layer, order = scope_of.get(name, (None, -1))
            if layer is not None and layer != reader and order >= last.get(layer, (-1, ""))[0]:
                last[layer] = (order, name)
    return [Point(f"layers.{layer}", last[layer][1]) for layer in sorted(last)]


class ExposedGraph:
    """An exported decoder with its points as extra outputs, saved in `folder` (a temporary one)."""

    def __init__(self, model_path: Path, folder: Path, threads: int | None):
        import onnx

        from toolkit.lm.folder import head_dim, read_config
        from toolkit.safety.onnx import check_onnx_file

        check_onnx_file(model_path)
        model = onnx.load(str(model_path))
        self.points = find_points(model)
        self.labels = [point.label for point in self.points]
        self.tensors = {point.label: point.tensor for point in self.points}
        present = {value.name for value in model.graph.output}
        for point in self.points:
            if point.tensor not in present:
                model.graph.output.append(onnx.ValueInfoProto(name=point.tensor))
                present.add(point.tensor)
        folder.mkdir(parents=True)
        exposed = folder / "model.onnx"
        onnx.save(model, str(exposed), save_as_external_data=True, all_tensors_to_one_file=True,
                  location="model.onnx.data", size_threshold=1024)
        self.session = exposed_session(exposed, threads)
        self.inputs = self.session.get_inputs()
        self.head_dim = head_dim(read_config(model_path.parent))

    def run(self, window: np.ndarray) -> dict[str, np.ndarray]:
        names = list(dict.fromkeys(point.tensor for point in self.points))
        try:
            values = self.session.run(names, empty_cache_feeds(self.inputs, window, self.head_dim))
        except Exception as error:  # onnxruntime raises several unrelated types
            raise BadInput(f"per-layer: inference failed: {str(error).splitlines()[0][:200]}") from None
        by_tensor = dict(zip(names, values, strict=True))
        return {point.label: by_tensor[point.tensor][0] for point in self.points}


def exposed_session(path: Path, threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # no fusion hides a point
    if threads:
        options.intra_op_num_threads = int(threads)
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:
        raise Unsupported(f"per-layer: onnxruntime cannot load the graph with its layers exposed: "
                          f"{str(error).splitlines()[0][:200]}") from None


def empty_cache_feeds(inputs, window: np.ndarray, head_dim: int | None) -> dict[str, np.ndarray]:
    """The whole window at once from an empty KV cache (as validation scores it)."""
    from toolkit.lm.decoder import ORT_TYPES, PAST_PREFIX

    ids = np.asarray(window, dtype=np.int64).reshape(1, -1)
    feeds = {}
    for spec in inputs:
        if spec.name == "input_ids":
            feeds[spec.name] = ids
        elif spec.name == "attention_mask":
            feeds[spec.name] = np.ones_like(ids)
        elif spec.name == "position_ids":
            feeds[spec.name] = np.arange(ids.shape[1], dtype=np.int64).reshape(1, -1)
        elif spec.name.startswith(PAST_PREFIX):
            feeds[spec.name] = np.zeros(empty_past_shape(spec, head_dim), dtype=ORT_TYPES.get(spec.type, np.float32))
        else:
            raise Unsupported(f"per-layer: the decoder takes an input {spec.name} that is not fed here")
    return feeds


def empty_past_shape(spec, head_dim: int | None) -> list[int]:
    """[batch 1, kv heads, 0 tokens, head size]; a symbolic head size (onnxruntime-genai's graphs) from the config."""
    shape = [1 if axis == 0 else (dim if isinstance(dim, int) else 0) for axis, dim in enumerate(spec.shape)]
    if len(shape) != 4:
        raise Unsupported(f"per-layer: unexpected KV cache input {spec.name} of shape {spec.shape}")
    if shape[3] == 0 and head_dim:
        shape[3] = head_dim
    if shape[3] == 0:
        raise Unsupported(f"per-layer: the KV cache input {spec.name} has no fixed head size")
    return shape


# ---------------------------------------------------------------- a Hugging Face folder as the reference


class HookedModel:
    """A Hugging Face causal LM run by transformers, with the same points taken by forward hooks."""

    def __init__(self, folder, trust_remote_code: bool):
        from toolkit.sources.hf import check_folder, load_model

        config = check_folder(Path(folder), trust_remote_code=trust_remote_code)
        self.model = load_model(Path(folder), config, trust_remote_code=trust_remote_code)
        base = self.model.base_model
        blocks = getattr(base, "layers", None) or getattr(base, "h", None)
        norm = getattr(base, "norm", None) or getattr(base, "ln_f", None)
        if blocks is None or norm is None:
            raise Unsupported(f"per-layer against {folder}: its decoder layers or final norm are not found "
                              "(give the float ONNX export as --reference)")
        self.modules = {"embed_tokens": self.model.get_input_embeddings(),
                        **{f"layers.{i}": block for i, block in enumerate(blocks)}, "norm": norm}
        self.labels = [*self.modules, "lm_head"]
        self.tensors = {label: f"{label} (transformers)" for label in self.labels}

    def run(self, window: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        taken: dict[str, np.ndarray] = {}

        def hook(label):
            def keep(module, args, output):
                value = output[0] if isinstance(output, tuple) else output
                taken[label] = value[0].detach().float().numpy()
            return keep

        handles = [module.register_forward_hook(hook(label)) for label, module in self.modules.items()]
        try:
            with torch.no_grad():
                ids = torch.from_numpy(np.asarray(window, dtype=np.int64)[None])
                taken["lm_head"] = self.model(input_ids=ids, use_cache=False).logits[0].float().numpy()
        finally:
            for handle in handles:
                handle.remove()
        return taken


# ---------------------------------------------------------------- the report's shapes


def per_layer_markdown(result: LmPerLayerResult) -> list[str]:
    rank = {layer.node: number for number, layer in enumerate(result.worst, 1)}
    lines = [
        "## Per-layer error",
        "",
        f"Hidden states of the candidate against the {result.reference_kind} reference `{result.parent}` on "
        f"{result.samples} positions ({result.windows} windows, all positions at once, no KV cache). Own SQNR "
        "is the noise a layer adds to its input's; layers fed by an already damaged input rank after. "
        f"Worst layer: **{result.worst_layer or 'none (every layer exact)'}**.",
        "",
        "| layer | kind | rank | own SQNR (dB) | output SQNR (dB) | relative error | cosine | tensor |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for layer in result.layers:
        lines.append(f"| {layer.node} | {layer.op_type} | {rank.get(layer.node, '–')} "
                     f"| {human_number(layer.local_sqnr_db)} | {human_number(layer.sqnr_db)} "
                     f"| {human_number(layer.relative_error)} | {human_number(layer.cosine, 6)} "
                     f"| {layer.candidate_tensor} |")
    return lines


def per_layer_text(result: LmPerLayerResult) -> str:
    """The per-layer table for the terminal, in network order, and the worst layer named."""
    rows = [f"per-layer error ({result.samples} positions; own SQNR = the noise the layer adds):",
            f"  {'layer':<14} {'own dB':>8} {'out dB':>8} {'rel err':>10} {'cosine':>10}"]
    for layer in result.layers:
        rows.append(f"  {layer.node:<14} {human_number(layer.local_sqnr_db):>8} {human_number(layer.sqnr_db):>8} "
                    f"{human_number(layer.relative_error):>10} {human_number(layer.cosine, 6):>10}")
    worst = result.worst[0] if result.worst else None
    rows.append(f"  worst layer: {worst.node} (own SQNR {human_number(worst.local_sqnr_db)} dB)" if worst
                else "  worst layer: none (every layer exact)")
    return "\n".join(rows)
