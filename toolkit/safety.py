"""Checks that run before an untrusted model file is parsed by a native library.

They turn known attack shapes into clean errors: ONNX external data that points out of
the model's folder (CVE-2022-25882, CVE-2024-27318), files that are not what their
suffix says, truncated flatbuffers.
"""

from __future__ import annotations

import os
from pathlib import Path

from toolkit.errors import BadInput

TFLITE_MAGIC = b"TFL3"


def check_exists(path: Path) -> None:
    if not path.exists():
        raise BadInput(f"{path}: no such file")
    if not path.is_file():
        raise BadInput(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise BadInput(f"{path}: the file is empty")


def check_tflite_file(path: Path) -> None:
    check_exists(path)
    with open(path, "rb") as handle:
        head = handle.read(8)
    if len(head) < 8 or head[4:8] != TFLITE_MAGIC:
        raise BadInput(f"{path}: not a TFLite model (no TFL3 identifier)")


def check_onnx_file(path: Path) -> None:
    """Parse the protobuf without loading external data, then confine every external location."""
    check_exists(path)
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:
        raise BadInput(f"{path}: not a readable ONNX model ({str(error).splitlines()[0][:200]})") from None
    if not model.graph.node and not model.graph.output:
        raise BadInput(f"{path}: not an ONNX model (no graph)")
    check_external_data(model, path.parent)


def external_locations(model) -> list[str]:
    from onnx.external_data_helper import _get_all_tensors

    locations = []
    for tensor in _get_all_tensors(model):
        if tensor.data_location == 1:  # TensorProto.EXTERNAL
            for entry in tensor.external_data:
                if entry.key == "location":
                    locations.append(entry.value)
    return locations


def check_external_data(model, folder: Path) -> None:
    """Refuse external data outside `folder`: absolute paths, `..`, symlinks out, hard links."""
    root = folder.resolve()
    for location in external_locations(model):
        if not location or os.path.isabs(location) or location.startswith(("/", "\\")) or ":" in location:
            raise BadInput(f"refused: external data location {location!r} is not a plain relative path")
        parts = Path(location).parts
        if ".." in parts:
            raise BadInput(f"refused: external data location {location!r} leaves the model's folder")
        target = folder / location
        if target.is_symlink() or any(p.is_symlink() for p in target.parents if p != root and root in p.parents):
            raise BadInput(f"refused: external data {location!r} is a symbolic link")
        resolved = target.resolve()
        if root not in resolved.parents:
            raise BadInput(f"refused: external data location {location!r} leaves the model's folder")
        if resolved.exists() and resolved.stat().st_nlink > 1:
            raise BadInput(f"refused: external data {location!r} is a hard link")
        if not resolved.is_file():
            raise BadInput(f"external data file {location!r} is missing beside the model")
