"""The hidden states of a LiteRT language model at each layer, read from its prefill graph.

    graph = LiteRtExposedGraph(Path("exported/qwen2-tflite/model.tflite"))
    values = graph.run(window)  # {"embed_tokens": (positions, hidden), "layers.0": ..., "norm": ..., "lm_head": ...}

The points are the ones `toolkit.lm.per_layer` compares for an ONNX decoder (the token embeddings,
the residual stream after each decoder layer, the final norm and the logits), found in the graph that
litert-torch's generative re-authoring produces (`toolkit.lm.litert_export`):

- every tensor is named after the torch module that made it, scopes joined by '/', e.g.
  `.../TransformerBlock_2;1` (where names of merged ops are joined by ';', the first is the op's own);
- the embedding is the last tensor of the EMBEDDING_LOOKUP's scope (the lookup, then a reshape);
- a decoder layer's output is the last tensor of its `TransformerBlock_N` scope that an op outside
  the scope reads (the residual add the next block or the final norm reads), hidden-wide;
- the final norm is the LM head's input: back from the `logits` output to its FULLY_CONNECTED.

ai-edge-quantizer's int4 keeps the names and the structure (a DEQUANTIZE before the embedding
table, int4 weights in the FULLY_CONNECTEDs), and the points are found again in each graph on its own.

A window runs as `toolkit.lm.litert_decoder.LiteRtDecoder` runs it: from an empty KV cache through the
prefill signatures (a short window padded, a long one in pieces, the cache carried between them), the
rest through `decode`. The interpreter keeps every intermediate tensor
(`experimental_preserve_all_tensors`, each delegated op in a partition of its own), so the points are
read after each call; only the real (unpadded) positions are kept. The op lists come from the
flatbuffer (the interpreter's public API lists no ops, and its private one only the first subgraph's).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit.errors import BadInput, Unsupported

logger = logging.getLogger(__name__)

BLOCK_SCOPE = re.compile(r"(?:TransformerBlock_|transformer_blocks\.)(\d+)(?![\d])")
LOOKUP_OPS = ("EMBEDDING_LOOKUP", "GATHER")
HEAD_OPS = ("FULLY_CONNECTED", "BATCH_MATMUL")
# between the final norm and the LM head, or the head and the logits output
PASS_THROUGH_OPS = ("RESHAPE", "DEQUANTIZE", "QUANTIZE", "CAST", "SQUEEZE", "EXPAND_DIMS")


@dataclass
class Op:
    name: str  # the builtin operator, e.g. FULLY_CONNECTED
    inputs: list[int]
    outputs: list[int]


@dataclass
class SignatureGraph:
    """One signature's subgraph: its ops in execution order, tensor names and shapes, and where its points are."""

    key: str
    subgraph: int
    ops: list[Op]
    names: dict[int, str]
    shapes: dict[int, tuple[int, ...]]
    logits: int  # tensor index of the logits output
    points: dict[str, int] | None = None  # label -> tensor index, in network order


def scope_of(name: str) -> str:
    """The op's own scope: the first of merged names (';'-joined), less its ';N' suffix."""
    return name.split(";", 1)[0]


def read_signature_graphs(model_path: Path) -> dict[str, SignatureGraph]:
    """Every signature's subgraph of a .tflite flatbuffer (read in place with the schema ai-edge-litert ships)."""
    import mmap

    with open(model_path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return signature_graphs(data)


def signature_graphs(data) -> dict[str, SignatureGraph]:
    from ai_edge_litert import schema_py_generated as schema

    operator_names = {value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    model = schema.Model.GetRootAs(data, 0)
    codes = [max(model.OperatorCodes(i).BuiltinCode(), model.OperatorCodes(i).DeprecatedBuiltinCode())
             for i in range(model.OperatorCodesLength())]
    graphs = {}
    for s_index in range(model.SignatureDefsLength()):
        signature = model.SignatureDefs(s_index)
        key = signature.SignatureKey().decode()
        subgraph_index = signature.SubgraphIndex()
        outputs = {signature.Outputs(i).Name().decode(): signature.Outputs(i).TensorIndex()
                   for i in range(signature.OutputsLength())}
        if "logits" not in outputs:
            continue
        subgraph = model.Subgraphs(subgraph_index)
        names, shapes = {}, {}
        for t_index in range(subgraph.TensorsLength()):
            tensor = subgraph.Tensors(t_index)
            names[t_index] = (tensor.Name() or b"").decode(errors="replace")
            shapes[t_index] = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
        ops = []
        for o_index in range(subgraph.OperatorsLength()):
            operator = subgraph.Operators(o_index)
            ops.append(Op(operator_names.get(codes[operator.OpcodeIndex()], "CUSTOM"),
                          [int(i) for i in operator.InputsAsNumpy()] if operator.InputsLength() else [],
                          [int(i) for i in operator.OutputsAsNumpy()] if operator.OutputsLength() else []))
        graphs[key] = SignatureGraph(key, subgraph_index, ops, names, shapes, outputs["logits"])
    return graphs


# ---------------------------------------------------------------- finding the points


def find_points(graph: SignatureGraph) -> dict[str, int]:
    """label -> tensor index: embed_tokens, layers.N, norm, lm_head, in network order."""
    producer = {tensor: order for order, op in enumerate(graph.ops) for tensor in op.outputs if tensor >= 0}
    norm = final_norm_tensor(graph, producer)
    if norm is None:
        raise Unsupported(f"per-layer: the LM head (a FULLY_CONNECTED before the logits) is not found in "
                          f"the {graph.key} signature")
    width = graph.shapes[norm][-1]
    points = {}
    embedding = embedding_tensor(graph, width)
    if embedding is not None:
        points["embed_tokens"] = embedding
    points.update({f"layers.{layer}": tensor for layer, tensor in block_outputs(graph, width)})
    points["norm"] = norm
    points["lm_head"] = graph.logits
    return points


def final_norm_tensor(graph: SignatureGraph, producer: dict[int, int]) -> int | None:
    """The LM head's input: back from the logits through reshapes to the head, then past a dequantize."""
    order = producer.get(graph.logits)
    for _ in range(8):
        if order is None or graph.ops[order].name in HEAD_OPS:
            break
        order = producer.get(graph.ops[order].inputs[0]) if graph.ops[order].name in PASS_THROUGH_OPS else None
    if order is None or graph.ops[order].name not in HEAD_OPS:
        return None
    tensor = graph.ops[order].inputs[0]
    for _ in range(4):
        before = producer.get(tensor)
        if before is None or graph.ops[before].name not in PASS_THROUGH_OPS:
            break
        tensor = graph.ops[before].inputs[0]
    return tensor if tensor in producer else None


def embedding_tensor(graph: SignatureGraph, width: int) -> int | None:
    """The last hidden-wide tensor of the token lookup's scope (the lookup, then a reshape to (1, N, hidden))."""
    lookup = next((op for op in graph.ops if op.name in LOOKUP_OPS and op.outputs), None)
    if lookup is None:
        return None
    scope = scope_of(graph.names[lookup.outputs[0]])
    found = None
    for op in graph.ops:
        for tensor in op.outputs:
            if tensor >= 0 and scope_of(graph.names[tensor]) == scope and graph.shapes[tensor][-1:] == (width,):
                found = tensor
    return found


def block_outputs(graph: SignatureGraph, width: int) -> list[tuple[int, int]]:
    """(layer, tensor): for each transformer block, the last hidden-wide tensor of its scope read outside it."""
    block_of: dict[int, tuple[int, int]] = {}  # tensor -> (layer, position of its producer)
    for order, op in enumerate(graph.ops):
        for tensor in op.outputs:
            match = BLOCK_SCOPE.search(scope_of(graph.names.get(tensor, ""))) if tensor >= 0 else None
            if match:
                block_of[tensor] = (int(match.group(1)), order)
    last: dict[int, tuple[int, int]] = {}  # layer -> (position, tensor)
    for op in graph.ops:
        readers = {block_of[tensor][0] for tensor in op.outputs if tensor in block_of}
        for tensor in op.inputs:
            layer, order = block_of.get(tensor, (None, -1))
            if (layer is not None and layer not in readers and graph.shapes[tensor][-1:] == (width,)
                    and order >= last.get(layer, (-1, 0))[0]):
                last[layer] = (order, tensor)
    return [(layer, last[layer][1]) for layer in sorted(last)]


# ---------------------------------------------------------------- running a window


class LiteRtExposedGraph:
    """A LiteRT language model whose prefill and decode signatures keep every intermediate tensor.
    `labels` / `tensors` / `run(window)` as `toolkit.lm.per_layer.ExposedGraph` has them."""

    def __init__(self, model_path: Path, threads: int | None = None):
        from toolkit.lm.litert_decoder import DECODE, check_cache, check_signatures

        self.interpreter = preserving_interpreter(model_path, threads)
        graphs = read_signature_graphs(Path(model_path))
        self.prefill_lengths = check_signatures(list(self.interpreter.get_signature_list()))
        self.keys = {length: f"prefill_{length}" for length in self.prefill_lengths}
        self.keys[1] = self.keys.get(1, DECODE)
        self.graphs = {key: graphs[key] for key in self.keys.values() if key in graphs}
        if len(self.graphs) < len(set(self.keys.values())):
            raise Unsupported(f"per-layer: a signature of {Path(model_path).name} has no logits output")
        self.runners = {key: self.interpreter.get_signature_runner(key) for key in self.graphs}
        details = self.runners[DECODE].get_input_details()
        self.cache_specs = {name: (tuple(int(x) for x in item["shape"]), item["dtype"])
                            for name, item in details.items() if name.startswith("kv_cache_")}
        self.context = check_cache(self.cache_specs)
        self.token_dtype = details["tokens"]["dtype"]
        self.position_dtype = details["input_pos"]["dtype"]
        first = self.graphs[self.keys[self.prefill_lengths[-1]]]
        first.points = find_points(first)
        self.labels = list(first.points)
        self.tensors = {label: first.names[index] or f"tensor {index}" for label, index in first.points.items()}

    def points(self, key: str) -> dict[str, int]:
        """The points of one signature's graph, found in it (and checked to give the same labels)."""
        graph = self.graphs[key]
        if graph.points is None:
            graph.points = find_points(graph)
            if list(graph.points) != self.labels:
                raise Unsupported(f"per-layer: the {key} signature gives the points {list(graph.points)}, "
                                  f"the {self.keys[self.prefill_lengths[-1]]} signature {self.labels}")
        return graph.points

    def run(self, window: np.ndarray) -> dict[str, np.ndarray]:
        """label -> (positions, width) for the window's tokens, from an empty cache."""
        ids = np.asarray(window, dtype=np.int64).reshape(-1)
        if ids.size > self.context:
            raise BadInput(f"per-layer: a window of {ids.size} tokens does not fit the model's KV cache "
                           f"of {self.context} positions")
        cache = {name: np.zeros(shape, dtype) for name, (shape, dtype) in self.cache_specs.items()}
        pieces: dict[str, list[np.ndarray]] = {label: [] for label in self.labels}
        done = 0
        while done < ids.size:
            length = self.piece_length(ids.size - done, done)
            count = min(ids.size - done, length)
            tokens = np.zeros(length, dtype=self.token_dtype)
            tokens[:count] = ids[done:done + count]
            key = self.keys[length]
            cache = self.invoke(key, tokens, done, cache)
            graph = self.graphs[key]
            for label, index in self.points(key).items():
                value = self.interpreter.get_tensor(index, graph.subgraph)
                pieces[label].append(value.reshape(-1, value.shape[-1])[:count].astype(np.float32))
            done += count
        return {label: np.concatenate(parts) for label, parts in pieces.items()}

    def piece_length(self, left: int, position: int) -> int:
        """The prefill window for the next piece, as LiteRtDecoder picks it; 1 (decode) where none fits."""
        fitting = [n for n in self.prefill_lengths if position + n <= self.context]
        if left == 1 or not fitting:
            return 1
        return next((n for n in fitting if n >= left), fitting[-1])

    def invoke(self, key: str, tokens: np.ndarray, start: int, cache: dict) -> dict:
        from toolkit.common.quiet import quiet

        positions = np.arange(start, start + tokens.size, dtype=self.position_dtype)
        try:
            with quiet():  # LiteRT logs its XNNPACK delegate on stderr when a signature first runs
                outputs = self.runners[key](tokens=tokens.reshape(1, -1), input_pos=positions, **cache)
        except (RuntimeError, ValueError) as error:
            from toolkit.common.text import first_line

            raise BadInput(f"per-layer: the {key} signature failed: {first_line(error)[:200]}") from None
        return {name: outputs[name] for name in self.cache_specs}


def preserving_interpreter(model_path: Path, threads: int | None):
    """ai-edge-litert's interpreter keeping every intermediate tensor, on a checked .tflite file."""
    import warnings

    from toolkit.common.quiet import quiet
    from toolkit.safety.tflite import check_tflite_file

    check_tflite_file(Path(model_path))
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        from toolkit.errors import missing_library

        raise missing_library("ai-edge-litert") from None
    with quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "preserve_all_tensors is for debugging": that is what this is
        return Interpreter(model_path=str(model_path), num_threads=threads or None,
                           experimental_preserve_all_tensors=True)
