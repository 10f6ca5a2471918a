"""Run a recipe: source → distill → export → quantize → validate → bench → break-even.

The recipe becomes a plan: a list of steps, each with its own folder under the output
folder and a key (a hash of its options, the content of every outside input it reads and
the keys of the steps it reads; see toolkit.pipeline.keys). A step
whose folder already records the same key is reused without importing anything heavy,
so a rerun after editing only the break-even scenario redoes only the report.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from toolkit import __version__
from toolkit.artifacts import atomic_write_json
from toolkit.common.progress import ProgressCallback
from toolkit.errors import BadInput
from toolkit.pipeline.keys import step_key, step_reads
from toolkit.pipeline.recipe import Recipe

logger = logging.getLogger(__name__)

STEP_RECORD = "step.json"
RUN_MARKER = "edgeward-run.json"


@dataclass
class Step:
    name: str
    stage: str
    folder: Path
    options: dict
    inputs: list[str] = field(default_factory=list)  # names of the steps it reads
    key: str = ""
    action: Callable[[Step, dict], dict] | None = None
    deployable: bool = True  # False: an export a sweep excludes, kept only as its quantize steps' input

    def cached_summary(self) -> dict | None:
        record = self.folder / STEP_RECORD
        if not record.is_file():
            return None
        try:
            data = json.loads(record.read_text())
        except (json.JSONDecodeError, OSError):
            return None
        return data.get("summary") if data.get("key") == self.key else None


@dataclass
class PipelineResult:
    out_dir: Path
    steps: list[dict]
    rows: list[dict]
    report: Path
    seconds: float
    url: str | None = None  # where the run was published, when its root is a URL (toolkit.pipeline.storage)

    @property
    def reused(self) -> int:
        return sum(1 for step in self.steps if step["status"] == "reused")


# ---------------------------------------------------------------- planning


def plan(recipe: Recipe, out_dir: Path) -> list[Step]:
    """The ordered steps of a recipe, with their keys (nothing is run or imported).

    A sweep (several sources) repeats the stages for each source, its steps named after it;
    the recipe's exclusions leave combinations out, and the break-even step ranks the rest."""
    used: set[int] = set()  # the exclusions that matched something

    def excluded(**combination: str) -> bool:
        matches = recipe.matching_exclusions(**combination)
        used.update(matches)
        return bool(matches)

    steps: list[Step] = []
    models: list[tuple[Step, dict]] = []  # every step that yields a deployable model, with its combination
    for source_name, source, prefix in recipe.model_sources():
        models += _source_steps(recipe, source, source_name, prefix, out_dir, steps, excluded)

    devices = [*recipe.bench_devices, *recipe.estimate_devices]
    skipped = []  # (model, device) pairs the break-even leaves out of its ranking
    for model, combination in models:
        if recipe.validate:
            options = {"reference": combination["teacher"], "data": recipe.validate["data"], **_gates(recipe)}
            steps.append(
                Step(f"validate-{model.name}", "validate", out_dir / f"validate-{model.name}", options,
                     [model.name], action=_validate)
            )
        kept = {device for device in devices if not excluded(**combination["axes"], device=device)}
        skipped += [[model.name, device] for device in devices if device not in kept]
        for device in (d for d in recipe.bench_devices if d in kept):
            options = {"device": device, "runs": recipe.bench_runs}
            steps.append(
                Step(f"bench-{model.name}-{device}", "bench", out_dir / "bench" / f"{model.name}-{device}",
                     options, [model.name], action=_bench)
            )
        for device in (d for d in recipe.estimate_devices if d in kept):
            options = {"device": device, "estimate": True}
            steps.append(
                Step(f"estimate-{model.name}-{device}", "estimate", out_dir / "bench" / f"{model.name}-{device}-estimate",
                     options, [model.name], action=_bench)
            )
    unused = [index for index in range(len(recipe.exclude)) if index not in used]
    if unused:
        raise BadInput("; ".join(f"exclude[{index}] {recipe.exclude[index]} matches nothing the recipe would run"
                                 for index in unused))
    if recipe.breakeven is not None:
        measured = [s.name for s in steps if s.stage == "bench"]
        options = {"scenario": recipe.breakeven, **({"skip": skipped} if skipped else {})}
        steps.append(
            Step("breakeven", "breakeven", out_dir / "breakeven", options,
                 [s.name for s in steps if s.stage in ("validate", "bench", "estimate")] or measured, action=_breakeven)
        )
    _assign_keys(steps, recipe)
    return steps


def _source_steps(recipe: Recipe, source: str, source_name: str, prefix: str, out_dir: Path, steps: list[Step],
                  excluded: Callable[..., bool]) -> list[tuple[Step, dict]]:
    """Append one source's distill, export and quantize steps; return its deployable models, each
    with its combination (the axes exclusions match, and the teacher its validation compares with)."""
    from toolkit.quantize.modes import MODES

    model_spec = source
    distill_name = f"{prefix}distill"
    if recipe.distill:
        options = {"teacher": source, **recipe.distill}
        steps.append(Step(distill_name, "distill", out_dir / distill_name, options, action=_distill))
        model_spec = str(out_dir / distill_name)

    models: list[tuple[Step, dict]] = []
    for fmt in recipe.export:
        name = f"{prefix}export-{fmt}"
        step = Step(name, "export", out_dir / name, {"source": model_spec, "to": fmt})
        step.inputs = [distill_name] if recipe.distill else []
        step.action = _export
        steps.append(step)
        plain = {"source": source_name, "format": fmt, "mode": "fp32"}
        export_index = len(models)
        models.append((step, {"axes": plain, "teacher": source}))
        quantized_any = False
        for mode in recipe.quantize_modes:
            if mode == "auto":
                options = {"mode": "auto", "data": _auto_data(recipe), "budget": recipe.auto_budget_s}
                options.update(_gates(recipe))
            elif any(m.name == mode and m.format == fmt for m in MODES):
                options = {"mode": mode}
                if any(m.name == mode and m.format == fmt and m.needs_calibration for m in MODES):
                    options["calibration"] = recipe.calibration or _auto_data(recipe)
            else:
                continue
            axes = {**plain, "mode": mode}
            if excluded(**axes):
                continue
            name = f"{prefix}quantize-{fmt}-{mode}"
            quantized = Step(name, "quantize", out_dir / name, options)
            quantized.inputs, quantized.action = [step.name], _quantize
            steps.append(quantized)
            models.append((quantized, {"axes": axes, "teacher": source}))
            quantized_any = True
        if excluded(**plain):
            del models[export_index]
            step.deployable = False  # still the input of its quantize steps, but not validated, benched or ranked
            if not quantized_any:
                steps.remove(step)
    return models


def _assign_keys(steps: list[Step], recipe: Recipe) -> None:
    """Each step's key: its stage and options, the keys of the steps it reads, and the content
    of every outside input it reads (see toolkit.pipeline.keys)."""
    by_name: dict[str, Step] = {}
    for step in steps:
        upstream = [by_name[name].key for name in step.inputs if name in by_name]
        reads = step_reads(step.stage, step.options, from_upstream=bool(step.inputs))
        step.key = step_key(step.stage, step.options, upstream, reads)
        by_name[step.name] = step


def _gates(recipe: Recipe) -> dict:
    validate = recipe.validate or {}
    return {k: validate[k] for k in ("max_drop", "min_agreement", "min_sqnr", "max_ppl_ratio", "max_kl")
            if k in validate}


def _auto_data(recipe: Recipe) -> str | None:
    return (recipe.validate or {}).get("data") or recipe.calibration


# ---------------------------------------------------------------- running


def run(recipe: Recipe, out_dir: str | Path, *, force: bool = False, dry_run: bool = False,
        executor: str = "serial", address: str | None = None, progress: ProgressCallback | None = None,
        storage_options: dict | None = None) -> PipelineResult:
    """Run (or, with dry_run, only describe) every step of a recipe, reusing unchanged ones.

    executor "serial" runs the steps one after another here; "ray" runs independent steps as
    Ray tasks (joining the cluster at `address`, else starting a local one); see executors.py.
    `out_dir` may be an fsspec URL (s3://bucket/prefix; `storage_options` go to fsspec): the
    steps run in a local staging folder and each is published there as a unit (storage.py).
    """
    from toolkit.pipeline import storage
    from toolkit.pipeline.executors import StepRunner, StepsFailed, run_steps

    started = time.perf_counter()
    remote = None
    if storage.is_url(out_dir):
        remote = storage.open_root(str(out_dir), storage_options)
        storage.check_root(remote, force)
        out_dir = remote.staging
    elif storage_options:
        raise BadInput("storage options are for an output root given as a URL (s3://bucket/prefix)")
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, force or remote is not None)
    _refuse_emulated_pricing(recipe)
    steps = plan(recipe, out_dir)
    if dry_run:
        done: dict[str, dict] = {}
        records = []
        committed = storage.remote_keys(remote, steps) if remote is not None else {}
        for index, step in enumerate(steps, 1):
            cached = None if force else step.cached_summary()
            if remote is not None:
                cached = None if force or committed.get(step.name) != step.key else (cached or {})
            records.append({"step": step.name, "stage": step.stage, "folder": str(step.folder),
                            "status": "reuse" if cached is not None else "run", "options": step.options})
            logger.info("[%d/%d] %s: %s → %s", index, len(steps), step.name,
                        "reuse" if cached is not None else "run", step.folder)
            done[step.name] = cached or {}
        return PipelineResult(out_dir, records, summary_rows(steps, done), out_dir / "index.html",
                              time.perf_counter() - started, remote.url if remote else None)
    if remote is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        storage.sync_before_run(remote, steps, force)
    published = remote.describe() if remote is not None else None

    def in_process(step: Step, done: dict, force: bool) -> dict:
        upstream = {name: done[name] for name in step.inputs if name in done}
        return execute_step(step, {"upstream": upstream, "all": done, "recipe": recipe, "force": force,
                                   "publish": published})

    def payload(step: Step) -> dict:
        return {**step_payload(step), "publish": published}

    runner = StepRunner(in_process, child_target="toolkit.pipeline:execute_step_payload", payload=payload)
    failure = None
    try:
        done, records = run_steps(steps, runner, executor=executor, force=force, address=address, progress=progress)
    except StepsFailed as error:  # a device dropped: the index still shows every step, then exit 4
        failure, done, records = error, error.done, error.records
    rows = summary_rows(steps, done)
    report = out_dir / "index.html"
    atomic_write_json(out_dir / RUN_MARKER, {"recipe": recipe.name, "edgeward": __version__})
    from toolkit.pipeline.report import write_index

    write_index(report, recipe, rows, steps, done, records)
    if remote is not None:
        storage.publish_run_files(remote, [report.name, RUN_MARKER])
    if failure is not None:
        raise failure
    return PipelineResult(out_dir, records, rows, report, time.perf_counter() - started,
                          remote.url if remote else None)


def execute_step(step: Step, context: dict) -> dict:
    """Run one step and record its key and summary in its folder (what a later run reuses)."""
    summary = step.action(step, context)
    step.folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(step.folder / STEP_RECORD, {"key": step.key, "step": step.name, "summary": summary})
    if context.get("publish"):  # the run's root is a URL: publish the finished folder as a unit
        from toolkit.pipeline import storage

        storage.publish_folder(storage.open_root(**context["publish"]), step.folder)
    return summary


def step_payload(step: Step) -> dict:
    """A step as JSON, for a step run in another process (execute_step_payload rebuilds it)."""
    return {"name": step.name, "stage": step.stage, "folder": str(step.folder), "options": step.options,
            "inputs": step.inputs, "key": step.key}


def execute_step_payload(payload: dict, done: dict, force: bool) -> dict:
    """execute_step for a step described by step_payload (the Ray executor's child calls this).
    The recipe itself is not sent: no stage action reads it, each reads its step's options."""
    step = Step(payload["name"], payload["stage"], Path(payload["folder"]), payload["options"],
                list(payload["inputs"]), payload["key"], action=STAGE_ACTIONS[payload["stage"]])
    upstream = {name: done[name] for name in step.inputs if name in done}
    return execute_step(step, {"upstream": upstream, "all": done, "recipe": None, "force": force,
                               "publish": payload.get("publish")})


def _refuse_emulated_pricing(recipe: Recipe) -> None:
    """A break-even priced on an emulated board's timings would price QEMU, not the device."""
    if recipe.breakeven is None or not recipe.bench_devices:
        return
    from toolkit.devices import get_profile

    emulated = [device for device in recipe.bench_devices if get_profile(device).emulated]
    if emulated:
        raise BadInput(f"bench: {', '.join(emulated)} is an emulated board; its timings are not device timings "
                       f"and the break-even cannot price them (move it to validate/drift, or estimate: instead)")


def _check_out_dir(out_dir: Path, force: bool) -> None:
    """Write only into a new folder or one an earlier run made (it holds RUN_MARKER)."""
    if not out_dir.exists() or force or (out_dir / RUN_MARKER).is_file():
        return
    if not out_dir.is_dir():
        raise BadInput(f"{out_dir} exists and is not a folder")
    if any(out_dir.iterdir()):
        raise BadInput(f"{out_dir} holds files that no pipeline run wrote: choose another -o, or pass --force")


def summary_rows(steps: list[Step], done: dict[str, dict]) -> list[dict]:
    """One row per deployable model: format, mode, size, accuracy, drop, p50, break-even month."""
    breakeven = done.get("breakeven") or {}
    per_model = breakeven.get("per_model", {})
    rows = []
    for step in steps:
        if step.stage not in ("export", "quantize") or not step.deployable:
            continue
        model = done.get(step.name) or {}
        validation = done.get(f"validate-{step.name}") or {}
        bench = next((done[s.name] for s in steps if s.stage == "bench" and s.inputs == [step.name] and s.name in done), {})
        estimates = {done[s.name]["device"]: done[s.name].get("p50_ms") for s in steps
                     if s.stage == "estimate" and s.inputs == [step.name] and s.name in done}
        rows.append({
            "model": step.name,
            "format": model.get("format"),
            "mode": model.get("mode", "fp32"),
            "size_bytes": model.get("size_bytes"),
            "accuracy": validation.get("accuracy"),
            "drop": validation.get("drop"),
            "passed": validation.get("passed"),
            "p50_ms": bench.get("p50_ms"),
            "estimated_p50_ms": estimates,
            "breakeven_month": per_model.get(step.name, {}).get("breakeven_month"),
            **{key: per_model.get(step.name, {}).get(key) for key in  # the model's best option in the plan
               ("priced_device", "on_device_share", "system_accuracy", "cost_per_1k", "fits")},
        })
    return rows


# ---------------------------------------------------------------- stage actions
# Each takes the step and a context, does the work through the library, and returns a
# small JSON-able summary that later steps and the report read.


def _model_of(context: dict, step: Step) -> str:
    return context["upstream"][step.inputs[0]]["model_path"]


def _distill(step: Step, context: dict) -> dict:
    from toolkit.distill import distill
    from toolkit.pipeline import lm_steps

    if lm_steps.is_language_model_source(step.options["teacher"]):
        return lm_steps.distill_step(step)
    options = dict(step.options)
    teacher = options.pop("teacher")
    student = options.pop("student")
    data = options.pop("data", "builtin:digits:train")
    result = distill(teacher, student, data, out_dir=step.folder, force=True, **options)
    record = _as_dict(result)
    return {"model_path": str(step.folder), **{k: v for k, v in record.items() if _is_plain(v)}}


def _export(step: Step, context: dict) -> dict:
    from toolkit.export import export

    result = export(step.options["source"], step.options["to"], step.folder, force=True)
    model_path = Path(result.model_path)
    return {"model_path": str(model_path), "format": step.options["to"], "mode": "fp32",
            "size_bytes": model_path.stat().st_size, "max_abs_error": result.max_abs_error}


def _quantize(step: Step, context: dict) -> dict:
    model = _model_of(context, step)
    options = step.options
    if options["mode"] == "auto":
        from toolkit.quantize.auto import auto_quantize

        gates = {k: options[k] for k in ("max_drop", "min_agreement") if k in options}
        result = auto_quantize(model, step.folder, data=options["data"], budget_s=options["budget"], force=True, **gates)
        record = _as_dict(result)
        model_path = record.get("model_path")
        mode = f"auto→{record.get('mode') or record.get('chosen') or '?'}"
    else:
        from toolkit.quantize import quantize

        result = quantize(model, options["mode"], step.folder, calibration=options.get("calibration"), force=True)
        model_path, mode = result.model_path, options["mode"]
    model_path = Path(model_path)
    return {"model_path": str(model_path), "format": model_path.suffix.lstrip("."), "mode": mode,
            "size_bytes": model_path.stat().st_size}


def _validate(step: Step, context: dict) -> dict:
    from toolkit.pipeline import lm_steps
    from toolkit.validate import validate

    if lm_steps.is_language_model_artifact(_model_of(context, step)):
        return lm_steps.validate_step(step, _model_of(context, step))
    options = step.options
    gates = {k: options[k] for k in ("max_drop", "min_agreement", "min_sqnr") if k in options}
    report = validate(_model_of(context, step), options["reference"], options["data"], out_dir=step.folder, **gates)
    record = _as_dict(report)
    summary = _validation_summary(record)
    summary["report"] = str(step.folder / "report.md")
    return summary


def _validation_summary(record: dict) -> dict:
    """accuracy, drop and agreement of the first output, and whether every gate passed."""
    outputs = record.get("outputs") or []
    first = outputs[0] if outputs else {}
    accuracy = first.get("candidate_accuracy", first.get("accuracy"))
    reference = first.get("reference_accuracy")
    drop = first.get("drop", first.get("accuracy_drop"))
    if drop is None and accuracy is not None and reference is not None:
        drop = (reference - accuracy) * 100
    return {"passed": bool(record.get("passed")), "accuracy": accuracy, "reference_accuracy": reference,
            "drop": drop, "agreement": first.get("agreement"), "sqnr_db": first.get("sqnr_db")}


def _bench(step: Step, context: dict) -> dict:
    from toolkit.bench import bench
    from toolkit.pipeline import lm_steps

    if lm_steps.is_language_model_artifact(_model_of(context, step)):
        return lm_steps.bench_step(step, _model_of(context, step))
    options = step.options
    kwargs = {"device": options["device"]}
    if options.get("estimate"):
        kwargs["estimate"] = True
    else:
        kwargs["runs"] = options["runs"]
    result = bench(_model_of(context, step), **kwargs)
    step.folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(step.folder / "bench.json", result)
    latency = result.get("latency_ms") or {}
    estimate = result.get("latency") if isinstance(result.get("latency"), dict) else {}
    return {"device": options["device"], "estimate": bool(options.get("estimate")),
            "p50_ms": latency.get("p50"), "bound": estimate.get("bound"),
            "fits": (result.get("fit") or {}).get("fits"), "bench_json": str(step.folder / "bench.json")}


def _breakeven(step: Step, context: dict) -> dict:
    """Rank every model on every device it was benched or estimated on, each priced with its own
    figures (toolkit.plan), and write the recommended option's break-even report beside the plan."""
    from toolkit.costs.report import write_reports
    from toolkit.pipeline import lm_steps
    from toolkit.plan import build_plan
    from toolkit.plan.report import write_plan

    done = context["all"]
    if any((summary or {}).get("kind") == "language-model" for summary in done.values()):
        return lm_steps.breakeven_step(step, done)
    scenario = step.options["scenario"]
    variants = _variants(done)
    if not variants:
        raise BadInput("breakeven: the recipe validates no model, so nothing can be priced (add validate:)")
    skip = {tuple(pair) for pair in step.options.get("skip", ())}  # combinations the recipe excludes
    result = build_plan(variants, _priced_devices(scenario, done), scenario, skip=skip)
    paths = {f"plan_{kind}": str(path) for kind, path in write_plan(result, step.folder).items()}
    chosen = _chosen_model(result)
    if chosen is not None:
        paths.update({kind: str(path) for kind, path in write_reports(chosen.result, step.folder).items()})
    per_model = {}
    for option in result.options:  # ranked: each model's first option is its best
        per_model.setdefault(option.variant.name, {
            "breakeven_month": _number(option.breakeven_month), "priced_device": option.device,
            "on_device_share": option.share.share, "system_accuracy": option.system_accuracy,
            "cost_per_1k": _number(option.cost_per_1k), "fits": option.fit.fits,
            "latency": option.measured.how if option.measured else None, "blockers": option.blockers(),
            "error": option.error})
    return {"breakeven_month": _number(chosen.breakeven_month) if chosen else None,
            "chosen_model": chosen.variant.name if chosen else None, "chosen_device": chosen.device if chosen else None,
            "recommendation": result.recommendation, "accuracy_floor": result.floor, "reports": paths,
            "per_model": per_model}


def _number(value) -> float | None:
    return None if value is None else float(value)


def _variants(done: dict) -> list:
    """Each validated model of the run, with its validation report and every bench and estimate of it."""
    from toolkit.plan import variant_from_files

    benches = _bench_by_model(done)
    variants = []
    for name, summary in done.items():
        validation = done.get(f"validate-{name}")
        if not (summary and summary.get("model_path") and summary.get("format") and validation):
            continue
        report = Path(validation["report"]).with_name("report.json")
        files = [record["bench_json"] for record in benches.get(name, [])]
        variants.append(variant_from_files(name, summary["model_path"], report, files, mode=summary.get("mode")))
    return variants


def _priced_devices(scenario: dict, done: dict) -> list[str]:
    """The scenario's edge.device when it names one, else every device a model was benched or estimated on."""
    edge = scenario.get("edge") if isinstance(scenario.get("edge"), dict) else {}
    if edge.get("device"):
        return [str(edge["device"])]
    devices = [record["device"] for records in _bench_by_model(done).values() for record in records]
    return list(dict.fromkeys(devices)) or ["localhost"]


def _bench_by_model(done: dict) -> dict[str, list[dict]]:
    """model step name -> its bench and estimate summaries (each names its device and bench.json)."""
    found: dict[str, list[dict]] = {}
    for name, summary in done.items():
        for prefix in ("bench-", "estimate-"):
            if name.startswith(prefix) and summary and summary.get("bench_json"):
                model = name[len(prefix): -(len(summary["device"]) + 1)]
                found.setdefault(model, []).append(summary)
    return found


def _chosen_model(result):
    """The recommended option, else the cheapest priced one (the report says why it is not recommended)."""
    return result.recommended or next((option for option in result.options if option.result is not None), None)


def _as_dict(value) -> dict:
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if hasattr(value, "as_dict"):
        return value.as_dict()
    if hasattr(value, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(value)
    return dict(vars(value))


def _is_plain(value) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


# which action runs a step of each stage (a step run in a child is rebuilt from its stage)
STAGE_ACTIONS: dict[str, Callable[[Step, dict], dict]] = {
    "distill": _distill, "export": _export, "quantize": _quantize, "validate": _validate,
    "bench": _bench, "estimate": _bench, "breakeven": _breakeven,
}
