"""Auto's search state: runs and judges each try, times the passing ones, picks the best and keeps
OUT_DIR holding it (model, manifest, tries.json, tries.md) after every try."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from toolkit.common.units import human_bytes
from toolkit.errors import EdgewardError
from toolkit.quantize.auto_tries import Try, accuracy_text, rounded, table_markdown

if TYPE_CHECKING:
    from toolkit.quantize.auto_formats import FormatSide

logger = logging.getLogger(__name__)

LATENCY_WARMUP, LATENCY_RUNS = 5, 30
LATENCY_ROUNDS = 10  # the final, interleaved timing: LATENCY_ROUNDS x LATENCY_RUNS // LATENCY_ROUNDS runs each
LATENCY_TIE = 0.03  # p50s within 3% of the fastest count as a tie, broken by size


class SearchState:
    """The tries so far, and the best model saved into out_dir after each of them."""

    def __init__(self, out_dir, sides: dict, gates, objective="size", shards: dict | None = None):
        self.out_dir, self.sides, self.gates, self.objective = out_dir, sides, gates, objective
        self.shards = shards or {}  # validate's workers/executor/address for each try
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
                    f"{human_bytes(attempt.size_bytes)}, {accuracy_text(attempt)}{speed}, {'passed' if attempt.passed else 'failed'}")
        self._save()
        return attempt

    def _judge(self, attempt: Try, model_path: Path) -> None:
        """The validate stage on the try (its format's float model as reference); the record goes into its manifest."""
        from toolkit.validate import validate

        side = self.sides[attempt.format]
        sharded = self.shards.get("workers", 1) > 1 or self.shards.get("executor", "local") != "local"
        # sharded workers reopen both models from their specs: the float model's path, not its open runner
        reference = str(side.model_path) if sharded else side.reference
        candidate = str(model_path) if sharded else model_path
        report = validate(candidate, reference, side.dataset, max_drop=self.gates["max_drop"],
                          min_agreement=self.gates["min_agreement"], min_sqnr=None, record=True, **self.shards)
        first = next((m for m in report.outputs if m.candidate_accuracy is not None),
                     next((m for m in report.outputs if m.agreement is not None), report.outputs[0]))
        if self.reference_accuracy is None:
            self.reference_accuracy = rounded(first.reference_accuracy, 12)
        attempt.accuracy, attempt.drop = rounded(first.candidate_accuracy, 12), rounded(first.drop)
        attempt.agreement, attempt.sqnr_db = rounded(first.agreement, 6), rounded(first.sqnr_db)
        attempt.passed = report.passed
        attempt.failed_gates = [gate.describe() for gate in report.failed_gates()]

    def _timer(self, model_path: Path, side: FormatSide):
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

    def _p50(self, model_path: Path, side: FormatSide) -> float:
        """Median latency of one example (1 thread, batch 1), in ms, after a warm-up."""
        runner, feeds = self._timer(model_path, side)
        return round(float(np.median(timed_runs(runner, feeds, LATENCY_RUNS))), 4)

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
                samples[key] += timed_runs(runner, feeds, max(1, LATENCY_RUNS // LATENCY_ROUNDS))
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


def timed_runs(runner, feeds, runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        tick = time.perf_counter()
        runner.run(feeds)
        samples.append((time.perf_counter() - tick) * 1000)
    return samples
