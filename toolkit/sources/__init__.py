"""Load a model from a spec: what it is, what it takes, and a runner for it.

`load_source(spec)` understands `builtin:digits-cnn|digits-mlp`, `.onnx`, `.tflite`,
TorchScript `.pt` (opt-in: it is executable code), ExportedProgram `.pt2`, a Hugging Face
folder (`config.json` + safetensors), `package.module:factory` (+ safetensors weights) and
an artifact folder (a `rebuild` record + `model.safetensors`, an HF folder, or a model
file). Pickled checkpoints are refused: unpickling can run any code.

A `Source` carries the input signature with symbolic dimensions as strings; pinned
shapes (`--input-shape NAME=1x3x224x224`) and defaults (batch 1, sequence 128) turn it
into concrete example inputs for tracing and for checking an export against its source.
"""

from __future__ import annotations

import re
from pathlib import Path

from toolkit.errors import BadInput
from toolkit.sources.source import (
    DEFAULT_SEQUENCE,
    Source,
    parse_input_shapes,
    random_inputs,
    resolve_shapes,
)

__all__ = ["DEFAULT_SEQUENCE", "KINDS", "Source", "load_source", "open_any", "parse_input_shapes", "random_inputs",
           "resolve_shapes"]

KINDS = ("builtin", "onnx", "tflite", "torchscript", "pt2", "hf", "factory", "artifact")
_FACTORY = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


# ---------------------------------------------------------------- loading


def load_source(spec, *, input_shapes: dict[str, list[int]] | None = None, weights: str | None = None,
                trust_torchscript: bool = False, trust_remote_code: bool = False,
                trust_pickle: bool = False, data_shapes: dict[str, list[int]] | None = None) -> Source:
    """The model `spec` names, with its input signature; nothing untrusted is executed unasked.

    A pickled checkpoint is refused unless `trust_pickle` (unpickling runs code).
    `data_shapes` (input name -> one example's shape, as the data holds it) give a torch
    module whose inputs torch cannot tell (a factory, TorchScript) its input shapes, with a
    free batch axis; `input_shapes` pins win over them.
    """
    from toolkit.sources import loaders

    text = str(spec)
    pins = dict(input_shapes or {})
    if weights and not _FACTORY.fullmatch(text):
        raise BadInput("--weights goes with a package.module:factory source")
    if text.startswith("builtin:"):
        source = loaders.load_builtin_source(text)
    elif _FACTORY.fullmatch(text) and not Path(text).exists():
        pins = _with_data_shapes(pins, data_shapes)
        source = loaders.load_factory(text, weights, pins)
    else:
        path = Path(text)
        if not path.exists():
            raise BadInput(f"{text}: no such file or folder")
        if path.is_dir():
            source = loaders.load_folder(path, pins, trust_remote_code=trust_remote_code)
        else:
            if path.suffix.lower() == ".pt":  # TorchScript or a pickle: no recorded input shapes
                pins = _with_data_shapes(pins, data_shapes)
            source = loaders.load_file(path, pins, trust_torchscript=trust_torchscript, trust_pickle=trust_pickle)
    source.spec = text
    pins = {name: shape for name, shape in pins.items() if all(isinstance(dim, int) for dim in shape)}
    source.input_shapes = pins
    if pins:
        source.shapes()  # refuse pins that do not fit, before any work
    return source


def _with_data_shapes(pins: dict, data_shapes: dict | None) -> dict:
    """Pins plus the data's shapes with a symbolic batch axis; a lone data input names the lone argument."""
    if not data_shapes or any(name == "" for name in pins):
        return pins
    from_data = {name: ["batch", *shape] for name, shape in data_shapes.items()}
    if len(from_data) == 1 and not pins:
        from_data = {"": next(iter(from_data.values())), **from_data}
    return {**from_data, **pins}


def open_any(spec: str | Path, threads: int | None = None, **source_options):
    """A runner for any model spec: ONNX/TFLite files run as they are; PyTorch sources in torch."""
    from toolkit.runtime import open_model

    text = str(spec)
    path = Path(text)
    if path.suffix.lower() in (".onnx", ".tflite") or (
        path.is_dir() and any((path / name).is_file() for name in ("model.onnx", "model.tflite"))
    ):
        return open_model(path, threads)
    return load_source(text, **source_options).runner()
