"""ONNX models: parse without external data, then confine every external-data location.

CVE-2022-25882 and CVE-2024-27318: a location of `..`, `a/../../x`, an absolute path, a
symlink or a hard link makes the loader read any file the user can read.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

from toolkit.common.text import first_line
from toolkit.errors import BadInput
from toolkit.safety.files import check_exists


def check_onnx_file(path: Path):
    """Parse the protobuf without loading external data, then confine every external location.

    Returns the parsed ModelProto (without external weights) so callers need not parse again.
    """
    check_exists(path)
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:
        raise BadInput(f"{path}: not a readable ONNX model ({first_line(error)})") from None
    if not model.graph.node and not model.graph.output:
        raise BadInput(f"{path}: not an ONNX model (no graph)")
    check_external_data(model, Path(path).parent)
    return model


def all_tensors(model) -> Iterator:
    """Every TensorProto a model holds: initializers, sparse initializers (values and
    indices), node attributes (Constant's value, `tensors`, sparse ones), in the main
    graph, every subgraph (If, Loop, Scan bodies), every function and training graph.
    ORT's sparse path is a known gap, so sparse tensors are walked like dense ones."""
    graphs = [model.graph, *model.functions]
    for info in model.training_info:
        graphs += [info.initialization, info.algorithm]
    while graphs:
        graph = graphs.pop()
        yield from getattr(graph, "initializer", ())  # a FunctionProto has none
        for sparse in getattr(graph, "sparse_initializer", ()):
            yield from (sparse.values, sparse.indices)
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.HasField("t"):
                    yield attribute.t
                yield from attribute.tensors
                sparse_tensors = list(attribute.sparse_tensors)
                if attribute.HasField("sparse_tensor"):
                    sparse_tensors.append(attribute.sparse_tensor)
                for sparse in sparse_tensors:
                    yield from (sparse.values, sparse.indices)
                if attribute.HasField("g"):
                    graphs.append(attribute.g)
                graphs.extend(attribute.graphs)


def external_locations(model) -> list[str]:
    """Every external-data location in a model, wherever the tensor sits (see all_tensors)."""
    locations = []
    for tensor in all_tensors(model):
        for entry in tensor.external_data:
            if entry.key == "location" and (tensor.data_location == 1 or entry.value):
                locations.append(entry.value)
    return locations


def check_external_data(model, folder: Path) -> None:
    """Refuse external data outside `folder`: absolute paths, `..`, symlinks out, hard links.

    Only names and file metadata are looked at (lstat), never the data itself, so a
    refused location is refused before any read.
    """
    folder = Path(os.path.abspath(folder))
    root = folder.resolve()
    for location in external_locations(model):
        _check_location_text(location)
        try:
            _check_location_file(folder, root, location)
        except OSError as error:
            raise BadInput(f"refused: external data location {location[:100]!r}: {error.strerror}") from None


def _check_location_file(folder: Path, root: Path, location: str) -> None:
    target = folder / location
    walked = folder
    for part in Path(location).parts:
        walked = walked / part
        if walked.is_symlink():
            raise BadInput(f"refused: external data {location!r} goes through a symbolic link")
    resolved = target.resolve()
    if root not in resolved.parents:
        raise BadInput(f"refused: external data location {location!r} leaves the model's folder")
    try:
        info = os.lstat(resolved)
    except OSError:
        raise BadInput(f"external data file {location!r} is missing beside the model") from None
    if not stat.S_ISREG(info.st_mode):
        raise BadInput(f"refused: external data {location!r} is not a regular file")
    if info.st_nlink > 1:
        raise BadInput(f"refused: external data {location!r} is a hard link")


def _check_location_text(location: str) -> None:
    if not location or "\x00" in location:
        raise BadInput(f"refused: external data location {location!r} is empty or holds a NUL byte")
    if os.path.isabs(location) or location.startswith(("/", "\\")) or ":" in location or "\\" in location:
        raise BadInput(f"refused: external data location {location!r} is not a plain relative path")
    if ".." in Path(location).parts:
        raise BadInput(f"refused: external data location {location!r} leaves the model's folder")
