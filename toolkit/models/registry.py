"""Rebuild a module from the record an artifact folder keeps beside its weights.

A distilled student (or any saved torch model) is stored as `model.safetensors` plus a
`rebuild` record in its manifest, never as a pickle. Kinds:
  {"kind": "digits", "family": "digits-cnn", "width": 0.5}
  {"kind": "factory", "factory": "package.module:function", "kwargs": {...}}
"""

from __future__ import annotations

import importlib
from pathlib import Path

from toolkit.errors import BadInput


def build_module(record: dict):
    kind = record.get("kind")
    if kind == "digits":
        from toolkit.models.digits import DigitsConfig, build

        return build(DigitsConfig(family=record["family"], width=float(record.get("width", 1.0))))
    if kind == "factory":
        return call_factory(record["factory"], record.get("kwargs") or {})
    raise BadInput(f"cannot rebuild a model of kind {kind!r}")


def call_factory(spec: str, kwargs: dict | None = None):
    """`package.module:function` -> the module it returns (importing user code the user named)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise BadInput(f"{spec!r} is not package.module:factory")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise BadInput(f"cannot import {module_name!r}: {error}") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise BadInput(f"{module_name} has no callable {attribute!r}")
    return factory(**(kwargs or {}))


def rebuild(record: dict, weights: str | Path):
    """The module described by `record`, with weights loaded from a safetensors file."""
    from safetensors.torch import load_file

    module = build_module(record)
    try:
        state = load_file(str(weights))
    except Exception as error:
        raise BadInput(f"{weights}: not a readable safetensors file ({error})") from None
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise BadInput(f"{weights}: weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return module.eval()
