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
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
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
    format: str = "onnx"
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
        return (f"no quantized model passed the gates ({_gate_text(self.gates)}); tried {tried}; "
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
                         f"{_gate_text(self.gates)}: passed -> {self.model_path}")
            if self.float_p50_ms.get(best.format) is not None and best.p50_ms is not None:
                lines.append(f"float {best.format} p50 {self.float_p50_ms[best.format]:.2f} ms: "
                             f"the chosen model runs at {self.float_p50_ms[best.format] / best.p50_ms:.2f}x its speed")
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
    formats: list[str] | tuple[str, ...] | None = None,
    device: str | None = None,
) -> AutoResult:
    """Try the modes that apply to MODEL, smallest first; keep the smallest (or fastest) that passes on DATA.

    `data`: labelled evaluation data (spec or Dataset); without labels, argmax agreement
    (default 0.99) is the gate. `calibration`: data for the static modes (default: DATA,
    which the table notes). Returns the AutoResult; `passed` False when nothing passed
    (the CLI turns that into exit 1). `objective`: "size" keeps the smallest passing try,
    "latency" the fastest (p50, 1 thread, batch 1; near-ties go to the smaller).
    `formats`: the formats to search (default: both for a source, the file's own for a model
    file). `device`: the device profile whose CPU the int8 check uses (default: this host).
    """
    from toolkit.artifacts import check_writable
    from toolkit.quantize.modes import FORMATS

    started = time.perf_counter()
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
    out_dir = check_writable(Path(out_dir), force)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    model_file = _model_file(model)
    if model_file is not None:
        from toolkit.quantize import refuse_quantized

        refuse_quantized(model_file)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-float-", dir=out_dir.parent))
    try:  # exports and data checks before anything in out_dir is touched
        floats = _float_models(model, model_file, list(formats) if formats else None, staging, data)
        sides = {fmt: _Side.open(fmt, path, data, calibration) for fmt, path in floats.items()}
        if out_dir.exists():
            shutil.rmtree(out_dir)  # check_writable has refused this unless --force
        (out_dir / "tries").mkdir(parents=True)
        for side in sides.values():
            if staging in side.model_path.parents:
                shutil.move(str(side.model_path.parent), out_dir / side.model_path.parent.name)
                side.model_path = out_dir / side.model_path.parent.name / side.model_path.name
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    first = next(iter(sides.values()))
    gates = {"max_drop": max_drop if first.dataset.labels is not None else None, "min_agreement": min_agreement}
    if first.dataset.labels is None and min_agreement is None:
        gates["min_agreement"] = DEFAULT_AGREEMENT_WITHOUT_LABELS
        warnings.warn(f"{first.dataset.name}: no labels, so the gate is argmax agreement >= "
                      f"{DEFAULT_AGREEMENT_WITHOUT_LABELS}", EdgewardWarning, stacklevel=2)
    state = _State(out_dir, sides, gates, objective)
    searching = time.perf_counter()  # the budget is for the search: exporting the float models is not counted

    stopped = "all modes tried"
    passed_ratio = None  # the smallest size ratio that passed so far
    for fmt, mode in _plan(sides):
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
            mixed = _mixed_precision(state, fmt, searching, budget_s)
            if mixed is not None:
                passed_ratio = min(passed_ratio or 1.0, mixed.size_ratio)
    if objective == "latency":
        state.retime_passing()
    if passed_ratio is not None and stopped != "budget spent":
        stopped = "passed"
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


def _model_file(model) -> Path | None:
    """The .onnx/.tflite file MODEL names (a file or a folder holding one); None for a source spec."""
    from toolkit.artifacts import resolve_model
    from toolkit.quantize import MODEL_SUFFIXES

    path = Path(str(model))
    if path.is_file():
        return resolve_model(path) if path.suffix.lower() in MODEL_SUFFIXES else None
    if path.is_dir():  # an artifact folder, or any folder holding model.onnx/.tflite (Optimum's output)
        try:
            found = resolve_model(path)
        except BadInput:
            return None  # a Hugging Face folder or another source
        return found if found.suffix.lower() in MODEL_SUFFIXES else None
    return None


def _float_models(model, model_file: Path | None, formats: list[str] | None, out_dir: Path, data) -> dict:
    """format -> float model: the given file, and exports (under out_dir/float-<format>) where needed.

    A source spec is exported to every format asked (default both); one that cannot become a
    format is skipped when the default was asked, refused (Unsupported) when it was named.
    """
    from toolkit.errors import Unsupported
    from toolkit.export import export
    from toolkit.quantize import model_format

    floats: dict[str, Path] = {}
    if model_file is not None:
        own = model_format(model_file)
        wanted = formats or [own]
        if "onnx" in wanted and own == "tflite":
            raise Unsupported(f"{model_file.name}: a TFLite model cannot be converted to ONNX here; "
                              "use --formats tflite")
        floats[own] = model_file
    else:
        wanted = formats or ["onnx", "tflite"]
    failure = None
    for fmt in wanted:
        if fmt in floats:
            continue
        source = model_file if model_file is not None else model
        try:
            result = export(str(source), fmt, out_dir / f"float-{fmt}", force=True, data=_spec_only(data))
        except EdgewardError as error:
            if formats is not None:
                raise
            failure = error
            logger.info("auto: %s cannot become %s (%s)", source, fmt, error)
            continue
        floats[fmt] = Path(result.model_path)
    if not floats:
        raise failure or Unsupported(f"{model}: could not be exported to {' or '.join(wanted)}")
    return {fmt: floats[fmt] for fmt in ("onnx", "tflite") if fmt in floats and fmt in wanted}


def _spec_only(data):
    from toolkit.data import Dataset

    return None if isinstance(data, Dataset) else data


def _plan(sides: dict) -> list:
    """(format, mode) pairs in order of expected size; within a size, ONNX first."""
    pairs = [(fmt, mode) for fmt, side in sides.items() for mode in side.modes]
    return sorted(pairs, key=lambda pair: EXPECTED_RATIO.get(pair[1].name, 1.0))


def _last_int8(plan) -> str | None:
    names = [mode.name for mode in plan if EXPECTED_RATIO.get(mode.name) == EXPECTED_RATIO["static-int8"]]
    return names[-1] if names else None


@dataclass
class _Side:
    """One format's float model, its runner (the reference), the data fitted to it, and its modes."""

    fmt: str
    model_path: Path
    float_size: int
    reference: object
    dataset: object
    calibration: object
    modes: list
    last_int8: str | None

    @classmethod
    def open(cls, fmt: str, model_path: Path, data, calibration) -> _Side:
        from toolkit.data import Dataset, load_data
        from toolkit.quantize import model_bytes
        from toolkit.quantize.modes import modes_for
        from toolkit.runtime import open_model
        from toolkit.validate.sides import prepare_feeds

        runner = open_model(model_path)
        names = [spec.name for spec in runner.inputs]
        dataset = data if isinstance(data, Dataset) else load_data(data, names)
        dataset = dataset.for_model(runner.inputs)  # each input's example axis (state [2, batch, 128]: 1)
        prepare_feeds(dataset, runner, "data")  # data that does not fit the model is refused before any try
        modes = modes_for(fmt)
        if calibration is None and any(mode.needs_calibration for mode in modes):
            calibration = dataset
            logger.info("calibrating the static %s modes on the evaluation data (%s); pass a calibration set "
                        "to keep them apart", fmt, dataset.name)
        plan = sorted(modes, key=lambda mode: EXPECTED_RATIO.get(mode.name, 1.0))
        return cls(fmt, model_path, model_bytes(model_path), runner, dataset, calibration, plan, _last_int8(plan))


def _mixed_precision(state, fmt: str, started: float, budget_s: float) -> Try | None:
    """Keep the worst layers of FMT's static int8 try in float, more each time; the first that passes."""
    from toolkit.validate.per_layer import per_layer_error

    side = state.sides[fmt]
    base = next((t for t in state.tries if t.format == fmt and t.mode == "static-int8" and not t.error
                 and not t.excluded), None)
    if base is None or time.perf_counter() - started >= budget_s:
        return None
    try:
        result = per_layer_error(state.out_dir / base.folder, side.model_path, side.dataset, top=max(MIXED_STEPS))
    except EdgewardError as error:
        logger.info("per-layer error of %s failed (%s): no mixed precision", base.folder, error)
        return None
    ranked = [layer.nodes for layer in result.worst]
    if fmt == "tflite":  # ai-edge-quantizer recipes select layers by their output tensor names
        outputs = _tflite_node_outputs(side.model_path)
        ranked = [[tensor for node in chain for tensor in outputs.get(node, [])] for chain in ranked]
    logger.info("per-layer (%s): worst nodes %s", fmt,
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
        attempt = state.run_try(fmt, "static-int8", excluded, True)
        if attempt.passed and attempt.smaller:
            return attempt
    return None


def _tflite_node_outputs(model_path: Path) -> dict[str, list[str]]:
    """`OP#index` (the per-layer pass's node names) -> the op's output tensor names."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model_path))
    names = {d["index"]: d["name"] for d in interpreter.get_tensor_details()}
    return {f"{op['op_name']}#{op['index']}": [names[i] for i in op["outputs"] if i in names]
            for op in interpreter._get_ops_details()}  # the public API has no op list


class _State:
    """The tries so far, and the best model saved into out_dir after each of them."""

    def __init__(self, out_dir, sides: dict, gates, objective="size"):
        self.out_dir, self.sides, self.gates, self.objective = out_dir, sides, gates, objective
        self.tries: list[Try] = []
        self.saved_index: int | None = None
        self.saved_path: Path | None = None
        self.reference_accuracy: float | None = None
        self.float_p50_ms: dict[str, float] = {}
        self.int8_hardware: dict | None = None

    @property
    def float_size(self) -> int:
        return next(iter(self.sides.values())).float_size

    def run_try(self, fmt: str, mode: str, excluded: list[str], calibrated: bool) -> Try:
        from toolkit.quantize import quantize

        side = self.sides[fmt]
        attempt = Try(index=len(self.tries), mode=mode, excluded=excluded, format=fmt)
        where = f"{fmt}-" if len(self.sides) > 1 else ""
        attempt.folder = (f"tries/{attempt.index + 1:02d}-{where}{mode}"
                          + (f"-mixed{len(excluded)}" if excluded else ""))
        tick = time.perf_counter()
        try:
            result = quantize(side.model_path, mode, self.out_dir / attempt.folder,
                              calibration=side.calibration if calibrated else None, exclude_nodes=excluded, force=True)
            attempt.size_bytes = result.size_bytes
            attempt.size_ratio = round(result.size_bytes / side.float_size, 4)
            attempt.smaller = result.size_bytes < side.float_size
            self._judge(attempt, result.model_path)
            if self.objective == "latency" and attempt.passed and attempt.smaller:
                attempt.p50_ms = self._p50(result.model_path, side)
        except EdgewardError as error:
            attempt.error = str(error)
        attempt.seconds = round(time.perf_counter() - tick, 3)
        self.tries.append(attempt)
        speed = f", p50 {attempt.p50_ms:.2f} ms" if attempt.p50_ms is not None else ""
        logger.info("try %d: %s %s: %s", attempt.index + 1, fmt, attempt.label, attempt.error or
                    f"{human_bytes(attempt.size_bytes)}, {_acc(attempt)}{speed}, {'passed' if attempt.passed else 'failed'}")
        self._save()
        return attempt

    def _judge(self, attempt: Try, model_path: Path) -> None:
        """The validate stage on the try (its format's float model as reference); the record goes into its manifest."""
        from toolkit.validate import validate

        side = self.sides[attempt.format]
        report = validate(model_path, side.reference, side.dataset, max_drop=self.gates["max_drop"],
                          min_agreement=self.gates["min_agreement"], min_sqnr=None, record=True)
        first = next((m for m in report.outputs if m.candidate_accuracy is not None),
                     next((m for m in report.outputs if m.agreement is not None), report.outputs[0]))
        if self.reference_accuracy is None:
            self.reference_accuracy = _round(first.reference_accuracy, 12)
        attempt.accuracy, attempt.drop = _round(first.candidate_accuracy, 12), _round(first.drop)
        attempt.agreement, attempt.sqnr_db = _round(first.agreement, 6), _round(first.sqnr_db)
        attempt.passed = report.passed
        attempt.failed_gates = [gate.describe() for gate in report.failed_gates()]

    def _timer(self, model_path: Path, side: _Side):
        """A warmed-up runner (1 thread) and its feed: the data's first example (batch 1)."""
        from toolkit.common.batching import batch_axes, fixed_batch, slice_examples
        from toolkit.common.quiet import quiet
        from toolkit.runtime import open_model
        from toolkit.validate.sides import prepare_feeds

        with quiet():
            runner = open_model(model_path, threads=1)
        feeds = prepare_feeds(side.dataset, runner, "data")
        # Each input's example axis from the model's signature with the data (silero-vad's
        # state [2, batch, 128] fixes 2 on axis 0, which is not a batch size); 0-d inputs go whole.
        batch = fixed_batch(runner.inputs, feeds) or 1
        feeds = slice_examples(feeds, batch_axes(feeds, runner.inputs), 0, batch)
        for _ in range(LATENCY_WARMUP):
            runner.run(feeds)
        return runner, feeds

    def _p50(self, model_path: Path, side: _Side) -> float:
        """Median latency of one example (1 thread, batch 1), in ms, after a warm-up."""
        runner, feeds = self._timer(model_path, side)
        return round(float(np.median(_timed_runs(runner, feeds, LATENCY_RUNS))), 4)

    def retime_passing(self) -> None:
        """Time every passing try and the float models again, taking turns, and re-pick: fair under a varying load."""
        timed = [t for t in self.tries if t.p50_ms is not None and not t.error]
        if not timed:
            return
        timers = {t.index: self._timer(self.out_dir / t.folder / f"model.{t.format}", self.sides[t.format])
                  for t in timed}
        for fmt in {t.format for t in timed}:  # the float model: what int8 must beat on this CPU
            timers[f"float-{fmt}"] = self._timer(self.sides[fmt].model_path, self.sides[fmt])
        samples: dict = {key: [] for key in timers}
        for _ in range(LATENCY_ROUNDS):
            for key, (runner, feeds) in timers.items():
                samples[key] += _timed_runs(runner, feeds, max(1, LATENCY_RUNS // LATENCY_ROUNDS))
        for attempt in timed:
            attempt.p50_ms = round(float(np.median(samples[attempt.index])), 4)
        self.float_p50_ms = {key.split("-", 1)[1]: round(float(np.median(values)), 4)
                             for key, values in samples.items() if isinstance(key, str)}
        logger.info("interleaved p50: %s; float %s", ", ".join(f"{t.format} {t.label} {t.p50_ms:.2f} ms" for t in timed),
                    ", ".join(f"{fmt} {p50:.2f} ms" for fmt, p50 in self.float_p50_ms.items()))
        self.saved_index = None  # the saved manifest records the old p50: write it again
        self._save()

    def check_hardware(self, best: Try, device: str | None) -> None:
        """The chosen mode against the CPU that runs it; a measured speed-up here settles it for this host."""
        from toolkit.quantize.int8_hardware import check_int8_speed

        float_p50 = self.float_p50_ms.get(best.format)
        measured = None if device or float_p50 is None or not best.p50_ms else float_p50 / best.p50_ms
        self.int8_hardware = check_int8_speed(best.mode, device, measured_speedup=measured, stacklevel=4)
        self.saved_index = None  # the manifest records the check: write it again
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
        first = next(iter(self.sides.values()))
        float_sizes = {fmt: side.float_size for fmt, side in self.sides.items()}
        atomic_write_json(self.out_dir / "tries.json", {
            "model": str(first.model_path), "format": best.format if best else first.fmt,
            "formats": list(self.sides), "float_models": {fmt: str(side.model_path) for fmt, side in self.sides.items()},
            "float_size_bytes": float_sizes[best.format if best else first.fmt], "float_sizes": float_sizes,
            "float_p50_ms": self.float_p50_ms, "reference_accuracy": self.reference_accuracy, "gates": self.gates,
            "data": first.dataset.name, "chosen": self.saved_index, "passed": bool(best and best.passed and best.smaller),
            "objective": self.objective, "int8_hardware": self.int8_hardware, "tries": rows})
        atomic_write_text(self.out_dir / "tries.md", "# Auto quantization\n\n" + table_markdown(
            self.tries, self.saved_index, self.reference_accuracy, first.float_size, self.gates, self.objective,
            float_sizes=float_sizes, float_p50_ms=self.float_p50_ms, int8_hardware=self.int8_hardware))

    def _save_model(self, best: Try) -> None:
        from toolkit.artifacts import atomic_copy, read_manifest, write_manifest

        folder = self.out_dir / best.folder
        for item in folder.iterdir():
            if item.is_file() and item.name != "manifest.json":
                atomic_copy(item, self.out_dir / item.name)
        stale = self.out_dir / f"model.{'tflite' if best.format == 'onnx' else 'onnx'}"
        if stale.exists():
            os.unlink(stale)
        manifest = read_manifest(folder)
        manifest["auto"] = {
            "chosen": best.label, "format": best.format, "formats": list(self.sides), "try": best.folder,
            "passed": bool(best.passed and best.smaller), "objective": self.objective, "p50_ms": best.p50_ms,
            "float_p50_ms": self.float_p50_ms.get(best.format), "gates": self.gates,
            "data": self.sides[best.format].dataset.name, "tries": "tries.json", "int8_hardware": self.int8_hardware,
        }
        manifest["options"] = {**manifest.get("options", {}), "auto": True}
        write_manifest(self.out_dir, manifest)
        self.saved_index, self.saved_path = best.index, (self.out_dir / f"model.{best.format}").absolute()


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
            str(t.index + 1), t.label, t.format, human_bytes(t.size_bytes),
            "–" if t.size_ratio is None else f"{t.size_ratio:.2f}x",
            "–" if t.accuracy is None else f"{t.accuracy:.2%}", "–" if t.drop is None else f"{t.drop:.2f}",
            "–" if t.agreement is None else f"{t.agreement:.4f}",
            "–" if t.p50_ms is None else f"{t.p50_ms:.2f} ms",
            "error" if t.error else ("yes" if t.passed else "no"),
            ("chosen" if t.index == chosen else "") + (" not smaller than float" if not t.error and not t.smaller else "")
            + (f" {t.error}" if t.error else ""),
        ]


HEADER = ["#", "mode", "format", "size", "ratio", "accuracy", "drop", "agreement", "p50", "passed", "note"]


def _float_line(reference_accuracy, float_size, float_sizes=None, float_p50_ms=None) -> str:
    """The float models' sizes (ratios are against the try's own format's float model) and p50s."""
    sizes = float_sizes or {"": float_size}
    parts = [f"{fmt + ' ' if len(sizes) > 1 else ''}{human_bytes(size)}" for fmt, size in sizes.items()]
    text = f"float: {', '.join(parts)}"
    if float_p50_ms:
        text += ", p50 " + ", ".join(f"{fmt} {p50:.2f} ms" for fmt, p50 in float_p50_ms.items())
    return text + (f", accuracy {reference_accuracy:.2%}" if reference_accuracy is not None else "")


def table_text(tries, chosen, reference_accuracy, float_size, float_sizes=None, float_p50_ms=None) -> str:
    rows = [HEADER, *_rows(tries, chosen)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER) - 1)]
    lines = [_float_line(reference_accuracy, float_size, float_sizes, float_p50_ms)]
    for row in rows:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
    return "\n".join(line.rstrip() for line in lines)


def table_markdown(tries, chosen, reference_accuracy, float_size, gates, objective: str = "size", *,
                   float_sizes=None, float_p50_ms=None, int8_hardware=None) -> str:
    rule = ("fastest passing (p50, 1 thread, batch 1; within 3% the smaller)" if objective == "latency"
            else "smallest passing")
    lines = [f"Float model{_float_line(reference_accuracy, float_size, float_sizes, float_p50_ms)[5:]}. "
             f"Gates: {_gate_text(gates)}. Objective: {objective} ({rule}).", "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in _rows(tries, chosen):
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in row) + " |")
    if int8_hardware:
        slower = " May be no faster than float there." if int8_hardware.get("may_be_slower_than_float") else ""
        lines += ["", f"CPU ({int8_hardware['where']}): {int8_hardware['note']}.{slower}"]
    excluded = [t for t in tries if t.excluded]
    if excluded:
        lines += ["", "Nodes kept in float:"]
        lines += [f"- try {t.index + 1}: {', '.join(t.excluded)}" for t in excluded]
    return "\n".join(lines) + "\n"
