"""The figures `validate` reports for each output, and the gates over them.

Pure numpy, no model code: given candidate and reference outputs (and labels), compute
top-1 accuracy, argmax agreement, max/mean absolute error, cosine similarity, SQNR and
NaN/Inf counts. Kept apart so that the figures can be checked against an independent
computation and reused by auto quantization.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from toolkit.errors import BadInput

IGNORE_LABEL = -100  # Hugging Face's "no label here" for token-level labels


@dataclass
class OutputMetrics:
    name: str
    reference_name: str
    shape: list[int]
    classification: bool
    max_abs_error: float
    mean_abs_error: float
    cosine: float
    sqnr_db: float  # inf when the outputs are identical
    identical: bool
    nonfinite: int  # NaN + Inf in the candidate's output
    nan: int
    inf: int
    reference_nonfinite: int
    agreement: float | None = None  # argmax agreement, classification outputs only
    candidate_accuracy: float | None = None  # fraction, with labels only
    reference_accuracy: float | None = None
    drop: float | None = None  # accuracy points lost (reference - candidate) * 100

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Gate:
    figure: str  # e.g. "accuracy drop of logits"
    value: object
    bar: object
    passed: bool
    detail: str | None = None
    op: str = ">="  # how value must compare with bar: ">=", "<=" or "=="

    def describe(self) -> str:
        text = f"{self.figure} is {_show(self.value)} (bar {self.op} {_show(self.bar)})"
        return f"{text}: {self.detail}" if self.detail else text


def _show(value) -> str:
    if isinstance(value, float):
        if math.isinf(value):
            return "inf"
        return f"{value:.4g}"
    return str(value)


def match_outputs(cand_names, cand_outputs, ref_names, ref_outputs) -> list[tuple[str, np.ndarray, str, np.ndarray]]:
    """Pair outputs by name when both models use the same names, else by position.

    Different counts or shapes cannot be compared: BadInput saying which.
    """
    cand_names = list(cand_names) or [f"output_{i}" for i in range(len(cand_outputs))]
    ref_names = list(ref_names) or [f"output_{i}" for i in range(len(ref_outputs))]
    if len(cand_outputs) != len(ref_outputs):
        raise BadInput(
            f"the candidate gives {len(cand_outputs)} outputs ({', '.join(cand_names)}) but the reference "
            f"gives {len(ref_outputs)} ({', '.join(ref_names)}): they cannot be compared"
        )
    order = list(range(len(ref_outputs)))
    if sorted(cand_names) == sorted(ref_names) and len(set(ref_names)) == len(ref_names):
        order = [ref_names.index(name) for name in cand_names]
    pairs = []
    for i, j in enumerate(order):
        cand, ref = np.asarray(cand_outputs[i]), np.asarray(ref_outputs[j])
        if cand.shape != ref.shape:
            raise BadInput(
                f"output {cand_names[i]!r} of the candidate has shape {list(cand.shape)} but the reference's "
                f"{ref_names[j]!r} has {list(ref.shape)}: they cannot be compared"
            )
        pairs.append((cand_names[i], cand, ref_names[j], ref))
    return pairs


def compare_outputs(pairs, labels, data_name: str = "data") -> tuple[list[OutputMetrics], dict[str, np.ndarray]]:
    """Metrics for each output pair, and the error arrays (for histograms)."""
    metrics, errors = [], {}
    labelled = []
    for name, cand, ref_name, ref in pairs:
        item, error = output_metrics(name, cand, ref_name, ref)
        if labels is not None and item.classification and _labels_fit(labels, cand):
            item.candidate_accuracy = top1_accuracy(cand, labels)
            item.reference_accuracy = top1_accuracy(ref, labels)
            item.drop = (item.reference_accuracy - item.candidate_accuracy) * 100.0
            labelled.append(name)
        metrics.append(item)
        errors[name] = error
    if labels is not None and not labelled:
        shapes = ", ".join(f"{m.name} {m.shape}" for m in metrics)
        raise BadInput(f"{data_name}: labels of shape {list(np.shape(labels))} fit no classification output ({shapes})")
    return metrics, errors


def output_metrics(name: str, cand: np.ndarray, ref_name: str, ref: np.ndarray) -> tuple[OutputMetrics, np.ndarray]:
    cand64 = cand.astype(np.float64, copy=False)
    ref64 = ref.astype(np.float64, copy=False)
    nan, inf = int(np.isnan(cand64).sum()), int(np.isinf(cand64).sum())
    error = cand64 - ref64
    finite = np.isfinite(error)
    abs_error = np.abs(error[finite]) if finite.any() else np.zeros(1)
    noise = float(np.square(error).sum()) if finite.all() else math.nan
    signal = float(np.square(ref64[np.isfinite(ref64)]).sum())
    if noise == 0.0:
        sqnr = math.inf
    elif math.isnan(noise):
        sqnr = math.nan
    else:
        sqnr = 10.0 * math.log10(signal / noise) if signal > 0 else -math.inf
    classification = cand.ndim >= 2 and cand.shape[-1] > 1 and cand.dtype.kind == "f"
    item = OutputMetrics(
        name=name,
        reference_name=ref_name,
        shape=list(cand.shape),
        classification=classification,
        max_abs_error=float(abs_error.max()) if finite.all() else math.inf,
        mean_abs_error=float(abs_error.mean()) if finite.all() else math.inf,
        cosine=cosine_similarity(cand64, ref64),
        sqnr_db=sqnr,
        identical=bool(noise == 0.0),
        nonfinite=nan + inf,
        nan=nan,
        inf=inf,
        reference_nonfinite=int((~np.isfinite(ref64)).sum()),
    )
    if classification:
        item.agreement = float(np.mean(cand.argmax(-1) == ref.argmax(-1)))
    return item, error.astype(np.float32).ravel()


def cosine_similarity(cand: np.ndarray, ref: np.ndarray) -> float:
    """Mean over examples of the cosine between the two outputs (flattened per example)."""
    a = cand.reshape(len(cand), -1) if cand.ndim >= 1 and len(cand) else cand.reshape(1, -1)
    b = ref.reshape(len(ref), -1) if ref.ndim >= 1 and len(ref) else ref.reshape(1, -1)
    dot = np.einsum("ij,ij->i", a, b)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    both_zero = (np.linalg.norm(a, axis=1) == 0) & (np.linalg.norm(b, axis=1) == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(both_zero, 1.0, dot / np.where(norms == 0, np.inf, norms))
    return float(np.mean(cos))


def _labels_fit(labels, output: np.ndarray) -> bool:
    return tuple(np.shape(labels)) == tuple(output.shape[:-1])


def top1_accuracy(output: np.ndarray, labels) -> float:
    """Share of labelled positions whose argmax is the label (label -100 = ignored)."""
    labels = np.asarray(labels)
    predictions = np.asarray(output).argmax(-1)
    keep = labels != IGNORE_LABEL
    if not keep.any():
        return math.nan
    return float(np.mean(predictions[keep] == labels[keep]))


def evaluate_gates(metrics: list[OutputMetrics], max_drop, min_agreement, min_sqnr) -> list[Gate]:
    """One gate per figure and output; a gate set to None is off."""
    gates = []
    for item in metrics:
        if max_drop is not None and item.drop is not None:
            gates.append(Gate(f"accuracy drop of {item.name} (points)", round(item.drop, 4), max_drop,
                              bool(item.drop <= max_drop + 1e-9),
                              f"{item.candidate_accuracy:.2%} vs {item.reference_accuracy:.2%}", op="<="))
        if min_agreement is not None and item.agreement is not None:
            gates.append(Gate(f"argmax agreement of {item.name}", round(item.agreement, 6), min_agreement,
                              bool(item.agreement >= min_agreement)))
        if min_sqnr is not None and item.shape and np.prod(item.shape) > 0:
            value = item.sqnr_db
            gates.append(Gate(f"SQNR of {item.name} (dB)", round(value, 3) if math.isfinite(value) else value,
                              min_sqnr, bool(value >= min_sqnr)))
        if item.nonfinite > item.reference_nonfinite:
            gates.append(Gate(f"NaN/Inf values in {item.name}", item.nonfinite, item.reference_nonfinite, False,
                              f"{item.nan} NaN, {item.inf} Inf", op="<="))
    return gates


# ---------------------------------------------------------------- confidence

CURVE_POINTS = 201  # at most this many points in the compact curve (report.json, manifest)


@dataclass
class Confidence:
    """Per example, the candidate's confidence and whether it was right: what routing on
    confidence (the unsure requests go to the cloud model) needs.

    `probability` is the top-1 softmax probability (the output itself when it already is a
    distribution), `margin` the gap between the top two. `correct` is against the labels
    when the data has them, else agreement with the reference; `reference_correct` is the
    reference's own correctness (all True without labels: the reference is the yardstick).
    Token-level outputs count each labelled position as one example.
    """

    output: str
    against: str  # "labels" or "reference"
    probability: np.ndarray
    margin: np.ndarray
    correct: np.ndarray
    reference_correct: np.ndarray

    @property
    def examples(self) -> int:
        return int(self.probability.size)

    def arrays(self) -> dict[str, np.ndarray]:
        """What confidence.npz holds (one row per example)."""
        return {"probability": self.probability.astype(np.float64), "margin": self.margin.astype(np.float64),
                "correct": self.correct.astype(bool), "reference_correct": self.reference_correct.astype(bool)}

    def curve(self, points: int = CURVE_POINTS) -> dict:
        """The compact curve: `points` rows [threshold, kept, kept_correct, routed_reference_correct].

        Examples sorted by confidence, most confident first; keeping the first `kept` on the
        device means the threshold is the confidence of the last one kept (a request at or
        above it stays on the device). Only cuts between distinct confidences are listed, since
        a threshold cannot split a tie; the first row keeps nothing (threshold None)."""
        order = np.argsort(-self.probability, kind="stable")
        probability = self.probability[order]
        correct = np.cumsum(self.correct[order])
        reference = self.reference_correct[order]
        reference_total = int(reference.sum())
        reference_kept = np.cumsum(reference)
        total = probability.size
        cuts = np.nonzero(np.append(probability[1:] < probability[:-1], True))[0] + 1 if total else np.array([], int)
        if len(cuts) > points - 1:
            wanted = np.linspace(1, total, points - 1)
            cuts = cuts[np.unique(np.searchsorted(cuts, wanted).clip(0, len(cuts) - 1))]
        rows = [[None, 0, 0, reference_total]]
        for kept in cuts:
            rows.append([float(probability[kept - 1]), int(kept), int(correct[kept - 1]),
                         reference_total - int(reference_kept[kept - 1])])
        return {"output": self.output, "against": self.against, "examples": int(total),
                "candidate_accuracy": float(np.mean(self.correct)) if total else None,
                "reference_accuracy": float(np.mean(self.reference_correct)) if total else None,
                "columns": ["threshold", "kept", "kept_correct", "routed_reference_correct"], "points": rows}


def confidence_of(pairs, labels) -> Confidence | None:
    """The Confidence of the first classification output (the labelled one when there are
    labels); None when no output is a classification."""
    for name, cand, _ref_name, ref in pairs:
        cand, ref = np.asarray(cand), np.asarray(ref)
        if not (cand.ndim >= 2 and cand.shape[-1] > 1 and cand.dtype.kind == "f"):
            continue
        if labels is not None and not _labels_fit(labels, cand):
            continue
        classes = cand.shape[-1]
        cand_rows = cand.reshape(-1, classes).astype(np.float64)
        ref_rows = ref.reshape(-1, classes).astype(np.float64)
        if labels is not None:
            flat = np.asarray(labels).reshape(-1)
            keep = flat != IGNORE_LABEL
            cand_rows, ref_rows, flat = cand_rows[keep], ref_rows[keep], flat[keep]
            correct = cand_rows.argmax(-1) == flat
            reference_correct = ref_rows.argmax(-1) == flat
            against = "labels"
        else:
            correct = cand_rows.argmax(-1) == ref_rows.argmax(-1)
            reference_correct = np.ones(len(correct), dtype=bool)
            against = "reference"
        probabilities = as_probabilities(cand_rows)
        top_two = np.sort(probabilities, axis=-1)[:, -2:]
        return Confidence(name, against, probability=top_two[:, 1], margin=top_two[:, 1] - top_two[:, 0],
                          correct=correct, reference_correct=reference_correct)
    return None


def as_probabilities(rows: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, unless the rows already are distributions (a model with its
    own softmax). Non-finite values give probability 0 (an example the device cannot be sure of)."""
    finite = np.isfinite(rows).all(-1)
    already = finite.all() and rows.min(initial=0.0) >= 0.0 and np.allclose(rows.sum(-1), 1.0, atol=1e-3)
    if already:
        return rows
    safe = np.where(np.isfinite(rows), rows, -np.inf)
    shifted = safe - safe.max(-1, keepdims=True)
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        exp = np.exp(shifted)
        probabilities = exp / exp.sum(-1, keepdims=True)
    probabilities[~finite] = 0.0
    return np.nan_to_num(probabilities, nan=0.0)


def system_accuracy(point: list, examples: int, cloud_accuracy: float | None = None) -> float:
    """Accuracy of device + cloud at one curve point: the device's right answers among the
    kept examples plus the cloud's among the routed ones (the reference's own answers, or
    `cloud_accuracy` of them when the cloud model's accuracy is stated)."""
    _, kept, kept_correct, routed_reference_correct = point
    routed = routed_reference_correct if cloud_accuracy is None else cloud_accuracy * (examples - kept)
    return (kept_correct + routed) / examples
