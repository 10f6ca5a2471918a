"""Teachers and students for distillation: what a spec names, and how to rebuild it.

A teacher is anything whose outputs can be computed once on the training data: a torch
module (builtin, distilled artifact, HF folder, or whatever `toolkit.sources` loads) or
an ONNX/TFLite file run by its runtime. A student must be trainable, so it is a torch
module built from a spec:

  shrink:F         the teacher's digits family with its width scaled by F (0 < F <= 1)
  builtin:NAME     a fresh builtin architecture (digits-cnn, digits-mlp); NAME alone works too
  pkg.module:fn    a module returned by a factory the user names
  layers:N         for a Hugging Face encoder teacher: N layers cut from it (see models.hf)

Every student carries the record that rebuilds it (kept in the artifact's manifest), so
the saved artifact is safetensors plus data, never a pickle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from toolkit.distill import hf_layers as hf
from toolkit.errors import BadInput
from toolkit.models.digits import FAMILIES, INPUT_NAME


@dataclass
class Teacher:
    spec: str
    kind: str  # "digits" | "hf" | "torch" | "runtime"
    module: object | None = None  # torch module (None for a runtime teacher)
    runner: object | None = None  # OnnxRunner/TfliteRunner for a runtime teacher
    record: dict | None = None  # rebuild record (digits teachers)
    folder: Path | None = None  # HF folder (tokenizer files come from here)
    input_names: list[str] = field(default_factory=list)


@dataclass
class Student:
    spec: str
    kind: str  # "digits" | "factory" | "hf" | "module"
    module: object
    record: dict | None = None  # rebuild record; None for HF (the folder rebuilds it) and raw modules
    notes: dict = field(default_factory=dict)


def load_teacher(teacher) -> Teacher:
    """A Teacher from a spec string/path or a torch module."""
    if not isinstance(teacher, str | Path):
        if hf.is_hf_model(teacher):
            return Teacher("<module>", "hf", module=teacher.eval(), input_names=hf.forward_names(teacher))
        if not callable(teacher):
            raise BadInput(f"a teacher must be a model spec or a torch module, not {type(teacher).__name__}")
        return Teacher(f"<{type(teacher).__name__}>", "torch", module=teacher.eval())
    spec = str(teacher)
    name = spec.removeprefix("builtin:")
    if name in FAMILIES:
        from toolkit.models.digits import load_builtin

        record = {"kind": "digits", "family": name, "width": 1.0}
        return Teacher(spec, "digits", module=load_builtin(name), record=record, input_names=[INPUT_NAME])
    path = Path(spec)
    if path.suffix.lower() in (".onnx", ".tflite") or (
        path.is_dir() and any((path / n).is_file() for n in ("model.onnx", "model.tflite"))
    ):
        from toolkit.runtime import open_model

        runner = open_model(path)
        return Teacher(spec, "runtime", runner=runner, input_names=[s.name for s in runner.inputs])
    if hf.is_hf_folder(path):
        module = hf.load_classifier(path)
        return Teacher(spec, "hf", module=module, folder=path, input_names=hf.forward_names(module))
    if path.is_dir():
        from toolkit.artifacts import read_manifest

        manifest = read_manifest(path)
        record = manifest.get("rebuild")
        if record and (path / manifest.get("model_file", "model.safetensors")).is_file():
            from toolkit.models.registry import rebuild

            module = rebuild(record, path / manifest.get("model_file", "model.safetensors"))
            names = [item["name"] for item in manifest.get("inputs", [])] or (
                [INPUT_NAME] if record.get("kind") == "digits" else []
            )
            kind = "digits" if record.get("kind") == "digits" else "torch"
            return Teacher(spec, kind, module=module, record=record, input_names=names)
    return _teacher_from_sources(spec)


def _teacher_from_sources(spec: str) -> Teacher:
    """Anything else (.pt2, a factory, …) through the export stage's source loader."""
    try:
        from toolkit.sources import load_source
    except ImportError:
        raise BadInput(f"unknown teacher {spec!r}: give builtin:NAME, an HF folder, an artifact folder, .onnx or .tflite") from None
    source = load_source(spec)
    module = getattr(source, "module", None)
    if module is None:
        raise BadInput(f"teacher {spec!r} has no torch module to run")
    names = [getattr(item, "name", item) for item in (getattr(source, "inputs", None) or [])]
    if hf.is_hf_model(module):
        return Teacher(spec, "hf", module=module.eval(), folder=Path(spec) if Path(spec).is_dir() else None,
                       input_names=hf.forward_names(module))
    return Teacher(spec, "torch", module=module.eval(), input_names=[str(n) for n in names])


def make_student(spec, teacher: Teacher) -> Student:
    """The untrained (or, for layers:N, teacher-initialised) student a spec names.

    Call under `torch.manual_seed` so a fresh student starts the same way every time.
    """
    if not isinstance(spec, str):
        if not callable(spec):
            raise BadInput(f"a student must be a spec or a torch module, not {type(spec).__name__}")
        return Student(f"<{type(spec).__name__}>", "hf" if hf.is_hf_model(spec) else "module", spec)
    text = spec.strip()
    if text.startswith("shrink:"):
        return _shrink(text, teacher)
    if text.startswith("layers:"):
        return _layers(text, teacher)
    name = text.removeprefix("builtin:")
    if name in FAMILIES:
        if teacher.kind == "hf":
            raise BadInput(f"student {text!r} takes 8x8 images; it does not apply to the Hugging Face teacher {teacher.spec}")
        from toolkit.models.digits import DigitsConfig, build

        record = {"kind": "digits", "family": name, "width": 1.0}
        return Student(text, "digits", build(DigitsConfig(family=name)), record)
    if text.startswith("builtin:"):
        raise BadInput(f"unknown builtin student {text!r}: use {', '.join('builtin:' + f for f in FAMILIES)}")
    if ":" in text:
        from toolkit.models.registry import call_factory

        module = call_factory(text)
        if not callable(module) or not hasattr(module, "parameters"):
            raise BadInput(f"{text} did not return a torch module")
        return Student(text, "factory", module, {"kind": "factory", "factory": text, "kwargs": {}})
    raise BadInput(
        f"unknown student spec {text!r}: use shrink:F, layers:N, builtin:NAME or package.module:factory"
    )


def _number(text: str, kind: type):
    prefix, _, value = text.partition(":")
    try:
        return kind(value)
    except ValueError:
        raise BadInput(f"{text!r}: {prefix}: needs a {'whole ' if kind is int else ''}number, e.g. {prefix}:{2 if kind is int else 0.5}") from None


def _shrink(text: str, teacher: Teacher) -> Student:
    factor = _number(text, float)
    if not 0 < factor <= 1:
        raise BadInput(f"{text!r}: the width factor must be in (0, 1], e.g. shrink:0.5")
    if teacher.kind == "hf":
        raise BadInput(f"{text} does not apply to the Hugging Face teacher {teacher.spec}: use layers:N")
    if teacher.kind != "digits" or not teacher.record:
        what = "an ONNX/TFLite model" if teacher.kind == "runtime" else "a model of unknown family"
        raise BadInput(
            f"{text} needs a builtin digits teacher (or a distilled digits artifact); {teacher.spec} is {what}: "
            "name the student instead (builtin:digits-mlp or package.module:factory)"
        )
    from toolkit.models.digits import DigitsConfig, build

    width = round(float(teacher.record.get("width", 1.0)) * factor, 6)
    record = {"kind": "digits", "family": teacher.record["family"], "width": width}
    module = build(DigitsConfig(family=record["family"], width=width))
    return Student(text, "digits", module, record)


def _layers(text: str, teacher: Teacher) -> Student:
    count = _number(text, int)
    if teacher.kind != "hf":
        raise BadInput(f"{text} applies to Hugging Face encoder teachers; {teacher.spec} is not one (use shrink:F or a builtin)")
    module = hf.layer_student(teacher.module, count)
    return Student(text, "hf", module, None, {"teacher_layers": module.edgeward_layers})


def parameter_count(module) -> int:
    return int(sum(p.numel() for p in module.parameters()))
