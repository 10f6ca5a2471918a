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

Relative file paths (source, data, calibration, scenario) are read from the recipe's folder
when the file is there.
"""

from __future__ import annotations

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
    return Recipe(
        name=spec.name or _default_name(spec.source),
        source=spec.source,
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
        if spec not in BUILTIN_DATA:
            raise _problems_error([f"unknown builtin data {spec!r} (builtin:digits[:train|:test])"])
        return spec
    from urllib.parse import parse_qsl, urlencode

    from toolkit.data import parse_spec, spec_path
    from toolkit.errors import BadInput

    path = spec_path(spec)
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
    source: str
    distill: DistillSection | None = None
    export: Names = ["onnx"]
    quantize: QuantizeSection | None = None
    validate_: ValidateSection | None = Field(None, alias="validate", validate_default=True)
    bench: BenchSection | None = None
    breakeven: Any = None  # the scenario: a mapping, a file path, or {scenario: either}

    @field_validator("source")
    @classmethod
    def _found(cls, source: str, info: ValidationInfo) -> str:
        if not source:
            raise PydanticCustomError("missing", "Field required")
        source = _resolve(source, info)
        if not source.startswith("builtin:") and ":" not in source and not Path(source).exists():
            raise _problems_error([f"source {source!r} not found"])
        return source

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
