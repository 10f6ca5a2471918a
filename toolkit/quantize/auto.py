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

Each try is judged by the validate stage itself (`toolkit.validate.validate`, the float model
as the reference, gates as given, SQNR off) and carries the validate stage's record in its
manifest under `validation`.

Whatever happens, OUT_DIR holds the best model so far (`model.*` + `manifest.json`),
every tried model under `tries/`, and the table of tries (`tries.json`, `tries.md`),
rewritten after each try, so Ctrl-C or a spent budget still leaves a usable result.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from toolkit.common.units import human_bytes
from toolkit.errors import BadInput, EdgewardError, EdgewardWarning

logger = logging.getLogger(__name__)

# Expected size of each mode's model against float32: the order in which modes are tried.
EXPECTED_RATIO = {
    "int4-weight": 0.16, "weight-int4": 0.16,
    "dynamic-int8-int4emb": 0.2,  # ~0.27 without embedding tables
    "dynamic-int8": 0.27, "static-int8": 0.27, "weight-int8": 0.27,
    "fp16": 0.5,
}
MIXED_STEPS = (1, 2, 4, 8, 16)  # worst nodes kept in float, per mixed-precision retry
DEFAULT_AGREEMENT_WITHOUT_LABELS = 0.99
OBJECTIVES = ("size", "latency")
LATENCY_WARMUP, LATENCY_RUNS = 5, 30
LATENCY_ROUNDS = 10  # the final, interleaved timing: LATENCY_ROUNDS x LATENCY_RUNS // LATENCY_ROUNDS runs each
LATENCY_TIE = 0.03  # p50s within 3% of the fastest count as a tie, broken by size


@dataclass
class Try:
    index: int
    mode: str
    excluded: list[str] = field(default_factory=list)
    folder: str | None = None  # relative to out_dir
    size_bytes: int | None = None
    size_ratio: float | None = None
    accuracy: float | None = None  # fraction, first labelled output
    drop: float | None = None  # points
    agreement: float | None = None
    sqnr_db: float | None = None
    p50_ms: float | None = None  # measured for passing tries when the objective is latency
    passed: bool = False
    smaller: bool = False  # smaller than the float model (a try that is not cannot be chosen)
    seconds: float = 0.0
    error: str | None = None
    failed_gates: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.mode}+{len(self.excluded)} float" if self.excluded else self.mode


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
        return (f"no quantized model passed the gates ({_gate_text(self.gates)}); tried {tried}; "
                f"the table is in {self.out_dir}/tries.md")

    def summary(self) -> str:
        lines = [table_text(self.tries, self.chosen, self.reference_accuracy, self.float_size_bytes)]
        if self.passed and self.chosen is not None:
            best = self.tries[self.chosen]
            speed = f", p50 {best.p50_ms:.2f} ms" if best.p50_ms is not None else ""
            lines.append(f"chosen ({'fastest' if self.objective == 'latency' else 'smallest'}): {best.label}, "
                         f"{human_bytes(best.size_bytes)} ({best.size_ratio:.2f}x of float){speed}, "
                         f"{_gate_text(self.gates)}: passed -> {self.model_path}")
        else:
            saved = f"; best so far saved in {self.model_path}" if self.model_path else ""
            lines.append(f"nothing passed ({_gate_text(self.gates)}, stopped: {self.stopped}){saved}")
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
) -> AutoResult:
    """Try the modes that apply to MODEL, smallest first; keep the smallest (or fastest) that passes on DATA.

    `data`: labelled evaluation data (spec or Dataset); without labels, argmax agreement
    (default 0.99) is the gate. `calibration`: data for the static modes (default: DATA,
    which the table notes). Returns the AutoResult; `passed` False when nothing passed
    (the CLI turns that into exit 1). `objective`: "size" keeps the smallest passing try,
    "latency" the fastest (p50, 1 thread, batch 1; near-ties go to the smaller).
    """
    from toolkit.artifacts import check_writable, resolve_model
    from toolkit.data import Dataset, load_data
    from toolkit.quantize import model_bytes, model_format, refuse_quantized
    from toolkit.quantize.modes import modes_for
    from toolkit.runtime import open_model
    from toolkit.validate import check_gates
    from toolkit.validate.sides import prepare_feeds

    started = time.perf_counter()
    check_gates(max_drop, min_agreement, None)
    if objective not in OBJECTIVES:
        raise BadInput(f"objective {objective!r}: use one of {', '.join(OBJECTIVES)}")
    if budget_s is None or not budget_s > 0:
        raise BadInput(f"--budget {budget_s}: give a positive number of seconds")
    model_path = resolve_model(model)
    fmt = model_format(model_path)
    out_dir = check_writable(Path(out_dir), force)
    refuse_quantized(model_path)
    runner = open_model(model_path)
    names = [spec.name for spec in runner.inputs]
    dataset = data if isinstance(data, Dataset) else load_data(data, names)
    dataset = dataset.for_model(runner.inputs)  # each input's example axis (state [2, batch, 128]: 1)
    prepare_feeds(dataset, runner, "data")  # data that does not fit the model is refused before any folder is made
    if dataset.labels is None and min_agreement is None:
        min_agreement = DEFAULT_AGREEMENT_WITHOUT_LABELS
        warnings.warn(f"{dataset.name}: no labels, so the gate is argmax agreement >= {min_agreement}",
                      EdgewardWarning, stacklevel=2)
    gates = {"max_drop": max_drop if dataset.labels is not None else None, "min_agreement": min_agreement}
    if calibration is None and any(mode.needs_calibration for mode in modes_for(fmt)):
        calibration = dataset
        logger.info("calibrating the static modes on the evaluation data (%s); pass a calibration set to keep "
                    "them apart", dataset.name)

    if out_dir.exists():
        shutil.rmtree(out_dir)  # check_writable has refused this unless --force
    (out_dir / "tries").mkdir(parents=True)
    state = _State(out_dir, model_path, fmt, model_bytes(model_path), dataset, runner, gates, calibration, objective)

    stopped = "all modes tried"
    plan = sorted(modes_for(fmt), key=lambda mode: EXPECTED_RATIO.get(mode.name, 1.0))
    last_int8 = _last_int8(plan)
    passed_ratio = None  # the smallest size ratio that passed so far
    for mode in plan:
        ratio = EXPECTED_RATIO.get(mode.name, 1.0)
        if objective == "size" and passed_ratio is not None and ratio >= passed_ratio:
            break  # every mode left is expected to be larger than what passed
        if state.tries and time.perf_counter() - started >= budget_s:  # the first try always runs
            stopped = "budget spent"
            break
        attempt = state.run_try(mode.name, [], mode.needs_calibration)
        if attempt.passed and attempt.smaller:
            passed_ratio = min(passed_ratio or 1.0, attempt.size_ratio)
        if fmt == "onnx" and mode.name == last_int8 and passed_ratio is None:
            mixed = _mixed_precision(state, started, budget_s)
            if mixed is not None:
                passed_ratio = mixed.size_ratio
    if objective == "latency":
        state.retime_passing()
    if passed_ratio is not None and stopped != "budget spent":
        stopped = "passed"
    best = state.best()
    return AutoResult(
        out_dir=out_dir.absolute(), model_path=state.saved_path, mode=best.label if best else None,
        passed=bool(best and best.passed and best.smaller), tries=state.tries,
        chosen=best.index if best else None, format=fmt, float_size_bytes=state.float_size,
        reference_accuracy=state.reference_accuracy, gates=gates, budget_s=budget_s,
        seconds=round(time.perf_counter() - started, 3), stopped=stopped, objective=objective,
    )


def _last_int8(plan) -> str | None:
    names = [mode.name for mode in plan if EXPECTED_RATIO.get(mode.name) == EXPECTED_RATIO["static-int8"]]
    return names[-1] if names else None


def _mixed_precision(state, started: float, budget_s: float) -> Try | None:
    """Keep the worst nodes of the static int8 try in float, more each time; the first that passes."""
    from toolkit.validate.per_layer import per_layer_error

    base = next((t for t in state.tries if t.mode == "static-int8" and not t.error and not t.excluded), None)
    if base is None or time.perf_counter() - started >= budget_s:
        return None
    result = per_layer_error(state.out_dir / base.folder, state.model_path, state.dataset, top=max(MIXED_STEPS))
    ranked = [layer.nodes for layer in result.worst]
    logger.info("per-layer: worst nodes %s",
                ", ".join(f"{layer.node} ({layer.local_sqnr_db} dB)" for layer in result.worst[:5]))
    tried_counts = set()
    for count in MIXED_STEPS:
        count = min(count, len(ranked))
        if count == 0 or count in tried_counts:
            break
        tried_counts.add(count)
        if time.perf_counter() - started >= budget_s:
            return None
        excluded = list(dict.fromkeys(name for chain in ranked[:count] for name in chain))
        attempt = state.run_try("static-int8", excluded, True)
        if attempt.passed and attempt.smaller:
            return attempt
    return None


class _State:
    """The tries so far, and the best model saved into out_dir after each of them."""

    def __init__(self, out_dir, model_path, fmt, float_size, dataset, reference, gates, calibration,
                 objective="size"):
        self.out_dir, self.model_path, self.fmt, self.float_size = out_dir, model_path, fmt, float_size
        self.objective = objective
        self.dataset, self.reference = dataset, reference  # reference: the float model's open runner
        self.gates, self.calibration = gates, calibration
        self.tries: list[Try] = []
        self.saved_index: int | None = None
        self.saved_path: Path | None = None
        self.reference_accuracy: float | None = None

    def run_try(self, mode: str, excluded: list[str], calibrated: bool) -> Try:
        from toolkit.quantize import quantize

        attempt = Try(index=len(self.tries), mode=mode, excluded=excluded)
        attempt.folder = f"tries/{attempt.index + 1:02d}-{mode}" + (f"-mixed{len(excluded)}" if excluded else "")
        tick = time.perf_counter()
        try:
            result = quantize(self.model_path, mode, self.out_dir / attempt.folder, calibration=self.calibration if calibrated else None,
                              exclude_nodes=excluded, force=True)
            attempt.size_bytes = result.size_bytes
            attempt.size_ratio = round(result.size_bytes / self.float_size, 4)
            attempt.smaller = result.size_bytes < self.float_size
            self._judge(attempt, result.model_path)
            if self.objective == "latency" and attempt.passed and attempt.smaller:
                attempt.p50_ms = self._p50(result.model_path)
        except EdgewardError as error:
            attempt.error = str(error)
        attempt.seconds = round(time.perf_counter() - tick, 3)
        self.tries.append(attempt)
        speed = f", p50 {attempt.p50_ms:.2f} ms" if attempt.p50_ms is not None else ""
        logger.info("try %d: %s: %s", attempt.index + 1, attempt.label, attempt.error or
                    f"{human_bytes(attempt.size_bytes)}, {_acc(attempt)}{speed}, {'passed' if attempt.passed else 'failed'}")
        self._save()
        return attempt

    def _judge(self, attempt: Try, model_path: Path) -> None:
        """The validate stage on the try (float model as reference); its record goes into the try's manifest."""
        from toolkit.validate import validate

        report = validate(model_path, self.reference, self.dataset, max_drop=self.gates["max_drop"],
                          min_agreement=self.gates["min_agreement"], min_sqnr=None, record=True)
        first = next((m for m in report.outputs if m.candidate_accuracy is not None),
                     next((m for m in report.outputs if m.agreement is not None), report.outputs[0]))
        if self.reference_accuracy is None:
            self.reference_accuracy = _round(first.reference_accuracy, 12)
        attempt.accuracy, attempt.drop = _round(first.candidate_accuracy, 12), _round(first.drop)
        attempt.agreement, attempt.sqnr_db = _round(first.agreement, 6), _round(first.sqnr_db)
        attempt.passed = report.passed
        attempt.failed_gates = [gate.describe() for gate in report.failed_gates()]

    def _timer(self, model_path: Path):
        """A warmed-up runner (1 thread) and its feed: the data's first example (batch 1)."""
        from toolkit.common.batching import batch_axes, fixed_batch, slice_examples
        from toolkit.common.quiet import quiet
        from toolkit.runtime import open_model
        from toolkit.validate.sides import prepare_feeds

        with quiet():
            runner = open_model(model_path, threads=1)
        feeds = prepare_feeds(self.dataset, runner, "data")
        # Each input's example axis from the model's signature with the data (silero-vad's
        # state [2, batch, 128] fixes 2 on axis 0, which is not a batch size); 0-d inputs go whole.
        batch = fixed_batch(runner.inputs, feeds) or 1
        feeds = slice_examples(feeds, batch_axes(feeds, runner.inputs), 0, batch)
        for _ in range(LATENCY_WARMUP):
            runner.run(feeds)
        return runner, feeds

    def _p50(self, model_path: Path) -> float:
        """Median latency of one example (1 thread, batch 1), in ms, after a warm-up."""
        runner, feeds = self._timer(model_path)
        return round(float(np.median(_timed_runs(runner, feeds, LATENCY_RUNS))), 4)

    def retime_passing(self) -> None:
        """Time every passing try again, taking turns, and re-pick: fair under a varying load."""
        timed = [t for t in self.tries if t.p50_ms is not None and not t.error]
        if len(timed) < 2:
            return
        timers = {t.index: self._timer(self.out_dir / t.folder / f"model.{self.fmt}") for t in timed}
        samples: dict[int, list[float]] = {index: [] for index in timers}
        for _ in range(LATENCY_ROUNDS):
            for index, (runner, feeds) in timers.items():
                samples[index] += _timed_runs(runner, feeds, max(1, LATENCY_RUNS // LATENCY_ROUNDS))
        for attempt in timed:
            attempt.p50_ms = round(float(np.median(samples[attempt.index])), 4)
        logger.info("interleaved p50: %s", ", ".join(f"{t.label} {t.p50_ms:.2f} ms" for t in timed))
        self.saved_index = None  # the saved manifest records the old p50: write it again
        self._save()

    def best(self) -> Try | None:
        """The passing try (smaller than float) the objective prefers; else the most accurate one that ran.

        size: the smallest. latency: the fastest p50, and of the tries within LATENCY_TIE of it,
        the smallest.
        """
        ran = [t for t in self.tries if not t.error]
        passing = [t for t in ran if t.passed and t.smaller]
        timed = [t for t in passing if t.p50_ms is not None]
        if self.objective == "latency" and timed:
            fastest = min(t.p50_ms for t in timed)
            near = [t for t in timed if t.p50_ms <= fastest * (1 + LATENCY_TIE)]
            return min(near, key=lambda t: (t.size_bytes, t.p50_ms, t.index))
        if passing:
            return min(passing, key=lambda t: (t.size_bytes, t.index))
        if not ran:
            return None
        return max(ran, key=lambda t: (t.accuracy if t.accuracy is not None else -1.0,
                                       t.agreement or 0.0, -(t.size_bytes or 0)))

    def _save(self) -> None:
        from toolkit.artifacts import atomic_write_json, atomic_write_text

        rows = [{**asdict(t), "label": t.label} for t in self.tries]
        best = self.best()
        if best is not None and best.index != self.saved_index:
            self._save_model(best)
        atomic_write_json(self.out_dir / "tries.json", {
            "model": str(self.model_path), "format": self.fmt, "float_size_bytes": self.float_size,
            "reference_accuracy": self.reference_accuracy, "gates": self.gates, "data": self.dataset.name,
            "chosen": self.saved_index, "passed": bool(best and best.passed and best.smaller),
            "objective": self.objective, "tries": rows})
        atomic_write_text(self.out_dir / "tries.md", "# Auto quantization\n\n" + table_markdown(
            self.tries, self.saved_index, self.reference_accuracy, self.float_size, self.gates, self.objective))

    def _save_model(self, best: Try) -> None:
        from toolkit.artifacts import atomic_copy, read_manifest, write_manifest

        folder = self.out_dir / best.folder
        for item in folder.iterdir():
            if item.is_file() and item.name != "manifest.json":
                atomic_copy(item, self.out_dir / item.name)
        stale = self.out_dir / f"model.{'tflite' if self.fmt == 'onnx' else 'onnx'}"
        if stale.exists():
            os.unlink(stale)
        manifest = read_manifest(folder)
        manifest["auto"] = {
            "chosen": best.label, "try": best.folder, "passed": bool(best.passed and best.smaller),
            "objective": self.objective, "p50_ms": best.p50_ms, "gates": self.gates, "data": self.dataset.name, "tries": "tries.json",
        }
        manifest["options"] = {**manifest.get("options", {}), "auto": True}
        write_manifest(self.out_dir, manifest)
        self.saved_index, self.saved_path = best.index, (self.out_dir / f"model.{self.fmt}").absolute()


def _timed_runs(runner, feeds, runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        tick = time.perf_counter()
        runner.run(feeds)
        samples.append((time.perf_counter() - tick) * 1000)
    return samples


def _round(value, digits: int = 4):
    """A figure for the table: rounded, and None where there is none (JSON has no NaN or Infinity)."""
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def _acc(t: Try) -> str:
    if t.accuracy is not None:
        return f"accuracy {t.accuracy:.2%} (drop {t.drop:.2f})"
    return f"agreement {t.agreement}"


def _gate_text(gates: dict) -> str:
    parts = []
    if gates.get("max_drop") is not None:
        parts.append(f"drop <= {gates['max_drop']:g} points")
    if gates.get("min_agreement") is not None:
        parts.append(f"agreement >= {gates['min_agreement']:g}")
    return " and ".join(parts) or "no gate"


def _rows(tries, chosen):
    for t in tries:
        yield [
            str(t.index + 1), t.label, human_bytes(t.size_bytes), "–" if t.size_ratio is None else f"{t.size_ratio:.2f}x",
            "–" if t.accuracy is None else f"{t.accuracy:.2%}", "–" if t.drop is None else f"{t.drop:.2f}",
            "–" if t.agreement is None else f"{t.agreement:.4f}",
            "–" if t.p50_ms is None else f"{t.p50_ms:.2f} ms",
            "error" if t.error else ("yes" if t.passed else "no"),
            ("chosen" if t.index == chosen else "") + (" not smaller than float" if not t.error and not t.smaller else "")
            + (f" {t.error}" if t.error else ""),
        ]


HEADER = ["#", "mode", "size", "ratio", "accuracy", "drop", "agreement", "p50", "passed", "note"]


def table_text(tries, chosen, reference_accuracy, float_size) -> str:
    rows = [HEADER, *_rows(tries, chosen)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER) - 1)]
    lines = [f"float: {human_bytes(float_size)}" + (f", accuracy {reference_accuracy:.2%}" if reference_accuracy is not None else "")]
    for row in rows:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
    return "\n".join(line.rstrip() for line in lines)


def table_markdown(tries, chosen, reference_accuracy, float_size, gates, objective: str = "size") -> str:
    rule = ("fastest passing (p50, 1 thread, batch 1; within 3% the smaller)" if objective == "latency"
            else "smallest passing")
    lines = [f"Float model: {human_bytes(float_size)}"
             + (f", accuracy {reference_accuracy:.2%}" if reference_accuracy is not None else "")
             + f". Gates: {_gate_text(gates)}. Objective: {objective} ({rule}).", "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in _rows(tries, chosen):
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in row) + " |")
    excluded = [t for t in tries if t.excluded]
    if excluded:
        lines += ["", "Nodes kept in float:"]
        lines += [f"- try {t.index + 1}: {', '.join(t.excluded)}" for t in excluded]
    return "\n".join(lines) + "\n"
