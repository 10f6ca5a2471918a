"""Accuracy-gated auto quantization: the smallest (or fastest) model that still answers like the original.

Users pick a mode, find that "static int8 gives very bad results", and cannot tell which
layer broke. `auto_quantize` tries the modes that apply, from the smallest expected file
to the largest, validates each on DATA against the float model, and keeps the smallest
that passes the gates. For ONNX, when no full int8 mode passes, it runs the per-layer
pass on the static int8 try, keeps the worst nodes in float (mixed precision) and tries
again with 1, 2, 4, … of them excluded. All within a time budget.

The objective decides among the tries that pass: `size` (the default, issue 3's rule) keeps
the smallest; `latency` measures each passing try's p50 (1 thread, batch 1, the data's first
example, LATENCY_RUNS runs after a warm-up) right after the try, then, once the tries are
done, times all of them again taking turns (LATENCY_ROUNDS rounds), so that load from other
jobs hits them alike, and keeps the fastest, taking the smallest of those within
LATENCY_TIE of the fastest. With `latency` every mode is tried, since a larger
model can be the faster one (int4 weights are smallest but dequantized at run time).

Both formats: when the model can become ONNX and TFLite (a PyTorch or builtin source, a
Hugging Face folder, or, asked with `formats`, an ONNX model that toolkit/export can rebuild
as torch), the float model is exported to each format under `float-<format>/` and the modes of
both are tried; the table shows each try's format, and the smallest (or fastest) passing model
of either format is kept. A model file given as .onnx or .tflite is searched in its own format
unless `formats` says otherwise. Mixed precision (worst layers kept float) runs for either format.

Hardware: the chosen mode is checked against the CPU that will run it (the device profile's
`cpu_int8_instructions`, or this host's flags): int8 without int8 dot-product instructions
warns that it may be no faster than float (`toolkit.quantize.int8_hardware`); the facts go into
the result and the manifest (`auto.int8_hardware`).

Each try is judged by the validate stage itself (`toolkit.validate.validate`, the float model
as the reference, gates as given, SQNR off) and carries the validate stage's record in its
manifest under `validation`.

Whatever happens, OUT_DIR holds the best model so far (`model.*` + `manifest.json`),
every tried model under `tries/`, and the table of tries (`tries.json`, `tries.md`),
rewritten after each try, so Ctrl-C or a spent budget still leaves a usable result.

This module holds the entry point and the search loop; auto_formats.py opens each format's
float model and orders the tries, auto_state.py runs, judges, times and saves them,
auto_mixed.py is the mixed-precision fallback and auto_tries.py the table of tries.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from toolkit.common.units import human_bytes
from toolkit.errors import BadInput, EdgewardWarning, missing_library
from toolkit.quantize.auto_formats import (
    EXPECTED_RATIO,
    FormatSide,
    float_models,
    given_model_file,
    search_plan,
)
from toolkit.quantize.auto_mixed import MIXED_STEPS, mixed_precision
from toolkit.quantize.auto_state import LATENCY_ROUNDS, LATENCY_RUNS, LATENCY_TIE, LATENCY_WARMUP, SearchState
from toolkit.quantize.auto_tries import Try, gate_text, table_markdown, table_text

__all__ = ["AutoResult", "Try", "auto_quantize", "table_text", "table_markdown", "EXPECTED_RATIO", "MIXED_STEPS",
           "OBJECTIVES", "DEFAULT_AGREEMENT_WITHOUT_LABELS", "LATENCY_WARMUP", "LATENCY_RUNS", "LATENCY_ROUNDS",
           "LATENCY_TIE"]


DEFAULT_AGREEMENT_WITHOUT_LABELS = 0.99


OBJECTIVES = ("size", "latency")


@dataclass
class AutoResult:
    out_dir: Path
    model_path: Path | None  # the chosen (or best so far) model in out_dir
    mode: str | None  # what the chosen try did, e.g. "static-int8" or "static-int8+2 float"
    passed: bool
    tries: list[Try]
    chosen: int | None  # index of the chosen try
    format: str
    float_size_bytes: int
    reference_accuracy: float | None
    gates: dict
    budget_s: float
    seconds: float
    stopped: str  # why it stopped: "passed", "all modes tried", "budget spent"
    objective: str = "size"
    formats: list[str] = field(default_factory=list)  # the formats searched
    float_sizes: dict = field(default_factory=dict)  # format -> float model bytes
    float_p50_ms: dict = field(default_factory=dict)  # format -> float p50 (objective latency)
    int8_hardware: dict | None = None  # the chosen mode against the CPU that runs it

    def as_dict(self) -> dict:
        data = asdict(self)
        data["out_dir"] = str(self.out_dir)
        data["model_path"] = str(self.model_path) if self.model_path else None
        data["tries"] = [{**asdict(t), "label": t.label} for t in self.tries]
        return data

    to_dict = as_dict

    def failure_line(self) -> str:
        if self.passed:
            return ""
        tried = ", ".join(t.label for t in self.tries) or "nothing"
        return (f"no quantized model passed the gates ({gate_text(self.gates)}); tried {tried}; "
                f"the table is in {self.out_dir}/tries.md")

    def summary(self) -> str:
        lines = [table_text(self.tries, self.chosen, self.reference_accuracy, self.float_size_bytes,
                            self.float_sizes, self.float_p50_ms)]
        if self.passed and self.chosen is not None:
            best = self.tries[self.chosen]
            speed = f", p50 {best.p50_ms:.2f} ms" if best.p50_ms is not None else ""
            where = f" ({best.format})" if len(self.formats) > 1 else ""
            lines.append(f"chosen ({'fastest' if self.objective == 'latency' else 'smallest'}): {best.label}{where}, "
                         f"{human_bytes(best.size_bytes)} ({best.size_ratio:.2f}x of float){speed}, "
                         f"{gate_text(self.gates)}: passed -> {self.model_path}")
            if self.float_p50_ms.get(best.format) is not None and best.p50_ms is not None:
                lines.append(f"float {best.format} p50 {self.float_p50_ms[best.format]:.2f} ms: "
                             f"the chosen model runs at {self.float_p50_ms[best.format] / best.p50_ms:.2f}x its speed")
        else:
            saved = f"; best so far saved in {self.model_path}" if self.model_path else ""
            lines.append(f"nothing passed ({gate_text(self.gates)}, stopped: {self.stopped}){saved}")
        return "\n".join(lines)


def auto_quantize(
    model,
    out_dir,
    *,
    data,
    max_drop: float | None = 1.0,
    min_agreement: float | None = None,
    budget_s: float = 300.0,
    calibration=None,
    force: bool = False,
    objective: str = "size",
    formats: list[str] | tuple[str, ...] | None = None,
    device: str | None = None,
    workers: int = 1,
    executor: str = "local",
    address: str | None = None,
) -> AutoResult:
    """Try the modes that apply to MODEL, smallest first; keep the smallest (or fastest) that passes on DATA.

    `data`: labelled evaluation data (spec or Dataset); without labels, argmax agreement
    (default 0.99) is the gate. `calibration`: data for the static modes (default: DATA,
    which the table notes). Returns the AutoResult; `passed` False when nothing passed
    (the CLI turns that into exit 1). `objective`: "size" keeps the smallest passing try,
    "latency" the fastest (p50, 1 thread, batch 1; near-ties go to the smaller).
    `formats`: the formats to search (default: both for a source, the file's own for a model
    file). `device`: the device profile whose CPU the int8 check uses (default: this host).
    `workers`, `executor`, `address`: shard each try's validation (see toolkit.validate.validate);
    the same figures, so the same choice, as one process.
    """
    started = time.perf_counter()
    _check_arguments(max_drop, min_agreement, objective, budget_s, formats, device)
    from toolkit.validate.shards import check_sharding

    check_sharding(workers, executor, address)  # bad options here: inside a try they would only fail that try
    out_dir, sides = _open_sides(model, out_dir, data, calibration, formats, force)
    first = next(iter(sides.values()))
    gates = {"max_drop": max_drop if first.dataset.labels is not None else None, "min_agreement": min_agreement}
    if first.dataset.labels is None and min_agreement is None:
        gates["min_agreement"] = DEFAULT_AGREEMENT_WITHOUT_LABELS
        warnings.warn(f"{first.dataset.name}: no labels, so the gate is argmax agreement >= "
                      f"{DEFAULT_AGREEMENT_WITHOUT_LABELS}", EdgewardWarning, stacklevel=2)
    state = SearchState(out_dir, sides, gates, objective,
                        shards={"workers": workers, "executor": executor, "address": address})
    searching = time.perf_counter()  # the budget is for the search: exporting the float models is not counted

    with _ray_session(executor, address, workers):  # one cluster for every try's shards
        stopped = _search(state, sides, objective, searching, budget_s)
    if objective == "latency":
        state.retime_passing()
    best = state.best()
    passed = bool(best and best.passed and best.smaller)
    if passed:
        state.check_hardware(best, device)
    chosen_format = best.format if best else first.fmt
    return AutoResult(
        out_dir=out_dir.absolute(), model_path=state.saved_path, mode=best.label if best else None,
        passed=passed, tries=state.tries, chosen=best.index if best else None, format=chosen_format,
        float_size_bytes=sides[chosen_format].float_size, reference_accuracy=state.reference_accuracy,
        gates=gates, budget_s=budget_s, seconds=round(time.perf_counter() - started, 3), stopped=stopped,
        objective=objective, formats=list(sides), float_sizes={f: s.float_size for f, s in sides.items()},
        float_p50_ms=state.float_p50_ms, int8_hardware=state.int8_hardware,
    )


def _check_arguments(max_drop, min_agreement, objective, budget_s, formats, device) -> None:
    """Refuse bad arguments before any work."""
    from toolkit.quantize.modes import FORMATS
    from toolkit.validate import check_gates

    check_gates(max_drop, min_agreement, None)
    if objective not in OBJECTIVES:
        raise BadInput(f"objective {objective!r}: use one of {', '.join(OBJECTIVES)}")
    if budget_s is None or not budget_s > 0:
        raise BadInput(f"--budget {budget_s}: give a positive number of seconds")
    unknown = [name for name in formats or () if name not in FORMATS]
    if unknown or (formats is not None and not formats):
        raise BadInput(f"--formats {','.join(formats or [])}: give onnx, tflite or onnx,tflite")
    if device:
        from toolkit.devices.profiles import get_profile

        get_profile(device)  # an unknown device is refused before any work


@contextmanager
def _ray_session(executor: str, address: str | None, workers: int):
    """With executor "ray", join (or start) the cluster once for the whole search, so each try's
    sharded validation reuses it and a cluster that cannot be reached is BadInput before any try."""
    if executor != "ray":
        yield
        return
    try:
        import ray
    except ImportError:
        raise missing_library("ray", extra="ray") from None
    if ray.is_initialized():
        yield
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no network at run time
    options = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    try:
        ray.init(address=address, **options) if address else ray.init(num_cpus=workers, **options)
    except (ConnectionError, ValueError, RuntimeError) as error:
        raise BadInput(f"cannot join the Ray cluster at {address}: {error}") from None
    try:
        yield
    finally:
        ray.shutdown()


def _open_sides(model, out_dir, data, calibration, formats, force) -> tuple[Path, dict]:
    """The float model of each format (exported where needed) opened with the data; OUT_DIR made afresh."""
    from toolkit.artifacts import check_writable

    out_dir = check_writable(Path(out_dir), force)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    model_file = given_model_file(model)
    if model_file is not None:
        from toolkit.quantize import refuse_quantized

        refuse_quantized(model_file)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-float-", dir=out_dir.parent))
    try:  # exports and data checks before anything in out_dir is touched
        floats = float_models(model, model_file, list(formats) if formats else None, staging, data)
        sides = {fmt: FormatSide.open(fmt, path, data, calibration) for fmt, path in floats.items()}
        if out_dir.exists():
            shutil.rmtree(out_dir)  # check_writable has refused this unless --force
        (out_dir / "tries").mkdir(parents=True)
        for side in sides.values():
            if staging in side.model_path.parents:
                shutil.move(str(side.model_path.parent), out_dir / side.model_path.parent.name)
                side.model_path = out_dir / side.model_path.parent.name / side.model_path.name
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir, sides


def _search(state: SearchState, sides: dict, objective: str, searching: float, budget_s: float) -> str:
    """Run the tries in plan order (with the mixed-precision fallback); returns why the search stopped."""
    stopped = "all modes tried"
    passed_ratio = None  # the smallest size ratio that passed so far
    for fmt, mode in search_plan(sides):
        ratio = EXPECTED_RATIO.get(mode.name, 1.0)
        if objective == "size" and passed_ratio is not None and ratio >= passed_ratio:
            break  # every mode left is expected to be larger than what passed
        if state.tries and time.perf_counter() - searching >= budget_s:  # the first try always runs
            stopped = "budget spent"
            break
        attempt = state.run_try(fmt, mode.name, [], mode.needs_calibration)
        if attempt.passed and attempt.smaller:
            passed_ratio = min(passed_ratio or 1.0, attempt.size_ratio)
        if mode.name == sides[fmt].last_int8 and passed_ratio is None:
            mixed = mixed_precision(state, fmt, searching, budget_s)
            if mixed is not None:
                passed_ratio = min(passed_ratio or 1.0, mixed.size_ratio)
    if passed_ratio is not None and stopped != "budget spent":
        stopped = "passed"
    return stopped
