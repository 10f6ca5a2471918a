"""One loader per source kind. Each returns a `Source` with its input signature.

Safety: nothing here unpickles. A `.pt/.pth/.bin` that is a pickle is refused before
torch sees it; TorchScript (executable code) loads only with `trust_torchscript`; an
ExportedProgram `.pt2` is read with every unpickling path inside torch forced to
`weights_only=True` or refused.
"""

from __future__ import annotations

import contextlib
import inspect
import zipfile
from pathlib import Path

from toolkit.common.tensors import TensorSpec
from toolkit.common.text import first_line
from toolkit.errors import BadInput, Unsupported
from toolkit.safety.pickle import PICKLE_SUFFIXES
from toolkit.sources.source import Source


def load_builtin_source(spec: str) -> Source:
    from toolkit.models.digits import FAMILIES, INPUT_NAME, load_builtin
    from toolkit.paths import cache_dir

    name = spec.split(":", 1)[1]
    if name not in FAMILIES:
        raise BadInput(f"unknown builtin model {spec!r}: use {', '.join('builtin:' + f for f in FAMILIES)}")
    module = load_builtin(name)
    return Source(
        "builtin", spec, module=module,
        inputs=[TensorSpec(INPUT_NAME, ["batch", 1, 8, 8], "float32")],
        outputs=[TensorSpec("logits", ["batch", 10], "float32")],
        meta={"weights": cache_dir() / f"builtin-{name}-v1.safetensors"},
    )


def load_factory(spec: str, weights: str | None, pins: dict) -> Source:
    """`package.module:factory`: user code the user named, with optional safetensors weights."""
    from toolkit.models.registry import call_factory, rebuild

    record = {"kind": "factory", "factory": spec}
    if weights:
        if not Path(weights).is_file():
            raise BadInput(f"{weights}: no such weights file")
        if Path(weights).suffix.lower() in PICKLE_SUFFIXES:
            raise BadInput(f"refused: {weights} is pickled (unpickling can run code); save the weights as .safetensors")
        from toolkit.safety.safetensors import check_safetensors

        check_safetensors(Path(weights))
        module = rebuild(record, weights)
    else:
        module = call_factory(spec).eval()
    inputs = _declared_inputs(module) or _signature_inputs(module, pins, spec)
    return Source("factory", spec, module=module, inputs=inputs,
                  meta={"rebuild": record, **({"weights": Path(weights)} if weights else {})})


def _declared_inputs(module) -> list[TensorSpec] | None:
    """A module may declare `input_specs = [{"name", "shape", "dtype"}]` (symbolic dims as str)."""
    declared = getattr(module, "input_specs", None)
    if not declared:
        return None
    return [TensorSpec(d["name"], list(d["shape"]), d.get("dtype", "float32")) for d in declared]


def _signature_inputs(module, pins: dict, spec: str) -> list[TensorSpec]:
    """Input names from forward()'s parameters; shapes must be pinned (torch cannot tell them)."""
    forward = getattr(module, "forward", module)
    try:
        names = [
            p.name for p in inspect.signature(forward).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        ]
    except (TypeError, ValueError):
        names = []
    if len(names) == 1 and "" in pins:
        pins[names[0]] = pins.pop("")
    if not names or any(name not in pins for name in names):
        missing = [n for n in names if n not in pins] or ["x"]
        raise BadInput(
            f"{spec}: cannot tell the input shapes of a torch module: pass "
            + " ".join(f"--input-shape {n}=1x3x224x224" for n in missing)
        )
    return [TensorSpec(name, list(pins[name]), "float32") for name in names]


# ---------------------------------------------------------------- folders


def load_folder(path: Path, pins: dict, *, trust_remote_code: bool) -> Source:
    from toolkit.artifacts import MODEL_FILES, read_manifest

    manifest = read_manifest(path)
    named = manifest.get("model_file") or ""
    weights = path / (named if named.endswith(".safetensors") else "model.safetensors")
    if manifest.get("rebuild") and weights.is_file():
        return load_rebuild(path, manifest, weights)
    if (path / "config.json").is_file():
        from toolkit.sources.hf import load_hf

        return load_hf(path, pins, trust_remote_code=trust_remote_code)
    for name in ([named] if named else []) + list(MODEL_FILES):
        if name and (path / name).is_file():
            source = load_file(path / name, pins, trust_torchscript=False)
            source.meta["artifact"] = str(path)
            return source
    raise BadInput(f"{path}: a folder without a model (no config.json, {', '.join(MODEL_FILES)} or rebuild record)")


def load_rebuild(path: Path, manifest: dict, weights: Path) -> Source:
    """An artifact folder holding a torch model as a rebuild record + safetensors (no pickle)."""
    from toolkit.models.registry import rebuild
    from toolkit.safety.safetensors import check_safetensors

    record = manifest["rebuild"]
    check_safetensors(weights)
    module = rebuild(record, weights)
    if manifest.get("inputs"):
        inputs = [TensorSpec(d["name"], list(d["shape"]), d.get("dtype", "float32")) for d in manifest["inputs"]]
    elif record.get("kind") == "digits":
        inputs = [TensorSpec("x", ["batch", 1, 8, 8], "float32")]
    else:
        inputs = _declared_inputs(module) or []
    if not inputs:
        raise BadInput(f"{path}: its manifest records no inputs for the {record.get('kind')} model")
    outputs = None
    if manifest.get("outputs"):
        outputs = [TensorSpec(d["name"], list(d["shape"]), d.get("dtype", "float32")) for d in manifest["outputs"]]
    elif record.get("kind") == "digits":
        outputs = [TensorSpec("logits", ["batch", 10], "float32")]
    return Source("artifact", str(path), path=path, module=module, inputs=inputs, outputs=outputs,
                  meta={"rebuild": record, "weights": weights})


# ---------------------------------------------------------------- files


def load_file(path: Path, pins: dict, *, trust_torchscript: bool, trust_pickle: bool = False) -> Source:
    from toolkit.safety.files import check_exists

    check_exists(path)
    suffix = path.suffix.lower()
    with open(path, "rb") as handle:
        head = handle.read(8)
    if suffix == ".onnx":
        return _runtime_source("onnx", path)
    if suffix == ".tflite" or head[4:8] == b"TFL3":
        return _runtime_source("tflite", path)
    if suffix == ".pt2":
        return load_pt2(path)
    if suffix in PICKLE_SUFFIXES:
        return load_torch_file(path, pins, trust_torchscript=trust_torchscript, trust_pickle=trust_pickle)
    if suffix == ".safetensors":
        raise BadInput(f"{path} holds weights only: pass package.module:factory --weights {path}")
    raise BadInput(
        f"{path}: not a model file Edgeward reads (.onnx, .tflite, .pt2, TorchScript .pt, "
        "a Hugging Face folder, or package.module:factory)"
    )


def _runtime_source(kind: str, path: Path) -> Source:
    from toolkit.runtime import open_model

    runner = open_model(path)  # validates the file (safety checks, then the runtime parses it)
    return Source(kind, str(path), path=path, inputs=list(runner.inputs), outputs=list(runner.outputs),
                  meta={"runner": runner})


def load_torch_file(path: Path, pins: dict, *, trust_torchscript: bool, trust_pickle: bool = False) -> Source:
    """TorchScript with opt-in; a pickled checkpoint is refused, without being opened, unless trusted."""
    from toolkit.safety.pickle import checkpoint_kind

    kind = checkpoint_kind(path)  # from the bytes alone: nothing is unpickled
    if kind == "pt2":
        return load_pt2(path)
    if kind == "safetensors":
        raise BadInput(f"{path} holds weights only: pass package.module:factory --weights {path}")
    if kind != "torchscript":
        if trust_pickle:
            return load_trusted_pickle(path, pins)
        raise BadInput(
            f"refused: {path} is a pickled PyTorch checkpoint, which can run code when loaded: save the "
            "weights with safetensors and pass package.module:factory --weights model.safetensors "
            "(or --trust-pickle if you trust whoever made it)"
        )
    if not trust_torchscript:
        raise BadInput(f"refused: {path} is TorchScript, which is executable code: pass --trust-torchscript "
                       "if you trust its author")
    import torch

    try:
        module = torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as error:
        raise BadInput(f"{path}: not a readable TorchScript file ({first_line(error)})") from None
    try:
        names = [a.name for a in module.forward.schema.arguments[1:]]
    except (AttributeError, RuntimeError):
        names = []
    if len(names) == 1 and "" in pins:
        pins[names[0]] = pins.pop("")
    if not names or any(name not in pins for name in names):
        raise BadInput(
            f"{path}: TorchScript does not record input shapes: pass "
            + " ".join(f"--input-shape {n}=1x3x224x224" for n in (names or ["x"]) if n not in pins)
        )
    inputs = [TensorSpec(name, list(pins[name]), "float32") for name in names]
    return Source("torchscript", str(path), path=path, module=module, inputs=inputs)


def load_trusted_pickle(path: Path, pins: dict) -> Source:
    """A whole pickled nn.Module (torch.save(model)), loaded only because the user said --trust-pickle."""
    import torch

    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=False)  # noqa: S614 - explicit opt-in
    except Exception as error:
        raise BadInput(f"{path}: not a readable PyTorch checkpoint ({first_line(error)})") from None
    if not isinstance(loaded, torch.nn.Module):
        raise BadInput(f"{path} holds a {type(loaded).__name__}, not a model: save the weights with "
                       "safetensors and pass package.module:factory --weights model.safetensors")
    module = loaded.eval()
    inputs = _declared_inputs(module) or _signature_inputs(module, pins, str(path))
    return Source("pickle", str(path), path=path, module=module, inputs=inputs)


def load_pt2(path: Path) -> Source:
    """An ExportedProgram: its placeholders give names, shapes (symbols as str) and dtypes."""
    import torch

    from toolkit.safety.pickle import refuse_pickle

    if not zipfile.is_zipfile(path):
        raise BadInput(f"{path}: not an ExportedProgram archive (.pt2 is a zip written by torch.export.save)")
    refuse_pickle(path)  # payloads that would need full pickle are refused before torch reads them
    try:
        with _no_unpickling():
            program = torch.export.load(str(path))
    except BadInput:
        raise
    except Exception as error:
        raise BadInput(f"{path}: not a readable ExportedProgram ({first_line(error)})") from None
    user_inputs = list(program.graph_signature.user_inputs)
    placeholders = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    inputs = []
    for name in user_inputs:
        value = placeholders[name].meta.get("val")
        if value is None or not hasattr(value, "shape"):
            raise Unsupported(f"{path}: input {name!r} is not a tensor; only tensor inputs are supported")
        shape = [int(d) if _is_int(d) else str(d) for d in value.shape]
        inputs.append(TensorSpec(name, shape, str(value.dtype).removeprefix("torch.")))
    outputs = []
    output_node = next(node for node in program.graph.nodes if node.op == "output")
    for index, value in enumerate(output_node.args[0]):
        fake = getattr(value, "meta", {}).get("val")
        if fake is not None and hasattr(fake, "shape"):
            shape = [int(d) if _is_int(d) else str(d) for d in fake.shape]
            outputs.append(TensorSpec(f"output_{index}", shape, str(fake.dtype).removeprefix("torch.")))
    module = program.module()
    return Source("pt2", str(path), path=path, module=module, inputs=inputs,
                  outputs=outputs or None, meta={"program": program})


def _is_int(dim) -> bool:
    return isinstance(dim, int)  # a dynamic dimension is a torch.SymInt, kept by its symbol name


@contextlib.contextmanager
def _no_unpickling():
    """While reading a .pt2: torch.load only with weights_only=True; raw pickle refused.

    torch.export.load unpickles tensor subclasses and custom objects with
    weights_only=False; a crafted archive could run code there.
    """
    import torch
    import torch.export.pt2_archive._package as package

    original_load = torch.load
    original_pickle = package.pickle
    original_obj = torch._C._pickle_load_obj

    def safe_load(*args, **kwargs):
        kwargs["weights_only"] = True
        return original_load(*args, **kwargs)

    def refuse(*_args, **_kwargs):
        raise BadInput("refused: the .pt2 archive holds pickled objects (unpickling can run code)")

    class _NoPickle:
        loads = staticmethod(refuse)
        load = staticmethod(refuse)

    torch.load = safe_load
    package.pickle = _NoPickle
    torch._C._pickle_load_obj = refuse
    try:
        yield
    finally:
        torch.load = original_load
        package.pickle = original_pickle
        torch._C._pickle_load_obj = original_obj
