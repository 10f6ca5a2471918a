"""Small rewrites of a TFLite flatbuffer so ai-edge-quantizer can work on third-party models.

- `with_default_signature`: models converted by older TensorFlow (MediaPipe's among them)
  have no SignatureDef; ai-edge-quantizer calibrates and compares through signatures, so
  the model gets a `serving_default` one built from its subgraph's inputs and outputs.
- `fold_fp16_constants`: fp16-weight models keep their weights as FLOAT16 constants behind
  DEQUANTIZE ops; the quantizer sees only float32 activations feeding the ops and leaves
  them alone. Folding each such DEQUANTIZE into a float32 constant makes the weights
  visible (and quantizable) again.
- `constant_types`: how many constant tensors of each type a model holds, to tell whether
  a quantization changed any weight.
- `op_scopes`: the scopes (as ai-edge-quantizer names ops) of the ops that output given
  tensors, so a recipe keeps exactly those ops float.
- `weighted_op_outputs`: the output tensor names of the ops that read float weights, to tell
  whether a mixed-precision exclusion list leaves any weight to quantize.
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"


def _read(model_bytes: bytes):
    from ai_edge_litert.tools import flatbuffer_utils

    return flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))


def _write(model) -> bytes:
    from ai_edge_litert.tools import flatbuffer_utils

    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _name(tensor) -> str:
    name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name or "")
    return name.removesuffix(":0")


def signature_keys(model_bytes: bytes) -> list[str]:
    model = _read(model_bytes)
    return [_key(sd.signatureKey) for sd in model.signatureDefs or []]


def _key(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def with_default_signature(model_bytes: bytes) -> tuple[bytes, bool]:
    """The model with a `serving_default` signature over its first subgraph, and whether one was added.

    Argument names are the input and output tensors' names (without a `:0` suffix).
    """
    from ai_edge_litert import schema_py_generated as schema

    model = _read(model_bytes)
    if model.signatureDefs:
        return model_bytes, False
    subgraph = model.subgraphs[0]

    def tensor_maps(indices) -> list:
        maps, seen = [], set()
        for position, index in enumerate(indices):
            name = _name(subgraph.tensors[index]) or f"tensor_{position}"
            if name in seen:
                name = f"{name}_{position}"
            seen.add(name)
            mapping = schema.TensorMapT()
            mapping.name, mapping.tensorIndex = name, int(index)
            maps.append(mapping)
        return maps

    signature = schema.SignatureDefT()
    signature.signatureKey = DEFAULT_SIGNATURE
    signature.subgraphIndex = 0
    signature.inputs = tensor_maps(subgraph.inputs)
    signature.outputs = tensor_maps(subgraph.outputs)
    model.signatureDefs = [signature]
    logger.info("added a %s signature with inputs %s", DEFAULT_SIGNATURE, [m.name for m in signature.inputs])
    return _write(model), True


def fold_fp16_constants(model_bytes: bytes) -> tuple[bytes, int]:
    """Replace each DEQUANTIZE of a constant FLOAT16 tensor by a float32 constant; (model, folds)."""
    from ai_edge_litert import schema_py_generated as schema

    model = _read(model_bytes)
    dequantize = {index for index, code in enumerate(model.operatorCodes or [])
                  if max(code.builtinCode, code.deprecatedBuiltinCode) == schema.BuiltinOperator.DEQUANTIZE}
    folds = 0
    for subgraph in model.subgraphs:
        kept = []
        for op in subgraph.operators or []:
            source = subgraph.tensors[op.inputs[0]] if op.opcodeIndex in dequantize and len(op.inputs) else None
            data = _constant_data(model, source)
            if source is None or source.type != schema.TensorType.FLOAT16 or data is None:
                kept.append(op)
                continue
            values = np.frombuffer(data, dtype=np.float16).astype(np.float32)
            buffer = schema.BufferT()
            buffer.data = np.frombuffer(values.tobytes(), dtype=np.uint8)
            model.buffers.append(buffer)
            target = subgraph.tensors[op.outputs[0]]
            target.buffer = len(model.buffers) - 1
            folds += 1
        subgraph.operators = kept
    if not folds:
        return model_bytes, 0
    _drop_unused_fp16(model)
    logger.info("folded %d fp16 constants into float32 ones", folds)
    return _write(model), folds


def _constant_data(model, tensor):
    if tensor is None or not tensor.buffer:
        return None
    data = model.buffers[tensor.buffer].data
    return None if data is None or len(data) == 0 else np.asarray(data, dtype=np.uint8).tobytes()


def _drop_unused_fp16(model) -> None:
    """Empty the buffers of fp16 constants no op reads any more (they would still take bytes)."""
    from ai_edge_litert import schema_py_generated as schema

    for subgraph in model.subgraphs:
        used = {index for op in subgraph.operators or [] for index in op.inputs if index >= 0}
        used.update(subgraph.outputs)
        for index, tensor in enumerate(subgraph.tensors):
            if index not in used and tensor.type == schema.TensorType.FLOAT16 and tensor.buffer:
                model.buffers[tensor.buffer].data = None


def constant_types(model_bytes: bytes) -> Counter:
    """Constant tensors (those holding data) counted by type name: FLOAT32, INT8, FLOAT16, …"""
    from ai_edge_litert.tools import flatbuffer_utils

    model = _read(model_bytes)
    counts: Counter = Counter()
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            if _constant_data(model, tensor) is not None:
                counts[flatbuffer_utils.type_to_name(tensor.type)] += 1
    return counts


def weighted_op_outputs(model_bytes: bytes) -> set[str]:
    """Output tensor names (as the interpreter and ai-edge-quantizer's scopes spell them) of
    every op that reads a float32 constant of two or more dimensions: the layers holding weights."""
    from ai_edge_litert import schema_py_generated as schema

    model = _read(model_bytes)
    outputs: set[str] = set()
    for subgraph in model.subgraphs:
        for op in subgraph.operators or []:
            reads_weight = any(
                index >= 0 and subgraph.tensors[index].type == schema.TensorType.FLOAT32
                and len(subgraph.tensors[index].shape) >= 2
                and _constant_data(model, subgraph.tensors[index]) is not None
                for index in op.inputs
            )
            if reads_weight:
                outputs.update(_key(subgraph.tensors[index].name or b"") for index in op.outputs if index >= 0)
    return outputs


SCOPE_LIMIT = 10000  # ai-edge-quantizer truncates a scope to this many characters


def op_scopes(model_bytes: bytes, tensor_names) -> list[str]:
    """The scope of each op that outputs one of TENSOR_NAMES: its output names, each followed by
    ";" (its input names when it has no named output), as ai-edge-quantizer matches recipes."""
    wanted = set(tensor_names)
    if not wanted:
        return []
    model = _read(model_bytes)
    scopes, found = [], set()
    for subgraph in model.subgraphs:
        for op in subgraph.operators or []:
            outputs = [_key(subgraph.tensors[i].name or b"") for i in op.outputs if i >= 0]
            named = [name for name in outputs if name] or [
                _key(subgraph.tensors[i].name) for i in op.inputs if i >= 0 and subgraph.tensors[i].name]
            if wanted.intersection(outputs):
                found.update(wanted.intersection(outputs))
                scopes.append("".join(f"{name};" for name in named)[:SCOPE_LIMIT])
    if wanted - found:
        logger.warning("no op outputs %s: kept as quantized", ", ".join(sorted(wanted - found)))
    return list(dict.fromkeys(scopes))
