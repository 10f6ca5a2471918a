"""The input shapes a bench or an estimate uses, and where each dimension came from.

A symbolic dimension is never silently taken as 1 when it changes the work: in order, the
user's `--shapes NAME=AxB`, the shapes the export was traced with (its manifest; not when
the user sets `--seq-len`), the
Hugging Face config beside the source (channels, image size; a sequence length the user
sets with `--seq-len`, default 128 capped by the config's positions), and a batch of 1 (one
request). A dimension nothing explains is still taken as 1, with a warning, and the report
says so (`guessed`).
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

from toolkit.errors import BadInput

logger = logging.getLogger(__name__)

DEFAULT_SEQUENCE_LENGTH = 128
BATCH_NAMES = ("batch", "batch_size", "n", "unk__batch")
SEQUENCE_NAMES = ("sequence", "sequence_length", "seq", "seq_len", "tokens", "num_tokens", "past_sequence_length")
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")


def parse_shapes(items) -> dict[str, list[int]]:
    """`NAME=1x3x224x224` (repeatable, or comma-separated) → {name: [1, 3, 224, 224]}."""
    shapes = {}
    for item in items or []:
        for part in str(item).split(","):
            name, sep, dims = part.strip().partition("=")
            try:
                shape = [int(d) for d in dims.lower().split("x")] if sep and name else None
            except ValueError:
                shape = None
            if not shape or any(d < 1 for d in shape):
                raise BadInput(f"--shapes {part.strip()!r}: write NAME=AxB with positive sizes, e.g. "
                               f"input_ids=1x128")
            shapes[name.strip()] = shape
    return shapes


def model_inputs(path: Path) -> list:
    """The model's inputs as (name, shape with str/None for symbolic dims, dtype)."""
    if path.suffix.lower() == ".onnx":
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
        initializers = {init.name for init in graph.initializer}
        result = []
        for value in graph.input:
            if value.name in initializers:
                continue
            tensor = value.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim]
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
            result.append((value.name, dims, dtype))
        return result
    from toolkit.runtime import open_model

    return [(spec.name, list(spec.shape), spec.dtype) for spec in open_model(path).inputs]


def export_facts(path: Path) -> tuple[dict, dict]:
    """(shapes the export was traced with, the Hugging Face config beside its source), as found."""
    from toolkit.artifacts import artifact_folder_of, read_manifest

    traced, config = {}, {}
    folder = artifact_folder_of(path)
    seen = set()
    while folder is not None and folder not in seen:  # follow quantize → export lineage
        seen.add(folder)
        manifest = read_manifest(folder)
        traced = traced or dict((manifest.get("options") or {}).get("input_shapes") or {})
        candidates = [folder / "config.json"]
        source = manifest.get("source") or {}
        for key in ("path", "spec"):
            if isinstance(source.get(key), str):
                candidates.append(Path(source[key]) / "config.json")
        for candidate in candidates:
            if not config and candidate.is_file():
                try:
                    config = json.loads(candidate.read_text())
                except (OSError, ValueError):
                    config = {}
        parent = source.get("path") or source.get("spec")
        folder = Path(parent) if isinstance(parent, str) and (Path(parent) / "manifest.json").is_file() else None
    return traced, config


def _config_value(config: dict, *keys):
    for key in keys:
        for scope in (config, config.get("vision_config") or {}, config.get("text_config") or {}):
            if scope.get(key) is not None:
                return scope[key]
    return None


def _dim_for(name: str, axis: int, rank: int, dim, config: dict, seq_len: int | None):
    """(size, where it came from) for one symbolic dimension; size None when nothing says."""
    label = str(dim or "").lower()
    if axis == 0 and (label in BATCH_NAMES or "batch" in label or rank > 1 or not label):
        return 1, "batch 1 (one request)"
    if "batch" in label:
        return 1, "batch 1 (one request)"
    if label in SEQUENCE_NAMES or "sequence" in label or (name in TOKEN_INPUTS and axis == 1):
        if seq_len:
            return seq_len, "--seq-len"
        positions = _config_value(config, "max_position_embeddings", "n_positions")
        length = min(DEFAULT_SEQUENCE_LENGTH, int(positions)) if positions else DEFAULT_SEQUENCE_LENGTH
        return length, f"sequence length {length} (default; set --seq-len)"
    if "channel" in label or (rank == 4 and axis == 1 and "pixel" in name):
        channels = _config_value(config, "num_channels")
        return (int(channels), "config.json num_channels") if channels else (3, "3 channels (image input)")
    if label in ("height", "width") or (rank == 4 and axis in (2, 3) and "pixel" in name):
        size = _config_value(config, "image_size")
        if isinstance(size, list | tuple):
            size = size[0 if label == "height" or axis == 2 else -1]
        return (int(size), "config.json image_size") if size else (None, "")
    return None, ""


def resolve_shapes(path: Path, *, shapes=None, seq_len: int | None = None) -> dict:
    """{input name: {"shape", "dtype", "source"}}: the shapes to time or estimate with."""
    given = parse_shapes(shapes) if not isinstance(shapes, dict) else dict(shapes)
    inputs = model_inputs(path)
    unknown = sorted(set(given) - {name for name, _, _ in inputs})
    if unknown:
        raise BadInput(f"--shapes names {', '.join(unknown)}, which the model does not have "
                       f"(inputs: {', '.join(name for name, _, _ in inputs)})")
    traced, config = export_facts(path)
    resolved = {}
    for name, dims, dtype in inputs:
        if name in given:
            if len(given[name]) != len(dims):
                raise BadInput(f"--shapes {name}: {len(given[name])} dimensions given, the model's input has "
                               f"{len(dims)} ({'x'.join(str(d) for d in dims)})")
            resolved[name] = {"shape": given[name], "dtype": dtype, "source": "--shapes"}
            continue
        if seq_len is None and name in traced and len(traced[name]) == len(dims) and not all(isinstance(d, int) and d > 0 for d in dims):
            resolved[name] = {"shape": [int(d) for d in traced[name]], "dtype": dtype,
                              "source": "the export's traced shape (manifest)"}
            continue
        shape, sources, guessed = [], [], []
        for axis, dim in enumerate(dims):
            if isinstance(dim, int) and dim > 0:
                shape.append(dim)
                continue
            size, source = _dim_for(name, axis, len(dims), dim, config, seq_len)
            if size is None:
                size, source = 1, f"1 GUESSED for {dim or '?'}: set --shapes {name}=..."
                guessed.append(str(dim or axis))
            shape.append(size)
            sources.append(f"{dim or 'dim ' + str(axis)}={size}: {source}")
        if guessed:
            warnings.warn(f"input {name}: nothing says the size of {', '.join(guessed)}; taking 1, which may not be "
                          f"the work the model does: pass --shapes {name}=" + "x".join(str(d) for d in shape),
                          stacklevel=2)
        resolved[name] = {"shape": shape, "dtype": dtype,
                          "source": "; ".join(sources) if sources else "fixed by the model", "guessed": bool(guessed)}
    vocab = _config_value(config, "vocab_size")
    for name, entry in resolved.items():
        if vocab and "ids" in name:
            entry["vocab_size"] = int(vocab)
    return resolved


def sample_inputs(resolved: dict) -> dict:
    """Seeded inputs at the resolved shapes: token ids below the vocabulary, masks of ones."""
    import numpy as np

    rng = np.random.default_rng(0)
    feeds = {}
    for name, entry in resolved.items():
        shape, dtype = entry["shape"], np.dtype(entry["dtype"])
        if dtype.kind == "f":
            feeds[name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[name] = np.ones(shape, dtype=bool)
        elif "mask" in name:
            feeds[name] = np.ones(shape, dtype=dtype)
        elif "type" in name or "position" in name:
            feeds[name] = np.zeros(shape, dtype=dtype)
        else:
            feeds[name] = rng.integers(0, min(entry.get("vocab_size") or 100, 1000), shape).astype(dtype)
    return feeds


def shapes_text(resolved: dict) -> str:
    return "; ".join(f"{name} {'x'.join(str(d) for d in entry['shape'])} ({entry['source']})"
                     for name, entry in resolved.items())
