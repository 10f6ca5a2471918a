"""Validate a candidate model against its reference: accuracy, agreement, error, gates.

Quantizers are judged by users on one question: does the smaller model still give the
answers of the original? `validate` runs both models on the same data (batched where
the model allows), compares every output, and applies gates (accuracy drop, argmax
agreement, SQNR) that a CI job can branch on. The library returns the report; the CLI
turns a failed gate into exit 1.

Any mix of formats works: each side is opened with `toolkit.runtime.open_any` (ONNX,
TFLite, or a PyTorch source through `toolkit.sources`), and a single-input dataset is
renamed to each model's own input name.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from toolkit.errors import BadInput
from toolkit.validate.metrics import (
    Gate,
    OutputMetrics,
    compare_outputs,
    evaluate_gates,
    match_outputs,
)

__all__ = ["Gate", "OutputMetrics", "ShapeCheck", "ValidationReport", "validate", "check_gates", "parse_shapes"]

DEFAULT_MAX_DROP = 1.0  # accuracy points
DEFAULT_MIN_AGREEMENT = 0.99  # fraction of examples whose argmax agrees
DEFAULT_MIN_SQNR = 20.0  # dB, on every float output


@dataclass
class ShapeCheck:
    """Both models re-run on random data at a shape the user named (`--shapes`)."""

    shapes: dict[str, list[int]]
    ran: bool
    error: str | None = None
    outputs: list[OutputMetrics] = field(default_factory=list)

    @property
    def label(self) -> str:
        return ",".join(f"{name}={'x'.join(map(str, shape))}" for name, shape in self.shapes.items())


@dataclass
class ValidationReport:
    candidate: str
    reference: str
    data: str
    samples: int
    outputs: list[OutputMetrics]
    gates: list[Gate]
    passed: bool
    candidate_format: str = ""
    reference_format: str = ""
    device: str | None = None
    shape_checks: list[ShapeCheck] = field(default_factory=list)
    per_layer: object | None = None  # toolkit.validate.per_layer.PerLayerResult
    seconds: dict[str, float] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    # kept for the charts, not serialised: output name -> candidate - reference
    errors: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    # per example confidence and correctness (confidence.npz); its compact curve is serialised
    confidence: object | None = field(default=None, repr=False)  # toolkit.validate.metrics.Confidence
    shards: int = 1  # how many shards the figures were reduced from

    def failed_gates(self) -> list[Gate]:
        return [gate for gate in self.gates if not gate.passed]

    def failure_line(self) -> str:
        """One line naming each failed figure and its bar (the CLI's exit-1 message)."""
        return "; ".join(gate.describe() for gate in self.failed_gates())

    def to_dict(self) -> dict:
        data = {
            "candidate": self.candidate,
            "reference": self.reference,
            "candidate_format": self.candidate_format,
            "reference_format": self.reference_format,
            "data": self.data,
            "samples": self.samples,
            "shards": self.shards,
            "device": self.device,
            "passed": self.passed,
            "outputs": [metrics.to_dict() for metrics in self.outputs],
            "gates": [asdict(gate) for gate in self.gates],
            "shape_checks": [
                {"shapes": check.shapes, "ran": check.ran, "error": check.error,
                 "outputs": [metrics.to_dict() for metrics in check.outputs]}
                for check in self.shape_checks
            ],
            "seconds": {key: round(value, 4) for key, value in self.seconds.items()},
            "files": dict(self.files),
        }
        if self.per_layer is not None:
            data["per_layer"] = self.per_layer.to_dict()
        if self.confidence is not None:
            data["confidence"] = self.confidence.curve()
        return _finite(data)

    def manifest_record(self) -> dict:
        """The short record kept in the candidate's manifest under `validation`."""
        return _finite({
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "reference": self.reference,
            "data": self.data,
            "samples": self.samples,
            "device": self.device,
            "passed": self.passed,
            "outputs": [
                {key: metrics.to_dict()[key] for key in
                 ("name", "candidate_accuracy", "reference_accuracy", "drop", "agreement", "sqnr_db",
                  "max_abs_error", "nonfinite")}
                for metrics in self.outputs
            ],
            "gates": [asdict(gate) for gate in self.gates],
            **({"confidence": self.confidence.curve()} if self.confidence is not None else {}),
        })


def check_gates(max_drop: float | None, min_agreement: float | None, min_sqnr: float | None) -> None:
    """Reject gate values that cannot mean anything (BadInput, exit 2)."""
    if max_drop is not None and not (math.isfinite(max_drop) and 0.0 <= max_drop <= 100.0):
        raise BadInput(f"--max-drop {max_drop}: give accuracy points between 0 and 100")
    if min_agreement is not None and not (math.isfinite(min_agreement) and 0.0 <= min_agreement <= 1.0):
        raise BadInput(f"--min-agreement {min_agreement}: give a fraction between 0 and 1 (e.g. 0.99)")
    if min_sqnr is not None and not (math.isfinite(min_sqnr) and -100.0 <= min_sqnr <= 200.0):
        raise BadInput(f"--min-sqnr {min_sqnr}: give decibels between -100 and 200")


def parse_shapes(texts) -> list[dict[str, list[int]]]:
    """`["input_ids=1x64,1x32"]` -> `[{"input_ids": [1, 64]}, {"input_ids": [1, 32]}]`.

    Several inputs may be named (repeat the option or separate with `;`); each must list the
    same number of shapes, or one shape that is used for every set.
    """
    per_input: dict[str, list[list[int]]] = {}
    for text in texts or ():
        for part in str(text).split(";"):
            part = part.strip()
            if not part:
                continue
            name, sep, shapes = part.partition("=")
            if not sep or not name.strip() or not shapes.strip():
                raise BadInput(f"--shapes {part!r}: write NAME=1x64[,1x32...]")
            parsed = []
            for shape in shapes.split(","):
                try:
                    dims = [int(dim) for dim in shape.strip().lower().split("x")]
                except ValueError:
                    raise BadInput(f"--shapes {part!r}: {shape!r} is not a shape like 1x64") from None
                if not dims or any(dim <= 0 for dim in dims):
                    raise BadInput(f"--shapes {part!r}: dimensions must be positive integers")
                parsed.append(dims)
            per_input.setdefault(name.strip(), []).extend(parsed)
    if not per_input:
        return []
    count = max(len(shapes) for shapes in per_input.values())
    for name, shapes in per_input.items():
        if len(shapes) not in (1, count):
            raise BadInput(f"--shapes: {name} lists {len(shapes)} shapes but another input lists {count}")
    return [{name: shapes[min(i, len(shapes) - 1)] for name, shapes in per_input.items()} for i in range(count)]


def validate(
    candidate,
    reference,
    data,
    *,
    max_drop: float | None = DEFAULT_MAX_DROP,
    min_agreement: float | None = DEFAULT_MIN_AGREEMENT,
    min_sqnr: float | None = DEFAULT_MIN_SQNR,
    shapes=None,
    device: str | None = None,
    per_layer: bool = False,
    top: int = 10,
    out_dir=None,
    record: bool = True,
    batch_size: int = 256,
    input_shapes: dict[str, list[int]] | None = None,
    workers: int = 1,
    executor: str = "local",
    address: str | None = None,
) -> ValidationReport:
    """Run CANDIDATE and REFERENCE on DATA and compare them; never raises for a failed gate.

    `candidate`/`reference`: a model spec (path, artifact folder, builtin:…) or an open runner.
    `data`: a spec for `toolkit.data.load_data` or a `Dataset`. A gate set to None is off.
    `shapes`: `--shapes` texts or parsed dicts; both models re-run there on random data.
    With `out_dir`, writes report.json, report.md and PNG charts there; with `record`,
    the result goes into the candidate's manifest when the candidate is an artifact.
    `batch_size` matters for dynamic quantization, whose activation scales depend on the
    batch (use 1 to see what a one-request-at-a-time device sees).
    A PyTorch side whose input shapes torch cannot tell (a factory) takes them from the
    data, or from `input_shapes` pins (`--input-shape`).
    `workers` > 1 shards the data across processes (`executor="local"`) or Ray tasks
    (`executor="ray"`, on the cluster at `address` or a local one): the same figures as one
    process (toolkit.validate.shards).
    """
    from toolkit.validate.sides import feed_count, load_side, prepare_feeds

    check_gates(max_drop, min_agreement, min_sqnr)
    if top < 1:
        raise BadInput(f"--top {top}: give a positive number of nodes")
    if batch_size < 1:
        raise BadInput(f"--batch-size {batch_size}: give a positive number of examples")
    shape_sets = parse_shapes(shapes) if shapes and isinstance(next(iter(shapes)), str) else list(shapes or [])

    timings: dict[str, float] = {}
    started = time.perf_counter()
    dataset = _load_dataset(data)  # renamed to each model's inputs by prepare_feeds
    source_options = {"input_shapes": input_shapes,
                      "data_shapes": {name: list(np.shape(array))[1:] for name, array in dataset.inputs.items()}}
    cand = load_side(candidate, "candidate", **source_options)
    ref = load_side(reference, "reference", **source_options)
    timings["load"] = time.perf_counter() - started

    cand_feeds = prepare_feeds(dataset, cand.runner, "candidate")
    prepare_feeds(dataset, ref.runner, "reference")  # data that fits neither side fails here, before any worker
    _check_output_counts(cand.runner, ref.runner)

    from toolkit.validate.shards import sharded_figures

    figures = sharded_figures(cand, ref, dataset, candidate_spec=candidate, reference_spec=reference,
                              source_options=source_options, batch_size=batch_size, workers=workers,
                              executor=executor, address=address, device=device)
    timings.update(figures.seconds)
    metrics, errors = figures.metrics, figures.errors
    gates = evaluate_gates(metrics, max_drop, min_agreement, min_sqnr)

    checks = []
    for shape_set in shape_sets:
        check = _shape_check(cand, ref, dataset, shape_set, device)
        checks.append(check)
        gates.extend(_shape_gates(check, min_agreement, min_sqnr))

    report = ValidationReport(
        candidate=cand.label, reference=ref.label, data=dataset.name or str(data), samples=feed_count(cand_feeds, cand.runner.inputs),
        outputs=metrics, gates=gates, passed=all(gate.passed for gate in gates),
        candidate_format=cand.runner.format, reference_format=ref.runner.format, device=device,
        shape_checks=checks, seconds=timings, errors=errors, confidence=figures.confidence, shards=figures.shards,
    )
    if per_layer:
        tick = time.perf_counter()
        report.per_layer = _per_layer(cand, ref, dataset, top, batch_size)
        timings["per_layer"] = time.perf_counter() - tick
    timings["total"] = time.perf_counter() - started
    if out_dir is not None:
        from toolkit.validate.report import write_report

        report.files = write_report(report, Path(out_dir))
    if record and cand.artifact is not None:
        from toolkit.artifacts import update_manifest

        update_manifest(cand.artifact, validation=report.manifest_record())
    return report


def _load_dataset(data):
    from toolkit.data import Dataset, check_consistent, load_data

    dataset = data if isinstance(data, Dataset) else load_data(data)
    if len(dataset) == 0:
        raise BadInput(f"data {dataset.name!r} has no examples")
    if dataset.labels is not None:
        if len(dataset.labels) != len(dataset):
            raise BadInput(f"data {dataset.name!r}: {len(dataset.labels)} labels but {len(dataset)} examples")
        check_consistent(dataset)
    return dataset


def _names(runner) -> list[str]:
    return [spec.name for spec in runner.outputs]


def _check_output_counts(cand_runner, ref_runner) -> None:
    cand, ref = _names(cand_runner), _names(ref_runner)
    if cand and ref and len(cand) != len(ref):
        raise BadInput(
            f"the candidate has {len(cand)} outputs ({', '.join(cand)}) but the reference has "
            f"{len(ref)} ({', '.join(ref)}): they cannot be compared"
        )


def _shape_check(cand, ref, dataset, shape_set: dict[str, list[int]], device) -> ShapeCheck:
    from toolkit.validate.sides import prepare_feeds, random_inputs, run_candidate, run_side

    inputs = random_inputs(dataset, shape_set)
    check = ShapeCheck(shapes={name: list(array.shape) for name, array in inputs.items() if name in shape_set}, ran=False)
    from toolkit.data import Dataset

    probe = Dataset(inputs, None, f"random at {check.label}")
    try:
        cand_outputs = run_candidate(cand, prepare_feeds(probe, cand.runner, "candidate", static=False), device,
                                     whole=True)
        ref_outputs = run_side(ref.runner, prepare_feeds(probe, ref.runner, "reference", static=False), whole=True)
        pairs = match_outputs(_names(cand.runner), cand_outputs, _names(ref.runner), ref_outputs)
        check.outputs, _ = compare_outputs(pairs, None)
        check.ran = True
    except BadInput as error:
        check.error = str(error)
    return check


def _shape_gates(check: ShapeCheck, min_agreement, min_sqnr) -> list[Gate]:
    if not check.ran:
        return [Gate(f"runs at {check.label}", "no", "yes", False, detail=check.error, op="==")]
    gates = [Gate(f"runs at {check.label}", "yes", "yes", True, op="==")]
    for gate in evaluate_gates(check.outputs, None, min_agreement, min_sqnr):
        gate.figure = f"{gate.figure} at {check.label}"
        gates.append(gate)
    return gates


def _per_layer(cand, ref, dataset, top: int, batch_size: int):
    from toolkit.validate.per_layer import per_layer_error

    return per_layer_error(cand.model_path, _float_parent(cand, ref), dataset, top=top,
                           batch_size=min(batch_size, 64))


def _float_parent(cand, ref) -> Path:
    """The float model of the candidate's own format: the reference, or the manifest's source."""
    from toolkit.artifacts import read_manifest, resolve_model

    if cand.model_path is None:
        raise BadInput("--per-layer needs an ONNX or TFLite candidate file")
    suffix = cand.model_path.suffix
    if ref.model_path is not None and ref.model_path.suffix == suffix:
        return ref.model_path
    if cand.artifact is not None:
        spec = (read_manifest(cand.artifact).get("source") or {}).get("spec")
        if spec:
            try:
                parent = resolve_model(spec)
            except BadInput:
                parent = None
            if parent is not None and parent.suffix == suffix:
                return parent
    raise BadInput(
        f"--per-layer compares the candidate with its float {suffix} parent: pass that file as --reference"
    )


def _finite(value):
    """JSON has no NaN or Infinity: write them as null (an exact match reads sqnr_db null)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value
