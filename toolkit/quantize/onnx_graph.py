"""Small facts about an ONNX graph that the quantizers share: its size on disk, whether it
must be saved with external data, and every node including those inside subgraphs."""

from __future__ import annotations

from pathlib import Path

# protobuf refuses a message over 2 GiB: past this, tensors go to an external data file
LARGE_MODEL_BYTES = 1_800_000_000


def model_bytes(path: Path) -> int:
    """The model file plus the external data files it names."""
    import onnx

    from toolkit.safety.onnx import external_locations

    model = onnx.load(str(path), load_external_data=False)
    files = {path.parent / location for location in external_locations(model)}
    return path.stat().st_size + sum(f.stat().st_size for f in files if f.is_file())


def is_large(path: Path) -> bool:
    return model_bytes(path) > LARGE_MODEL_BYTES


def all_nodes(graph):
    """Every node of `graph`, then those of its subgraphs (If/Loop/Scan bodies), depth first."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.g is not None and attribute.g.node:
                yield from all_nodes(attribute.g)
            for subgraph in attribute.graphs:
                yield from all_nodes(subgraph)
