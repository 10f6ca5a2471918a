"""Safetensors files, opened with the library's own reader (safe_open) before anything loads them."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

from toolkit.common.text import first_line
from toolkit.errors import BadInput
from toolkit.safety.files import check_exists

SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024  # the safetensors format's own cap
# Only to explain a refused tensor in bytes; the library decides what is valid.
_DTYPE_BITS = {
    "BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8,
    "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32, "I64": 64, "U64": 64, "F64": 64, "C64": 64,
}
# serde's words for a header that is JSON but not the shape the format requires
_SCHEMA_ERRORS = ("invalid type", "invalid value", "unknown variant", "missing field", "unknown field",
                  "invalid length", "duplicate field")


def check_safetensors(path: Path, max_header: int = SAFETENSORS_MAX_HEADER) -> dict:
    """Open the file with `safetensors.safe_open` and return its header.

    safe_open memory-maps the file and reads the header only; it refuses a header over
    100 MB or not JSON, an unknown dtype, a negative shape, a byte range outside the
    file or not as long as shape × dtype, and ranges that do not tile the data exactly
    (no overlap, hole or trailing bytes: no polyglot files). Its errors become one line
    (BadInput). `max_header` can be stricter than the format's cap.

    Returns {tensor name: {"dtype", "shape"}}, plus "__metadata__" when the file has it.
    """
    path = Path(path)
    check_exists(path)
    header_size = _header_size(path, max_header)
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np") as reader:
            header: dict = {}
            for name in reader.keys():
                tensor = reader.get_slice(name)
                header[name] = {"dtype": tensor.get_dtype(), "shape": list(tensor.get_shape())}
            metadata = reader.metadata()
    except SafetensorError as error:
        raise BadInput(f"{path}: {_reason(first_line(error), path, header_size)}") from None
    except (OSError, ValueError, RecursionError) as error:
        raise BadInput(f"{path}: not a readable safetensors file ({first_line(error)})") from None
    if metadata is not None:
        header["__metadata__"] = dict(metadata)
    return header


def _header_size(path: Path, max_header: int) -> int:
    """The 8-byte little-endian header length, checked against the limit and the file's size."""
    with open(path, "rb") as handle:
        prefix = handle.read(8)
    if len(prefix) < 8:
        raise BadInput(f"{path}: not a safetensors file (shorter than its 8-byte header size)")
    header_size = struct.unpack("<Q", prefix)[0]
    if header_size > max_header:
        raise BadInput(f"{path}: safetensors header of {header_size} bytes is over the {max_header}-byte limit")
    if 8 + header_size > path.stat().st_size:
        raise BadInput(f"{path}: not a valid safetensors file (header runs past the end of the file)")
    return header_size


def _reason(message: str, path: Path, header_size: int) -> str:
    """The library's error, said as what is wrong with the file."""
    detail = message.removeprefix("Error while deserializing header: ")
    if "invalid shape, data type, or offset" in detail:  # the library names neither tensor nor cause
        return _explain_tensor(path, header_size) or f"not a valid safetensors file ({detail})"
    if detail.startswith("invalid offset for tensor"):
        tensor = detail.removeprefix("invalid offset for tensor").strip()
        return (f"tensor {tensor} does not start where the one before it ends (tensors must tile the data: "
                f"no overlap, no hole)")
    if "not fully covered" in detail:
        return "data after the last tensor (a safetensors file has no trailing data)"
    if detail.startswith("invalid JSON in header: unknown variant"):
        return f"a tensor has an unknown dtype ({detail.removeprefix('invalid JSON in header: ')[:120]})"
    if detail.startswith("invalid JSON in header: invalid value") and "expected usize" in detail:
        return "a tensor has an invalid shape or byte offsets (negative or not an integer)"
    if detail.startswith("invalid JSON in header: ") and detail.removeprefix(
            "invalid JSON in header: ").startswith(_SCHEMA_ERRORS):
        return f"not a valid safetensors header ({detail.removeprefix('invalid JSON in header: ')})"
    if detail.startswith(("invalid JSON in header", "invalid UTF-8 in header")):
        return f"not a valid safetensors file (the header is not JSON: {detail})"
    return f"not a valid safetensors file ({detail})"


def _explain_tensor(path: Path, header_size: int) -> str | None:
    """Which tensor's byte range is wrong, and how (read from the JSON header, bounded above)."""
    with open(path, "rb") as handle:
        handle.seek(8)
        raw = handle.read(header_size)
    data_bytes = path.stat().st_size - 8 - header_size
    try:
        tensors = [(name, entry["dtype"], entry["shape"], *entry["data_offsets"])
                   for name, entry in json.loads(raw).items() if name != "__metadata__"]
    except (ValueError, TypeError, KeyError, RecursionError):
        return None
    for name, dtype, shape, start, end in tensors:
        if end > data_bytes or start > end:
            return f"tensor {name[:80]!r} has byte offsets outside the file"
        needed = math.ceil(math.prod(shape) * _DTYPE_BITS[dtype] / 8) if dtype in _DTYPE_BITS else end - start
        if needed != end - start:
            return f"tensor {name[:80]!r} holds {end - start} bytes, not the {needed} its shape and dtype need"
    return None
