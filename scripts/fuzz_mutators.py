"""Mutators for scripts/fuzz_suite.py: bytes -> bytes, generic or format-aware.

Generic ones flip bits, set bytes, overwrite aligned int32s with extremes, truncate,
replace with random bytes, cut/duplicate/insert chunks and zero regions. Format-aware
ones edit ONNX protobuf fields (dims, attributes, dtypes, op types, wiring, opsets,
external data), TFLite shape vectors and root offsets, safetensors headers, and YAML
values (plus python tags, alias bombs and deep nesting).
"""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INT_EXTREMES = (0, 1, -1, 2**31 - 1, -(2**31), 2**32 - 1, 2**63 - 1, 65536, 10**9)


# ---------------------------------------------------------------- generic mutators (bytes -> bytes)


def bit_flips(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 4, 8, 32))):
        position = rng.randrange(len(out))
        out[position] ^= 1 << rng.randrange(8)
    return bytes(out)


def byte_values(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        out[rng.randrange(len(out))] = rng.choice((0, 0xFF, 0x7F, 0x80, 0x01, rng.randrange(256)))
    return bytes(out)


def int_overwrite(data: bytes, rng: random.Random) -> bytes:
    """An extreme little-endian int32 at an aligned position: offsets, lengths, dims."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        position = rng.randrange(0, max(1, len(out) - 4)) & ~3
        value = rng.choice(INT_EXTREMES) & 0xFFFFFFFF
        out[position:position + 4] = struct.pack("<I", value)
    return bytes(out)


def truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.choice((0, 1, 4, 8, 16, rng.randrange(len(data)), len(data) - 1))]


def random_bytes(data: bytes, rng: random.Random) -> bytes:
    body = rng.randbytes(rng.choice((1, 8, 64, 1024, 65536)))
    return data[:8] + body if rng.random() < 0.5 else body  # keep the magic half of the time


def chunk_edit(data: bytes, rng: random.Random) -> bytes:
    start = rng.randrange(len(data))
    length = rng.randint(1, max(1, min(4096, len(data) - start)))
    choice = rng.random()
    if choice < 0.35:
        return data[:start] + data[start + length:]
    if choice < 0.7:
        return data[:start] + data[start:start + length] * rng.randint(2, 4) + data[start + length:]
    return data[:start] + rng.randbytes(length) + data[start:]


def zero_fill(data: bytes, rng: random.Random) -> bytes:
    start = rng.randrange(len(data))
    length = rng.randint(1, max(1, min(8192, len(data) - start)))
    return data[:start] + b"\0" * length + data[start + length:]


GENERIC = (bit_flips, byte_values, int_overwrite, truncate, random_bytes, chunk_edit, zero_fill)


# ---------------------------------------------------------------- structured mutators


def onnx_structured(data: bytes, rng: random.Random) -> bytes:
    """Huge or odd dims, attribute values, dtypes, op types, wiring, opsets, external data."""
    import onnx
    from onnx import TensorProto

    model = onnx.load_from_string(data)
    graph = model.graph
    choice = rng.randrange(8)
    if choice == 0 and graph.initializer:  # initializer dims no longer match its bytes
        tensor = rng.choice(graph.initializer)
        if tensor.dims:
            tensor.dims[rng.randrange(len(tensor.dims))] = rng.choice(INT_EXTREMES[:7])
    elif choice == 1:  # graph input dims
        dims = graph.input[0].type.tensor_type.shape.dim
        if dims:
            dim = dims[rng.randrange(len(dims))]
            dim.dim_value = rng.choice((0, 2**31 - 1, 2**40, 10**6))
    elif choice == 2 and graph.node:  # attribute ints
        node = rng.choice(graph.node)
        for attribute in node.attribute:
            if attribute.ints:
                attribute.ints[rng.randrange(len(attribute.ints))] = rng.choice(INT_EXTREMES)
            elif attribute.type == onnx.AttributeProto.INT:
                attribute.i = rng.choice(INT_EXTREMES)
    elif choice == 3 and graph.initializer:  # data type
        rng.choice(graph.initializer).data_type = rng.randrange(0, 26)
    elif choice == 4 and graph.node:  # op type
        rng.choice(graph.node).op_type = rng.choice(
            ("Loop", "If", "Scan", "Einsum", "Resize", "NonMaxSuppression", "Upsample", "Xyz", "", "Conv", "Gather"))
    elif choice == 5 and graph.node:  # wiring: a node eats its own output, or a name that does not exist
        node = rng.choice(graph.node)
        if node.input:
            node.input[rng.randrange(len(node.input))] = rng.choice((node.output[0], "nowhere", ""))
    elif choice == 6:  # opset and IR version
        model.opset_import[0].version = rng.choice((0, 1, 7, 99, 10**6))
        if rng.random() < 0.5:
            model.ir_version = rng.choice((0, 1, 3, 99))
    elif graph.initializer:  # external data: escapes, huge offsets, missing files
        tensor = rng.choice(graph.initializer)
        tensor.data_location = TensorProto.EXTERNAL
        tensor.ClearField("raw_data")
        for key, value in (("location", rng.choice(("../../x", "a/../../x", "/etc/passwd", "missing.bin",
                                                    "model.onnx", "."))),
                           ("offset", str(rng.choice((0, 2**40)))), ("length", str(rng.choice((4, 2**40))))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
    return model.SerializeToString()


def tflite_structured(data: bytes, rng: random.Random) -> bytes:
    """Huge, zero or negative dimensions in a TFLite shape vector; or a wild root offset."""
    out = bytearray(data)
    if rng.random() < 0.15:
        out[0:4] = struct.pack("<I", rng.choice((0, 4, len(data), len(data) + 4, 2**31 - 1)))
        return bytes(out)
    vectors = _shape_vectors(data)
    if not vectors:
        return int_overwrite(data, rng)
    start, length = rng.choice(vectors)
    index = rng.randrange(length)
    value = rng.choice((2**31 - 1, 0, -1, 65536, 2**20, -(2**31)))
    out[start + 4 + 4 * index: start + 8 + 4 * index] = struct.pack("<i", value)
    return bytes(out)


def _shape_vectors(data: bytes) -> list[tuple[int, int]]:
    """Aligned int32 vectors of length 1-4 holding small positive dims (likely tensor shapes)."""
    found = []
    for start in range(0, len(data) - 20, 4):
        length = struct.unpack_from("<I", data, start)[0]
        if 1 <= length <= 4 and start + 4 + 4 * length <= len(data):
            dims = struct.unpack_from(f"<{length}i", data, start + 4)
            if all(1 <= d <= 128 for d in dims) and (length > 1 or dims[0] in (8, 10, 64)):
                found.append((start, length))
    return found


def safetensors_structured(data: bytes, rng: random.Random) -> bytes:
    size = struct.unpack_from("<Q", data)[0]
    header = json.loads(data[8:8 + size])
    body = data[8 + size:]
    names = [k for k in header if k != "__metadata__"]
    name = rng.choice(names)
    choice = rng.randrange(7)
    entry = header[name]
    if choice == 0:
        entry["data_offsets"] = [rng.choice((0, 4, 2**40)), rng.choice((0, 8, 2**40, len(body) + 8))]
    elif choice == 1:
        entry["shape"] = [rng.choice((0, 2**31, 2**62, -1, 3))] + entry["shape"][1:]
    elif choice == 2:
        entry["dtype"] = rng.choice(("F64", "BF16", "I8", "X", "", None, 7))
    elif choice == 3:
        header[name + "_copy"] = dict(entry)  # two tensors on the same bytes
    elif choice == 4:
        header["__metadata__"] = rng.choice(({"a": 1}, [1], "x", {"format": "pt" * 1000}))
    elif choice == 5:
        raw = json.dumps(header).encode()
        return struct.pack("<Q", rng.choice((len(raw) + 1, len(raw) - 1, 2**40, 0, 100 * 2**20 + 1))) + raw + body
    else:
        del header[name]
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


def yaml_structured(data: bytes, rng: random.Random) -> bytes:
    import yaml

    text = data.decode("utf-8", "replace")
    choice = rng.randrange(10)
    if choice == 0:
        return (text + f"\nextra: !!python/object/apply:os.system ['touch {ROOT}/fuzz-canary']\n").encode()
    if choice == 1:
        lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
        lines += [f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]" for i in range(10)]
        return ("\n".join(lines) + "\n").encode()
    if choice == 2:
        depth = rng.choice((200, 2000, 20000))
        return ("x: " + "[" * depth + "]" * depth + "\n").encode()
    document = yaml.safe_load(text)
    paths = list(_yaml_paths(document))
    if not paths:
        return bit_flips(data, rng)
    parent, key = rng.choice(paths)
    if choice == 3:
        del parent[key]
    else:
        parent[key] = rng.choice((None, -1, 0, 1e308, float("nan"), float("inf"), "", "x" * 5000, [], {},
                                  True, [1, 2], {"a": {"b": None}}, "-oProxyCommand=touch /tmp/x", 10**30,
                                  "2024-01-01", "../../etc/passwd"))
    return yaml.safe_dump(document, sort_keys=False).encode()


def _yaml_paths(node, limit: int = 2000):
    stack = [node]
    count = 0
    while stack and count < limit:
        current = stack.pop()
        items = current.items() if isinstance(current, dict) else enumerate(current) if isinstance(current, list) else ()
        for key, value in list(items):
            count += 1
            yield current, key
            if isinstance(value, (dict, list)):
                stack.append(value)


STRUCTURED = {"onnx": onnx_structured, "tflite": tflite_structured, "safetensors": safetensors_structured,
              "yaml": yaml_structured}
