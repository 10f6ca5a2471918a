"""TFLite flatbuffers: the identifier, truncation, and graph shapes that crash the interpreter."""

from __future__ import annotations

import struct
from pathlib import Path

from toolkit.common.text import first_line
from toolkit.errors import BadInput
from toolkit.safety.files import check_exists

TFLITE_MAGIC = b"TFL3"
# Ops whose second input may legitimately be absent (-1): the LSTM family's CIFG weights.
_OPTIONAL_SECOND_INPUT = {"LSTM", "UNIDIRECTIONAL_SEQUENCE_LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM"}


def check_tflite_file(path: Path) -> None:
    check_exists(path)
    with open(path, "rb") as handle:
        head = handle.read(8)
    if len(head) < 8 or head[4:8] != TFLITE_MAGIC:
        raise BadInput(f"{path}: not a TFLite model (no TFL3 identifier)")
    root_offset = struct.unpack("<I", head[:4])[0]
    if root_offset + 4 > Path(path).stat().st_size:
        raise BadInput(f"{path}: not a valid TFLite model (truncated flatbuffer)")
    check_tflite_graph(path)


def check_tflite_graph(path: Path) -> None:
    """Refuse graph shapes that crash the TFLite interpreter natively rather than failing.

    Found by the fuzz suite (ai-edge-litert 2.3.0): an operator whose first or second
    input is -1 ("absent") segfaults TRANSPOSE, RESHAPE and FULLY_CONNECTED kernels, and
    an output of -1 segfaults too; a dimension near INT_MAX overflows
    in allocate_tensors (tensorflow#111458). Read with the flatbuffer schema that ships
    with ai-edge-litert, lazily: no buffer is copied. Skipped if the schema is missing.
    """
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        return
    import mmap

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        size = len(data)
        try:
            model = schema.Model.GetRootAs(data, 0)
            codes = [max(model.OperatorCodes(i).BuiltinCode(), model.OperatorCodes(i).DeprecatedBuiltinCode())
                     for i in range(_bounded(model.OperatorCodesLength(), size))]
            for g in range(_bounded(model.SubgraphsLength(), size)):
                graph = model.Subgraphs(g)
                tensors = _bounded(graph.TensorsLength(), size)
                for t in range(tensors):
                    shape = [int(d) for d in graph.Tensors(t).ShapeAsNumpy()] if graph.Tensors(t).ShapeLength() else []
                    if any(d < 0 or d > 2**30 for d in shape):
                        raise BadInput(f"{path}: refused: tensor {t} has a dimension out of range ({shape})")
                for o in range(_bounded(graph.OperatorsLength(), size)):
                    op = graph.Operators(o)
                    inputs = [int(i) for i in op.InputsAsNumpy()] if op.InputsLength() else []
                    code = codes[op.OpcodeIndex()] if op.OpcodeIndex() < len(codes) else -1
                    name = names.get(code, str(code))
                    required = 1 if name in _OPTIONAL_SECOND_INPUT else 2
                    outputs = [int(i) for i in op.OutputsAsNumpy()] if op.OutputsLength() else []
                    if any(i >= tensors or i < -1 for i in inputs) or -1 in inputs[:required]:
                        raise BadInput(f"{path}: refused: operator {o} ({name}) names a missing input tensor")
                    if any(i >= tensors or i < 0 for i in outputs):
                        raise BadInput(f"{path}: refused: operator {o} ({name}) names a missing output tensor")
        except BadInput:
            raise
        except Exception as error:  # the flatbuffer reader raises several types on garbage
            raise BadInput(f"{path}: not a valid TFLite model ({first_line(error)})") from None


def _bounded(length: int, size: int) -> int:
    if length < 0 or length * 4 > size:
        raise BadInput("not a valid TFLite model (a vector is longer than the file)")
    return length
