"""The variants a plan ranks: model files with their validation and their benches.

A variant comes from an artifact folder (its manifest's `validation` record, written by
`edgeward validate`, and any `bench*.json` beside the model), from a finished
`edgeward run` folder (its validate reports and bench/estimate files), or from explicit
files (what the pipeline's break-even step passes). Nothing here runs a model.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.errors import BadInput

logger = logging.getLogger(__name__)

RUN_MARKER = "edgeward-run.json"  # written by toolkit.pipeline.run (plan sits beside pipeline, not below it)
STEP_RECORD = "step.json"


@dataclass
class Measurement:
    """Latency and memory of one variant on one device, measured there or estimated for it."""

    device: str
    p50_ms: float | None
    p95_ms: float | None
    estimate: bool
    memory_mb: float | None  # measured peak RSS, or the estimate's model + peak activations
    fit: dict | None  # the estimate's fit record (RAM and storage), None for a measurement
    record: dict = field(repr=False)  # the bench JSON itself (what the cost model reads)
    source: str = ""

    @property
    def how(self) -> str:
        return "estimate" if self.estimate else "measured"


@dataclass
class Variant:
    name: str
    model_path: Path
    format: str
    mode: str
    size_bytes: int
    validation: dict  # accuracy, reference_accuracy, passed, confidence (the compact curve), source
    benches: dict[str, Measurement] = field(default_factory=dict)  # device -> measurement (measured wins)
    skipped: list[str] = field(default_factory=list)  # benches left out of the plan, each with why

    @property
    def accuracy(self) -> float | None:
        return self.validation.get("accuracy")

    @property
    def curve(self) -> dict | None:
        return self.validation.get("confidence")


# ---------------------------------------------------------------- reading records


def read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise BadInput(f"{what} {path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadInput(f"{what} {path}: not readable JSON ({error})") from None
    if not isinstance(data, dict):
        raise BadInput(f"{what} {path}: expected a JSON object")
    return data


def validation_facts(record: dict, source: str) -> dict:
    """Accuracy, the reference's accuracy, agreement, gates and the confidence curve of a
    validation record (report.json or a manifest's `validation`)."""
    outputs = record.get("outputs") or []
    first = next((o for o in outputs if o.get("candidate_accuracy") is not None), outputs[0] if outputs else {})
    curve = record.get("confidence")
    accuracy = first.get("candidate_accuracy")
    reference = first.get("reference_accuracy")
    if accuracy is None and first.get("agreement") is not None:  # no labels: agreement with the reference
        accuracy, reference = first["agreement"], 1.0
    return {"accuracy": accuracy, "reference_accuracy": reference, "agreement": first.get("agreement"),
            "passed": record.get("passed"), "data": record.get("data"), "reference": record.get("reference"),
            "samples": record.get("samples"), "confidence": curve if isinstance(curve, dict) else None,
            "source": source}


def measurement(record: dict, source: str) -> Measurement:
    """A Measurement from `edgeward bench --json` output (measured or --estimate)."""
    device = record.get("device")
    name = device.get("name") if isinstance(device, dict) else device
    if not name:
        raise BadInput(f"bench {source}: it does not say which device it ran on")
    latency = record.get("latency_ms") if isinstance(record.get("latency_ms"), dict) else {}
    estimate = bool(record.get("estimate")) or record.get("mode") == "estimate"
    fit = record.get("fit") if isinstance(record.get("fit"), dict) else None
    memory = fit.get("ram_needed_mb") if estimate and fit else (record.get("peak_rss_mb") or record.get("peak_memory_mb"))
    p50 = _positive(latency.get("p50"))
    if p50 is None:
        raise BadInput(f"bench {source}: no p50 latency in it; is it `edgeward bench --json` output?")
    return Measurement(device=str(name), p50_ms=p50, p95_ms=_positive(latency.get("p95")), estimate=estimate,
                       memory_mb=_positive(memory), fit=fit, record=record, source=source)


def _positive(value) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else None


def add_bench(variant: Variant, bench: Measurement) -> None:
    """Keep one measurement per device: a measurement beats an estimate; else the first seen."""
    from toolkit.bench import is_emulated

    if is_emulated(bench.record):
        variant.skipped.append(f"{variant.name}: bench {bench.source} on {bench.device} was timed under emulation; "
                               f"left out (emulated timings are not device timings)")
        return
    held = variant.benches.get(bench.device)
    if held is None or (held.estimate and not bench.estimate):
        variant.benches[bench.device] = bench


def model_of(record: dict) -> tuple[str | None, str | None]:
    model = record.get("model") if isinstance(record.get("model"), dict) else {}
    return model.get("sha256"), model.get("path")


# ---------------------------------------------------------------- building variants


def variant_from_files(name: str, model_path, validation_json=None, bench_jsons=(), *, validation=None,
                       mode: str | None = None) -> Variant:
    """A variant from its model file, a validate report.json (or an already read record) and bench files."""
    from toolkit.artifacts import read_manifest, resolve_model

    path = resolve_model(model_path)
    manifest = read_manifest(path.parent)
    if validation is None and validation_json is not None:
        validation = validation_facts(read_json(Path(validation_json), "validation report"), str(validation_json))
    variant = Variant(name=name, model_path=path, format=path.suffix.lstrip(".").lower(),
                      mode=mode or manifest.get("mode") or (manifest.get("options") or {}).get("mode") or "fp32",
                      size_bytes=path.stat().st_size, validation=validation or {})
    for bench_path in bench_jsons:
        add_bench(variant, measurement(read_json(Path(bench_path), "bench"), str(bench_path)))
    return variant


def from_artifact(folder: Path) -> Variant:
    """An artifact folder: its manifest's validation record and `bench*.json` files in it."""
    from toolkit.artifacts import read_manifest

    folder = Path(folder)
    if not folder.is_dir():
        raise BadInput(f"{folder}: no such folder (give artifact folders written by export, quantize or distill, "
                       "or --run with an `edgeward run` folder)")
    if (folder / RUN_MARKER).is_file():
        raise BadInput(f"{folder} is an `edgeward run` folder: pass it as --run {folder}")
    manifest = read_manifest(folder)
    if not manifest:
        raise BadInput(f"{folder}: no manifest.json; give a folder written by edgeward export, quantize or distill")
    record = manifest.get("validation")
    if not isinstance(record, dict):
        raise BadInput(f"{folder}: no validation recorded; run `edgeward validate {folder} --reference SOURCE "
                       "--data DATA` first")
    variant = variant_from_files(folder.name, folder, validation=validation_facts(record, f"{folder}/manifest.json"))
    for bench_path in sorted(folder.glob("bench*.json")):
        add_bench(variant, measurement(read_json(bench_path, "bench"), str(bench_path)))
    return variant


def from_run(run_dir: Path) -> list[Variant]:
    """Every deployable model of a finished `edgeward run`, with its validation and benches."""
    run_dir = Path(run_dir)
    if not (run_dir / RUN_MARKER).is_file():
        raise BadInput(f"--run {run_dir}: not a finished `edgeward run` folder (no {RUN_MARKER})")
    variants = []
    for step_file in sorted(run_dir.glob(f"*/{STEP_RECORD}")):
        step = read_json(step_file, "step record")
        summary = step.get("summary") or {}
        name = step.get("step") or step_file.parent.name
        if not (summary.get("model_path") and summary.get("format")):
            continue  # not a model step (validate, break-even, distill)
        report = run_dir / f"validate-{name}" / "report.json"
        if not report.is_file():
            raise BadInput(f"--run {run_dir}: {name} has no validation report ({report}); add validate: to the recipe")
        variants.append(variant_from_files(name, summary["model_path"], report, mode=summary.get("mode")))
    if not variants:
        raise BadInput(f"--run {run_dir}: no exported or quantized model in it")
    attach_benches(variants, sorted((run_dir / "bench").glob("*/bench.json")))
    return variants


def attach_benches(variants: list[Variant], bench_paths) -> None:
    """Give each bench file to the variant whose model it measured (by sha256, else by path)."""
    from toolkit.artifacts import sha256_file

    hashes = {sha256_file(v.model_path): v for v in variants}
    paths = {str(v.model_path.resolve()): v for v in variants}
    for bench_path in bench_paths:
        record = read_json(Path(bench_path), "bench")
        sha, path = model_of(record)
        owner = hashes.get(sha) if sha else None
        owner = owner or (paths.get(str(Path(path).resolve())) if path else None)
        if owner is None:
            raise BadInput(f"--bench {bench_path}: it measured a model that is none of the variants "
                           f"({path or sha or 'unnamed'})")
        add_bench(owner, measurement(record, str(bench_path)))


def load_variants(artifacts=(), *, run=None, bench=()) -> list[Variant]:
    """Variants from artifact folders and/or a run folder, plus extra bench files."""
    variants = [from_artifact(Path(folder)) for folder in artifacts]
    if run is not None:
        variants += from_run(Path(run))
    if not variants:
        raise BadInput("give artifact folders or --run DIR (a finished `edgeward run`)")
    names = [v.name for v in variants]
    for variant in variants:  # two folders with one name (a/int8, b/int8): name them by their parent too
        if names.count(variant.name) > 1:
            variant.name = f"{variant.model_path.parent.parent.name}/{variant.name}"
    attach_benches(variants, bench)
    return variants
