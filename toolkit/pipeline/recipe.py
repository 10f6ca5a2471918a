"""Recipes: one YAML file naming every stage from source to break-even report.

A recipe is parsed and checked once, at the edge, and every problem in it is reported
together (one `BadInput` listing them all). Only `pipeline.py` and the CLI see it.

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
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.errors import BadInput

FORMATS = ("onnx", "tflite")
TOP_LEVEL = ("name", "source", "distill", "export", "quantize", "validate", "bench", "breakeven")


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
    from toolkit.safety import load_yaml

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
    problems: list[str] = []
    recipe = _parse(data, base, problems)
    _check_references(recipe, problems)
    if problems:
        listed = "; ".join(problems)
        raise BadInput(f"{origin}: {len(problems)} problem(s): {listed}")
    return recipe


def _parse(data: dict, base: Path, problems: list[str]) -> Recipe:
    for key in data:
        if key not in TOP_LEVEL:
            problems.append(f"unknown key {key!r}{_suggest(key, TOP_LEVEL)}")
    source = data.get("source")
    if not isinstance(source, str) or not source:
        problems.append("'source' is required (e.g. builtin:digits-cnn or a model path)")
        source = ""
    name = _string(data.get("name"), "name", problems) or _default_name(source)

    distill = data.get("distill")
    if distill is not None:
        if not isinstance(distill, dict) or not _string(distill.get("student"), "distill.student", problems) \
                or not all(_string(distill.get(k), f"distill.{k}", problems) is not None
                           for k in ("data", "val") if k in distill):
            problems.append("'distill' needs at least 'student' (e.g. shrink:0.5)")
            distill = None
        else:
            _check_number(distill, "epochs", problems, "distill", minimum=1, integer=True)
            _check_number(distill, "temperature", problems, "distill", minimum=1e-9)
            _check_number(distill, "alpha", problems, "distill", minimum=0, maximum=1)

    export = _strings(data.get("export", ["onnx"]), "export", problems)
    if "export" in data and not export:
        problems.append("'export' is a list of formats (onnx, tflite)")
    for fmt in export:
        if fmt not in FORMATS:
            problems.append(f"export: unknown format {fmt!r}{_suggest(str(fmt), FORMATS)}")

    quantize = data.get("quantize") or {}
    if isinstance(quantize, list | str):
        quantize = {"modes": quantize}
    if not isinstance(quantize, dict):
        problems.append("'quantize' is a mapping with 'modes' and optional 'calibration'")
        quantize = {}
    modes = _strings(quantize.get("modes", []), "quantize.modes", problems)
    calibration = _string(quantize.get("calibration"), "quantize.calibration", problems)
    _check_number(quantize, "budget", problems, "quantize", minimum=1)

    validate = data.get("validate")
    if validate is not None:
        if not isinstance(validate, dict) or not _string(validate.get("data"), "validate.data", problems):
            problems.append("'validate' needs 'data' (e.g. builtin:digits:test)")
            validate = None
        else:
            _check_number(validate, "max_drop", problems, "validate", minimum=0, maximum=100)
            _check_number(validate, "min_agreement", problems, "validate", minimum=0, maximum=1)
            _check_number(validate, "min_sqnr", problems, "validate")
    if "auto" in modes and not (validate or quantize.get("data")):
        problems.append("quantize mode 'auto' needs validation data ('validate: data:' or 'quantize: data:')")

    bench = data.get("bench") or {}
    if not isinstance(bench, dict):
        problems.append("'bench' is a mapping with 'devices' and/or 'estimate'")
        bench = {}
    _check_number(bench, "runs", problems, "bench", minimum=1, integer=True)
    bench_devices = _strings(bench.get("devices") or [], "bench.devices", problems)
    estimate_devices = _strings(bench.get("estimate") or [], "bench.estimate", problems)

    scenario = data.get("breakeven")
    if scenario is not None:
        scenario = _load_scenario(scenario, base, problems)

    return Recipe(
        name=name,
        source=_resolve(source, base),
        distill=distill,
        export=list(export),
        quantize_modes=modes,
        calibration=_resolve(calibration, base) if calibration else None,
        auto_budget_s=float(quantize["budget"]) if _is_number(quantize.get("budget")) else 300.0,
        validate=validate,
        bench_devices=bench_devices,
        estimate_devices=estimate_devices,
        bench_runs=bench.get("runs", 50) if isinstance(bench.get("runs", 50), int) else 50,
        breakeven=scenario,
        base_dir=base,
    )


def _load_scenario(value, base: Path, problems: list[str]) -> dict | None:
    from toolkit.safety import load_yaml

    if isinstance(value, dict) and "scenario" in value and len(value) == 1:
        value = value["scenario"]
    if isinstance(value, str):
        path = (base / value) if not Path(value).is_absolute() else Path(value)
        if not path.is_file():
            problems.append(f"breakeven: scenario file {value!r} not found")
            return None
        try:
            value = load_yaml(path)
        except BadInput as error:
            problems.append(f"breakeven: {error}")
            return None
    if not isinstance(value, dict):
        problems.append("breakeven: give a scenario mapping or the path of a scenario file")
        return None
    return value


def _check_references(recipe: Recipe, problems: list[str]) -> None:
    """Names that only the library can check: modes, devices, data specs, the scenario."""
    from toolkit.quantize.modes import MODES

    known_modes = sorted({mode.name for mode in MODES} | {"auto"})
    for mode in recipe.quantize_modes:
        if mode not in known_modes:
            problems.append(f"quantize: unknown mode {mode!r}{_suggest(mode, known_modes)}")
    for spec in filter(None, [recipe.calibration, (recipe.validate or {}).get("data")]):
        _check_data_spec(spec, problems)
    if recipe.distill:
        for key in ("data", "val"):
            if recipe.distill.get(key):
                _check_data_spec(recipe.distill[key], problems)
    if recipe.source and not recipe.source.startswith("builtin:") and ":" not in recipe.source \
            and not Path(recipe.source).exists():
        problems.append(f"source {recipe.source!r} not found")
    devices = recipe.bench_devices + recipe.estimate_devices
    if devices:
        from toolkit.devices.profiles import profile_files

        names = sorted(profile_files())
        for device in devices:
            if device not in names:
                problems.append(f"bench: unknown device {device!r}{_suggest(device, names)}")
    if recipe.breakeven is not None:
        from toolkit.costs.scenario import scenario_problems

        problems.extend(f"breakeven: {problem}" for problem in scenario_problems(recipe.breakeven))


def _check_data_spec(spec: str, problems: list[str]) -> None:
    if spec.startswith("builtin:"):
        if spec not in ("builtin:digits", "builtin:digits:train", "builtin:digits:test", "builtin:digits:all"):
            problems.append(f"unknown builtin data {spec!r} (builtin:digits[:train|:test])")
    elif not Path(spec).is_file():
        problems.append(f"data file {spec!r} not found")


def _string(value, where: str, problems: list[str]) -> str | None:
    if value is None or isinstance(value, str):
        return value
    problems.append(f"{where} must be text, not {type(value).__name__}")
    return None


def _strings(value, where: str, problems: list[str]) -> list[str]:
    """A string or a list of strings; anything else is a problem."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    problems.append(f"{where} must be a name or a list of names, not {type(value).__name__}")
    return []


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_number(section: dict, key: str, problems, where: str, *, minimum=None, maximum=None, integer=False):
    if key not in section:
        return
    value = section[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int)):
        problems.append(f"{where}.{key} must be a{'n integer' if integer else ' number'}, not {value!r}")
    elif (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = f"{minimum if minimum is not None else '-inf'}..{maximum if maximum is not None else 'inf'}"
        problems.append(f"{where}.{key} = {value} is outside {bounds}")


def _resolve(spec: str | None, base: Path) -> str:
    """A relative file path in a recipe is relative to the recipe's folder."""
    if not spec or spec.startswith("builtin:") or Path(spec).is_absolute():
        return spec or ""
    candidate = base / spec
    return str(candidate) if candidate.exists() else spec


def _default_name(source: str) -> str:
    text = source.split(":", 1)[1] if source.startswith("builtin:") else Path(source).stem
    return text or "model"


def _suggest(value, choices) -> str:
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=3)
    return f" (did you mean {', '.join(close)}?)" if close else f" (choose from {', '.join(choices)})"
