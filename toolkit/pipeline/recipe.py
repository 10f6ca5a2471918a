"""Recipes: one YAML file naming every stage from source to break-even report.

A recipe is parsed and checked once, at the edge, into the pydantic model `RecipeSpec`
(unknown keys refused, every problem reported together in one `BadInput`), then flattened
into the `Recipe` the pipeline runs. Only `pipeline.py` and the CLI see it.

    name: digits-demo
    source: builtin:digits-cnn
    distill:                        # optional
      student: shrink:0.5
      data: builtin:digits:train
      val: builtin:digits:test
      epochs: 20
    export: [onnx, tflite]
    quantize:
      modes: [dynamic-int8, static-int8, fp16]    # each applied where the format allows; or [auto]
      calibration: builtin:digits:train
    validate:
      data: builtin:digits:test
      max_drop: 1.0                 # points of accuracy
      min_agreement: 0.98
    bench:
      devices: [localhost]          # measured
      estimate: [raspberry-pi-5, pixel-8]
      runs: 50
    breakeven:
      scenario: scenario.yaml       # a path (relative to the recipe) or the scenario inline

A sweep runs several sources through the same stages: `source:` is then a list of specs (each
named after its model: builtin:digits-mlp → digits-mlp, models/small.onnx → small) or a mapping
name → spec, and every step's name starts with its source's name, so adding a source renames no
other step (and reuses it). Formats, quantize modes and devices are already lists; together they
make the matrix, and `exclude:` takes combinations out of it:

    source: [builtin:digits-cnn, builtin:digits-mlp, small.onnx]
    exclude:
      - {source: digits-mlp, mode: fp16}                 # no fp16 digits-mlp at all
      - {mode: static-int8, device: raspberry-pi-5}      # not benched or priced there

An exclusion names one or more of source, format, mode (a quantize mode, or fp32 for the plain
export) and device, and removes every combination that matches all it names: with a device, the
bench (or estimate) there and that option of the ranking; without one, the models themselves.

Relative file paths (source, data, calibration, scenario) are read from the recipe's folder
when the file is there.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from toolkit.common.text import did_you_mean
from toolkit.errors import BadInput
from toolkit.lm.tiny import BUILTIN_TEXTS, bundled_text

FORMATS = ("onnx", "tflite")
BUILTIN_DATA = ("builtin:digits", "builtin:digits:train", "builtin:digits:test", "builtin:digits:all")


@dataclass
class Recipe:
    name: str
    source: str
    distill: dict | None = None
    export: list[str] = field(default_factory=lambda: ["onnx"])
    quantize_modes: list[str] = field(default_factory=list)
    calibration: str | None = None
    auto_budget_s: float = 300.0
    validate: dict | None = None
    bench_devices: list[str] = field(default_factory=list)
    estimate_devices: list[str] = field(default_factory=list)
    bench_runs: int = 50
    breakeven: dict | None = None  # the scenario, inline
    base_dir: Path = Path(".")
    sweep: dict[str, str] | None = None  # a sweep's sources, name -> spec (`source` is the first); None: one source
    exclude: list[dict] = field(default_factory=list)  # combinations left out: {source, format, mode, device}

    def model_sources(self) -> list[tuple[str, str, str]]:
        """(name, spec, step-name prefix) of each source: one source keeps the plain step names,
        a sweep's steps start with their source's name (the same whatever the other sources)."""
        if self.sweep is None:
            return [(_default_name(self.source), self.source, "")]
        return [(name, spec, f"{name}-") for name, spec in self.sweep.items()]

    def matching_exclusions(self, **combination: str) -> list[int]:
        """The index of every exclusion that matches `combination` (source, format, mode, device):
        each key the exclusion names is in the combination, with the same value."""
        return [index for index, rule in enumerate(self.exclude)
                if all(key in combination and combination[key] == value for key, value in rule.items())]


def load_recipe(path_or_data, base_dir: Path | None = None) -> Recipe:
    """Parse a recipe file (or an already-loaded dict) and check it, listing every problem."""
    from toolkit.safety.yaml import load_yaml

    if isinstance(path_or_data, dict):
        data, base = path_or_data, base_dir or Path(".")
        origin = "recipe"
    else:
        path = Path(path_or_data)
        if not path.is_file():
            raise BadInput(f"{path}: no such recipe file")
        data = load_yaml(path)
        base, origin = path.resolve().parent, str(path)
    if not isinstance(data, dict):
        raise BadInput(f"{origin}: a recipe is a YAML mapping (name, source, export, ...)")
    try:
        spec = RecipeSpec.model_validate(data, context={"base": base})
    except ValidationError as error:
        problems = [problem for item in error.errors() for problem in _problems(item)]
        raise BadInput(f"{origin}: {len(problems)} problem(s): {'; '.join(problems)}") from None
    return _flatten(spec, base)


def _flatten(spec: RecipeSpec, base: Path) -> Recipe:
    quantize = spec.quantize or QuantizeSection()
    bench = spec.bench or BenchSection()
    sources = source_names(spec.source)
    first = next(iter(sources.values()))
    return Recipe(
        name=spec.name or (_default_name(first) if isinstance(spec.source, str) else "sweep"),
        source=first,
        distill=spec.distill.model_dump(exclude_none=True) if spec.distill else None,
        export=list(spec.export),
        quantize_modes=list(quantize.modes),
        calibration=quantize.calibration,
        auto_budget_s=float(quantize.budget),
        validate=spec.validate_.model_dump(exclude_none=True) if spec.validate_ else None,
        bench_devices=list(bench.devices),
        estimate_devices=list(bench.estimate),
        bench_runs=bench.runs,
        breakeven=spec.breakeven,
        base_dir=base,
        sweep=None if isinstance(spec.source, str) else sources,
        exclude=[dict(rule) for rule in spec.exclude],
    )


# ------------------------------------------------------------------ value types


def _number(minimum: float | None = None, maximum: float | None = None, *, integer: bool = False):
    """A number (an integer when `integer`) within the bounds; kept as written (2 stays 2)."""

    def check(value):
        if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int)):
            raise PydanticCustomError("number", "must be {kind}, not {found}",
                                      {"kind": "an integer" if integer else "a number", "found": repr(value)})
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            bounds = f"{minimum if minimum is not None else '-inf'}..{maximum if maximum is not None else 'inf'}"
            raise PydanticCustomError("number", "= {value} is outside {bounds}", {"value": value, "bounds": bounds})
        return value

    return Annotated[int if integer else float, PlainValidator(check)]


def _names(value) -> list[str]:
    """A name or a list of names, always given back as a list."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    raise PydanticCustomError("names", "must be a name or a list of names, not {kind}", {"kind": type(value).__name__})


Names = Annotated[list[str], PlainValidator(_names)]
Number = _number()
Whole = _number(integer=True)
Count = _number(minimum=1, integer=True)
Positive = _number(minimum=1e-9)
Fraction = _number(minimum=0, maximum=1)
Points = _number(minimum=0, maximum=100)
Seconds = _number(minimum=1)


def _problems_error(problems: list[str]) -> PydanticCustomError:
    """Several finished messages from one check (they name their own place)."""
    return PydanticCustomError("problems", "{problems}", {"problems": problems})


def _resolve(spec: str | None, info: ValidationInfo) -> str:
    """A relative file path in a recipe is relative to the recipe's folder."""
    base = (info.context or {}).get("base", Path("."))
    if not spec or spec.startswith("builtin:") or Path(spec).is_absolute():
        return spec or ""
    candidate = Path(base) / spec
    return str(candidate) if candidate.exists() else spec


def _data_spec(spec: str | None, info: ValidationInfo) -> str | None:
    """A data spec (see `toolkit.data`): its file or folder, and a `preprocessor=` folder, read from
    the recipe's folder when relative; its kind and options checked."""
    if spec is None:
        return None
    if spec.startswith("builtin:"):
        if spec in BUILTIN_TEXTS:  # builtin:tiny-lm's text, read from wherever the package is installed
            return str(bundled_text(BUILTIN_TEXTS[spec]))
        if spec not in BUILTIN_DATA:
            raise _problems_error([f"unknown builtin data {spec!r} "
                                   f"(builtin:digits[:train|:test], {' or '.join(BUILTIN_TEXTS)})"])
        return spec
    from urllib.parse import parse_qsl, urlencode

    from toolkit.data import parse_spec, spec_path
    from toolkit.errors import BadInput

    path = spec_path(spec)
    if path == spec and path.lower().endswith(".txt") and Path(_resolve(path, info)).is_file():
        return _resolve(path, info)  # a language model's text (toolkit.lm reads it, not toolkit.data)
    prefix = spec.partition("?")[0][: -len(path)] if path else ""
    query = dict(parse_qsl(spec.partition("?")[2], keep_blank_values=True))
    resolved = _resolve(path, info)
    if not Path(resolved).exists():
        raise _problems_error([f"data file or folder {path!r} not found"])
    if query.get("preprocessor"):
        query["preprocessor"] = _resolve(query["preprocessor"], info)
    spec = prefix + resolved + (f"?{urlencode(query, safe=',/:')}" if query else "")
    try:
        parse_spec(spec)
    except BadInput as error:
        raise _problems_error([str(error)]) from None
    return spec


# ------------------------------------------------------------------ the sections


class RecipeModel(BaseModel):
    """Strict (no "2" read as 2) and closed (an unknown key is an error)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)


class DistillSection(RecipeModel):
    """The keyword arguments of `toolkit.distill.distill`, with the teacher from `source`."""

    student: str  # shrink:F | layers:N | builtin:NAME | package.module:factory
    data: str | None = None
    val: str | None = None
    epochs: Count | None = None
    lr: Positive | None = None
    batch_size: Count | None = None
    temperature: Positive | None = None
    alpha: Fraction | None = None
    seed: Whole | None = None
    patience: Count | None = None
    baseline: bool | None = None
    threads: Count | None = None
    steps: Count | None = None  # a language-model teacher: optimizer steps instead of epochs
    max_length: Count | None = None  # a language-model teacher: tokens a training window holds

    @field_validator("data", "val")
    @classmethod
    def _known_data(cls, spec: str | None, info: ValidationInfo) -> str | None:
        return _data_spec(spec, info)


class QuantizeSection(RecipeModel):
    modes: Names = []  # names from toolkit.quantize.modes, or auto
    calibration: str | None = None
    budget: Seconds = 300.0  # seconds for mode auto
    data: str | None = None  # held-out data for mode auto when there is no validate section

    @field_validator("modes")
    @classmethod
    def _known_modes(cls, modes: list[str]) -> list[str]:
        from toolkit.quantize.modes import MODES

        known = sorted({mode.name for mode in MODES} | {"auto"})
        unknown = [f"quantize: unknown mode {mode!r}{did_you_mean(mode, known)}" for mode in modes if mode not in known]
        if unknown:
            raise _problems_error(unknown)
        return modes

    @field_validator("calibration", "data")
    @classmethod
    def _known_data(cls, spec: str | None, info: ValidationInfo) -> str | None:
        return _data_spec(spec, info)


class ValidateSection(RecipeModel):
    data: str
    max_drop: Points | None = None  # points of accuracy
    min_agreement: Fraction | None = None
    min_sqnr: Number | None = None  # dB
    max_ppl_ratio: Positive | None = None  # a language model: candidate / reference perplexity
    max_kl: Number | None = None  # a language model: mean KL(reference || candidate)

    @field_validator("data")
    @classmethod
    def _known_data(cls, spec: str, info: ValidationInfo) -> str:
        return _data_spec(spec, info)


class BenchSection(RecipeModel):
    devices: Names = []  # measured
    estimate: Names = []  # estimated from the profile
    runs: Count = 50

    @field_validator("devices", "estimate")
    @classmethod
    def _known_devices(cls, devices: list[str]) -> list[str]:
        if not devices:
            return devices
        from toolkit.devices.profiles import profile_files

        names = sorted(profile_files())
        unknown = [f"bench: unknown device {name!r}{did_you_mean(name, names)}" for name in devices if name not in names]
        if unknown:
            raise _problems_error(unknown)
        return devices


class RecipeSpec(RecipeModel):
    """Every key a recipe may hold."""

    name: str | None = None  # default: from the source
    source: Any  # a spec; a sweep: a list of specs, or a mapping name -> spec
    distill: DistillSection | None = None
    export: Names = ["onnx"]
    quantize: QuantizeSection | None = None
    validate_: ValidateSection | None = Field(None, alias="validate", validate_default=True)
    bench: BenchSection | None = None
    breakeven: Any = None  # the scenario: a mapping, a file path, or {scenario: either}
    exclude: Any = []  # combinations a sweep leaves out: [{source, format, mode, device}, ...]

    @field_validator("source")
    @classmethod
    def _found(cls, source, info: ValidationInfo) -> str | dict[str, str]:
        if source is None or source == "":
            raise PydanticCustomError("missing", "Field required")
        if isinstance(source, str):
            return _found_source(source, info)
        if isinstance(source, list) and all(isinstance(spec, str) and spec for spec in source):
            named = [(_slug(_default_name(spec)), spec) for spec in source]
        elif isinstance(source, dict) and all(isinstance(spec, str) and spec for spec in source.values()):
            named = [(str(name), spec) for name, spec in source.items()]
        else:
            raise _problems_error(["'source' is a model spec, a list of them (a sweep), or a mapping name → spec"])
        problems = [] if named else ["'source' lists no model"]
        for name, count in Counter(name for name, _ in named).items():
            if count > 1:
                problems.append(f"source: {count} sources are named {name!r}: name them "
                                f"(source: {{{name}-a: ..., {name}-b: ...}})")
        problems += [f"source: {name!r} is not a usable name (letters, digits, '.', '_' and '-')"
                     for name, _ in named if not SOURCE_NAME.fullmatch(name)]
        found = {}
        for name, spec in named:
            try:
                found[name] = _found_source(spec, info)
            except PydanticCustomError as error:
                problems += error.context["problems"]
        if problems:
            raise _problems_error(problems)
        return found

    @field_validator("exclude")
    @classmethod
    def _in_the_matrix(cls, exclude, info: ValidationInfo) -> list[dict]:
        if not isinstance(exclude, list):
            raise _problems_error(["'exclude' is a list of combinations, e.g. [{source: digits-mlp, mode: fp16}]"])
        axes = _matrix_axes(info)
        problems, rules = [], []
        for index, rule in enumerate(exclude):
            where = f"exclude[{index}]"
            if not isinstance(rule, dict) or not rule:
                problems.append(f"{where} must name one or more of {', '.join(EXCLUDE_KEYS)} "
                                f"(e.g. {{mode: fp16, device: raspberry-pi-5}}), not {rule!r}")
                continue
            problems += [f"{where}: unknown key {key!r}{did_you_mean(str(key), EXCLUDE_KEYS)}"
                         for key in rule if key not in EXCLUDE_KEYS]
            problems += [f"{where}.{key} must be text, not {type(value).__name__}"
                         for key, value in rule.items() if key in EXCLUDE_KEYS and not isinstance(value, str)]
            rule = {key: value for key, value in rule.items() if key in EXCLUDE_KEYS and isinstance(value, str)}
            if "source" in rule and "source" in axes:
                rule["source"] = _source_named(rule["source"], axes["source"], info)
            for key, value in rule.items():
                if key in axes and value not in axes[key]:
                    hint = did_you_mean(value, axes[key]) if axes[key] else f" (the recipe names no {key})"
                    problems.append(f"{where}: {key} {value!r} is not in the sweep{hint}")
            rules.append(rule)
        if problems:
            raise _problems_error(problems)
        return rules

    @field_validator("export")
    @classmethod
    def _formats(cls, export: list[str]) -> list[str]:
        if not export:
            raise _problems_error([f"'export' is a list of formats ({', '.join(FORMATS)})"])
        unknown = [f"export: unknown format {fmt!r}{did_you_mean(fmt, FORMATS)}" for fmt in export if fmt not in FORMATS]
        if unknown:
            raise _problems_error(unknown)
        return export

    @field_validator("quantize", mode="before")
    @classmethod
    def _modes_alone(cls, quantize):
        return {"modes": quantize} if isinstance(quantize, list | str) else quantize

    @field_validator("validate_")
    @classmethod
    def _auto_has_data(cls, validate: ValidateSection | None, info: ValidationInfo) -> ValidateSection | None:
        quantize = info.data.get("quantize")
        if validate is None and quantize is not None and "auto" in quantize.modes and not quantize.data:
            raise _problems_error(["quantize mode 'auto' needs validation data "
                                   "('validate: data:' or 'quantize: data:')"])
        return validate

    @field_validator("breakeven")
    @classmethod
    def _scenario(cls, value, info: ValidationInfo) -> dict | None:
        if value is None:
            return None
        scenario, problems = _load_scenario(value, (info.context or {}).get("base", Path(".")))
        if scenario is not None:
            from toolkit.plan import scenario_problems  # the on-device share may be left to the plan

            problems = [f"breakeven: {problem}" for problem in scenario_problems(scenario)]
        if problems:
            raise _problems_error(problems)
        return scenario


EXCLUDE_KEYS = ("source", "format", "mode", "device")
SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def source_names(source: str | dict[str, str]) -> dict[str, str]:
    """name -> spec of a recipe's sources (one source is named after its model)."""
    return {_slug(_default_name(source)): source} if isinstance(source, str) else dict(source)


def _found_source(source: str, info: ValidationInfo) -> str:
    source = _resolve(source, info)
    if not source.startswith("builtin:") and ":" not in source and not Path(source).exists():
        raise _problems_error([f"source {source!r} not found"])
    return source


def _matrix_axes(info: ValidationInfo) -> dict[str, list[str]]:
    """The values each exclusion key may take: the recipe's sources, formats, modes and devices
    (an axis whose own key failed its check is left out)."""
    data = info.data
    axes: dict[str, list[str]] = {}
    if data.get("source"):
        axes["source"] = list(source_names(data["source"]))
    if "export" in data:
        axes["format"] = list(data["export"])
    if "quantize" in data:
        axes["mode"] = ["fp32", *(data["quantize"].modes if data["quantize"] else [])]
    if "bench" in data:
        bench = data["bench"] or BenchSection()
        axes["device"] = [*bench.devices, *bench.estimate]
    return axes


def _source_named(value: str, names: list[str], info: ValidationInfo) -> str:
    """An exclusion's source: a source's name, or its spec as written in the recipe."""
    if value in names:
        return value
    specs = source_names(info.data["source"])
    resolved = _resolve(value, info)
    return next((name for name, spec in specs.items() if spec in (value, resolved)), value)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "model"


def _load_scenario(value, base: Path) -> tuple[dict | None, list[str]]:
    from toolkit.safety.yaml import load_yaml

    if isinstance(value, dict) and "scenario" in value and len(value) == 1:
        value = value["scenario"]
    if isinstance(value, str):
        path = (Path(base) / value) if not Path(value).is_absolute() else Path(value)
        if not path.is_file():
            return None, [f"breakeven: scenario file {value!r} not found"]
        try:
            value = load_yaml(path)
        except BadInput as error:
            return None, [f"breakeven: {error}"]
    if not isinstance(value, dict):
        return None, ["breakeven: give a scenario mapping or the path of a scenario file"]
    return value, []


# ------------------------------------------------------------------ pydantic's errors in our words

SECTIONS = {"distill": DistillSection, "quantize": QuantizeSection, "validate": ValidateSection,
            "bench": BenchSection}
# a section that is not a mapping, or lacks its required key
SECTION_NEEDS = {
    "distill": "'distill' needs at least 'student' (e.g. shrink:0.5)",
    "quantize": "'quantize' is a mapping with 'modes' and optional 'calibration'",
    "validate": "'validate' needs 'data' (e.g. builtin:digits:test)",
    "bench": "'bench' is a mapping with 'devices' and/or 'estimate'",
}


def _problems(error: dict) -> list[str]:
    """One pydantic error as the recipe's messages: `section.key` first, then what is wrong."""
    loc = tuple("validate" if part == "validate_" else part for part in error["loc"])
    kind, found = error["type"], error.get("input")
    where = ".".join(str(part) for part in loc)
    if kind == "problems":
        return list(error["ctx"]["problems"])
    if loc == ("source",) and kind in ("missing", "string_type"):
        return ["'source' is required (e.g. builtin:digits-cnn or a model path)"]
    if kind == "extra_forbidden":
        choices = SECTIONS[loc[0]].model_fields if len(loc) == 2 and loc[0] in SECTIONS else RecipeSpec.model_fields
        choices = ["validate" if name == "validate_" else name for name in choices]
        return [f"unknown key {where!r}{did_you_mean(loc[-1], choices)}"]
    if loc[0] in SECTION_NEEDS and (len(loc) == 1 or kind == "missing"):
        return [SECTION_NEEDS[loc[0]]]
    if kind in ("number", "names"):
        return [f"{where} {error['msg']}"]
    if kind == "string_type":
        return [f"{where} must be text, not {type(found).__name__}"]
    if kind == "bool_type":
        return [f"{where} must be true or false, not {found!r}"]
    return [f"{where}: {error['msg'][:1].lower()}{error['msg'][1:]}"]


def _default_name(source: str) -> str:
    text = source.split(":", 1)[1] if source.startswith("builtin:") else Path(source).stem
    return text or "model"
