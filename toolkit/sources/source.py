"""A loaded model (`Source`): what it is, what it takes, and a runner for it; its input
shapes made concrete (pins, then batch 1 / sequence 128) and random example inputs."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.common.tensors import TensorSpec
from toolkit.errors import BadInput

DEFAULT_SEQUENCE = 128
_SEQUENCE_WORDS = ("seq", "len", "token", "time", "step")


@dataclass
class Source:
    kind: str
    spec: str
    path: Path | None = None
    module: Any = None  # a torch nn.Module for torch kinds, else None
    inputs: list[TensorSpec] = field(default_factory=list)
    outputs: list[TensorSpec] | None = None
    input_shapes: dict[str, list[int]] = field(default_factory=dict)  # pinned by the user
    meta: dict = field(default_factory=dict)  # kind-specific: hf task, vocab size, rebuild record

    @property
    def name(self) -> str:
        """A short name for default output folders."""
        if self.kind == "builtin":
            return self.spec.split(":", 1)[1]
        if self.kind == "factory":
            return self.spec.rsplit(":", 1)[1].replace("_", "-")
        path = Path(self.spec)
        return (path.stem if path.is_file() else path.name) or "model"

    def shapes(self) -> dict[str, list[int]]:
        """Concrete shapes for every input (pins, then batch 1 / sequence 128 defaults)."""
        return resolve_shapes(self.inputs, self.input_shapes)

    def example_inputs(self, *, batch: int | None = None, seed: int = 0) -> dict[str, np.ndarray]:
        """Random inputs at the pinned shapes; int inputs in a range the model accepts."""
        shapes = self.shapes()
        if batch is not None:
            shapes = {spec.name: _with_batch(spec, shapes[spec.name], batch) for spec in self.inputs}
        return random_inputs(self.inputs, shapes, seed=seed, vocab_size=self.meta.get("vocab_size"))

    def runner(self, threads: int | None = None):
        """A runner with OnnxRunner's interface (`.inputs`, `.outputs`, `.run(feeds)`)."""
        if self.module is not None:
            from toolkit.sources.torch_runner import TorchRunner

            runner = TorchRunner(self.module, self.inputs, self.outputs, self.example_inputs, threads,
                                 output_names=self.meta.get("output_names"))
            if self.outputs is None:
                self.outputs = runner.outputs  # learnt from one run; later runners skip it
            return runner
        cached = self.meta.get("runner")
        if cached is not None and threads is None:
            return cached
        from toolkit.runtime import open_model

        return open_model(self.path, threads)

    def record(self) -> dict:
        """What a manifest says about this source: the spec, its kind and its sha256."""
        from toolkit.artifacts import sha256_file, source_record

        record = {**source_record(self.spec), "kind": self.kind}
        if self.path is not None and self.path.is_file() and str(self.path) != self.spec:
            record["model_file"] = str(self.path)
            record["sha256"] = sha256_file(self.path)
        weights = self.meta.get("weights")
        if weights:
            record["weights"] = str(weights)
            record["weights_sha256"] = sha256_file(weights)
        return record


def _with_batch(spec: TensorSpec, shape: list[int], batch: int) -> list[int]:
    if spec.shape and not (isinstance(spec.shape[0], int) and spec.shape[0] > 0):
        return [batch, *shape[1:]]
    return shape


# ---------------------------------------------------------------- shapes and inputs


def parse_input_shapes(values) -> dict[str, list[int]]:
    """`["x=1x3x224x224", "ids=1x128"]` -> {"x": [1,3,224,224], ...}; a lone `1x8` names the only input."""
    shapes: dict[str, list[int]] = {}
    for value in values or ():
        name, _, dims = str(value).rpartition("=")
        dims = dims.strip().lower()
        parts = [] if dims == "scalar" else re.split(r"[x,]", dims)
        if not all(part.isdigit() and int(part) > 0 for part in parts):
            raise BadInput(f"--input-shape {value!r}: write NAME=1x3x224x224 (or NAME=scalar)")
        shapes[name.strip()] = [int(part) for part in parts]
    return shapes


def resolve_shapes(inputs: list[TensorSpec], pins: dict[str, list[int]]) -> dict[str, list[int]]:
    """Concrete shapes: pinned inputs bind their symbols; batch-like dims default to 1, sequences to 128."""
    pins = dict(pins or {})
    if "" in pins:
        if len(inputs) != 1:
            raise BadInput(f"--input-shape needs NAME= for a model with inputs {[s.name for s in inputs]}")
        pins[inputs[0].name] = pins.pop("")
    known = {spec.name for spec in inputs}
    unknown = sorted(set(pins) - known)
    if unknown:
        raise BadInput(f"--input-shape names {unknown}, but the model's inputs are {sorted(known)}")
    bound: dict[str, int] = {}
    for spec in inputs:
        if spec.name in pins:
            _bind(spec, pins[spec.name], bound)
    shapes = {}
    for spec in inputs:
        if spec.name in pins:
            shapes[spec.name] = list(pins[spec.name])
            continue
        dims = []
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, int) and dim > 0:
                dims.append(dim)
            elif isinstance(dim, str) and dim in bound:
                dims.append(bound[dim])
            elif _is_batch(dim, axis):
                dims.append(1)
            elif isinstance(dim, str) and any(word in dim.lower() for word in _SEQUENCE_WORDS):
                dims.append(DEFAULT_SEQUENCE)
            else:
                example = "x".join(str(d if isinstance(d, int) and d > 0 else 1) for d in spec.shape)
                raise BadInput(
                    f"input {spec.name!r} has a dynamic dimension {dim or '?'} at axis {axis}: "
                    f"pin it with --input-shape {spec.name}={example}"
                )
        shapes[spec.name] = dims
    return shapes


def _bind(spec: TensorSpec, shape: list[int], bound: dict[str, int]) -> None:
    if len(shape) != len(spec.shape):
        raise BadInput(f"--input-shape {spec.name}: the model's input has rank {len(spec.shape)} {spec.shape}")
    for want, have in zip(spec.shape, shape, strict=True):
        if isinstance(want, int) and want > 0 and want != have:
            raise BadInput(f"--input-shape {spec.name}={'x'.join(map(str, shape))} does not fit its fixed shape {spec.shape}")
        if isinstance(want, str):
            bound[want] = have


def _is_batch(dim, axis: int) -> bool:
    if isinstance(dim, str):
        return "batch" in dim.lower() or dim in ("N", "n", "B") or axis == 0
    return axis == 0


def random_inputs(inputs: list[TensorSpec], shapes: dict[str, list[int]], *, seed: int = 0,
                  vocab_size: int | None = None) -> dict[str, np.ndarray]:
    """Deterministic random feeds: floats in [0,1), masks of ones, token ids below the vocabulary."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in inputs:
        shape = shapes[spec.name]
        dtype = np.dtype(spec.dtype or "float32")
        lowered = spec.name.lower()
        if dtype.kind == "f":
            feeds[spec.name] = rng.random(shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[spec.name] = rng.random(shape) > 0.5
        elif "mask" in lowered:
            feeds[spec.name] = np.ones(shape, dtype)
        elif "type" in lowered:
            feeds[spec.name] = np.zeros(shape, dtype)
        elif "position" in lowered and shape:
            feeds[spec.name] = np.broadcast_to(np.arange(shape[-1], dtype=dtype), shape).copy()
        elif "ids" in lowered or "token" in lowered:
            feeds[spec.name] = rng.integers(0, vocab_size or 100, shape).astype(dtype)
        else:
            feeds[spec.name] = rng.integers(0, 10, shape).astype(dtype)
    return feeds
