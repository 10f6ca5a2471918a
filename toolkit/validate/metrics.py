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
    stats, errors = compare_stats(pairs, labels, data_name)
    return [item.metrics() for item in stats], errors


def compare_stats(pairs, labels, data_name: str = "data") -> tuple[list[OutputStats], dict[str, np.ndarray]]:
    """The sufficient statistics of each output pair (one shard of the data), and the error arrays."""
    stats, errors = [], {}
    for name, cand, ref_name, ref in pairs:
        fits = labels is not None and _labels_fit(labels, cand)
        item, error = output_stats(name, cand, ref_name, ref, labels if fits else None)
        stats.append(item)
        errors[name] = error
    if labels is not None and not any(item.labelled is not None for item in stats):
        shapes = ", ".join(f"{item.name} {item.shape}" for item in stats)
        raise BadInput(f"{data_name}: labels of shape {list(np.shape(labels))} fit no classification output ({shapes})")
    return stats, errors


@dataclass
class OutputStats:
    """What the figures of one output are computed from, for one shard of the data: counts,
    sums and maxima that merge exactly (counts, max) or up to summation order (sums).

    One code path makes every figure: a run on one process is one shard; a sharded run
    merges its shards' stats in data order (`merge`) and calls `metrics()` once.
    Outputs are joined along axis 0 (the example axis of every batched output).
    """

    name: str
    reference_name: str
    shape: list[int]
    classification: bool
    nan: int = 0
    inf: int = 0
    reference_nonfinite: int = 0
    error_nonfinite: int = 0  # elements where candidate - reference is NaN or Inf
    abs_error_sum: float = 0.0  # over finite errors
    abs_error_max: float = 0.0
    noise: float = 0.0  # sum of squared finite errors
    signal: float = 0.0  # sum of squared finite reference values
    cosine_sum: float = 0.0  # per example cosines, summed
    cosine_rows: int = 0
    agreeing: int = 0  # argmax agreements (classification outputs)
    positions: int = 0  # argmax positions compared
    labelled: int | None = None  # labelled positions, when labels fit this output
    candidate_correct: int = 0
    reference_correct: int = 0

    @property
    def elements(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    def merge(self, other: OutputStats) -> OutputStats:
        """These stats followed by `other`'s (the next shard along axis 0)."""
        if (other.name, other.classification, other.shape[1:]) != (self.name, self.classification, self.shape[1:]) \
                or not self.shape:
            raise BadInput(f"output {self.name!r}: shards of shapes {self.shape} and {other.shape} cannot be joined "
                           "(an output that is not batched on axis 0 needs --workers 1)")
        labelled = None if self.labelled is None or other.labelled is None else self.labelled + other.labelled
        return OutputStats(
            name=self.name, reference_name=self.reference_name, shape=[self.shape[0] + other.shape[0], *self.shape[1:]],
            classification=self.classification, nan=self.nan + other.nan, inf=self.inf + other.inf,
            reference_nonfinite=self.reference_nonfinite + other.reference_nonfinite,
            error_nonfinite=self.error_nonfinite + other.error_nonfinite,
            abs_error_sum=self.abs_error_sum + other.abs_error_sum,
            abs_error_max=max(self.abs_error_max, other.abs_error_max),
            noise=self.noise + other.noise, signal=self.signal + other.signal,
            cosine_sum=self.cosine_sum + other.cosine_sum, cosine_rows=self.cosine_rows + other.cosine_rows,
            agreeing=self.agreeing + other.agreeing, positions=self.positions + other.positions,
            labelled=labelled, candidate_correct=self.candidate_correct + other.candidate_correct,
            reference_correct=self.reference_correct + other.reference_correct,
        )

    def metrics(self) -> OutputMetrics:
        """The figures `validate` reports, from the (merged) stats."""
        all_finite = self.error_nonfinite == 0
        noise = self.noise if all_finite else math.nan
        if noise == 0.0:
            sqnr = math.inf
        elif math.isnan(noise):
            sqnr = math.nan
        else:
            sqnr = 10.0 * math.log10(self.signal / noise) if self.signal > 0 else -math.inf
        elements = self.elements
        item = OutputMetrics(
            name=self.name,
            reference_name=self.reference_name,
            shape=list(self.shape),
            classification=self.classification,
            max_abs_error=self.abs_error_max if all_finite else math.inf,
            mean_abs_error=(self.abs_error_sum / elements if elements else 0.0) if all_finite else math.inf,
            cosine=self.cosine_sum / self.cosine_rows if self.cosine_rows else math.nan,
            sqnr_db=sqnr,
            identical=bool(noise == 0.0),
            nonfinite=self.nan + self.inf,
            nan=self.nan,
            inf=self.inf,
            reference_nonfinite=self.reference_nonfinite,
        )
        if self.classification:
            item.agreement = self.agreeing / self.positions if self.positions else math.nan
        if self.labelled is not None:
            item.candidate_accuracy = self.candidate_correct / self.labelled if self.labelled else math.nan
            item.reference_accuracy = self.reference_correct / self.labelled if self.labelled else math.nan
            item.drop = (item.reference_accuracy - item.candidate_accuracy) * 100.0
        return item


def merge_stats(shards: list[list[OutputStats]]) -> list[OutputStats]:
    """Each output's stats over all shards, merged in data order."""
    merged = list(shards[0])
    for shard in shards[1:]:
        merged = [total.merge(part) for total, part in zip(merged, shard, strict=True)]
    return merged


def output_metrics(name: str, cand: np.ndarray, ref_name: str, ref: np.ndarray) -> tuple[OutputMetrics, np.ndarray]:
    stats, error = output_stats(name, cand, ref_name, ref)
    return stats.metrics(), error


def output_stats(name: str, cand: np.ndarray, ref_name: str, ref: np.ndarray,
                 labels=None) -> tuple[OutputStats, np.ndarray]:
    """The stats of one output pair (and its labels, when they fit), and candidate - reference."""
    cand64 = cand.astype(np.float64, copy=False)
    ref64 = ref.astype(np.float64, copy=False)
    error = cand64 - ref64
    finite = np.isfinite(error)
    abs_error = np.abs(error[finite])
    classification = cand.ndim >= 2 and cand.shape[-1] > 1 and cand.dtype.kind == "f"
    a, b = _example_rows(cand64), _example_rows(ref64)
    stats = OutputStats(
        name=name,
        reference_name=ref_name,
        shape=list(cand.shape),
        classification=classification,
        nan=int(np.isnan(cand64).sum()),
        inf=int(np.isinf(cand64).sum()),
        reference_nonfinite=int((~np.isfinite(ref64)).sum()),
        error_nonfinite=int(error.size - finite.sum()),
        abs_error_sum=float(abs_error.sum()),
        abs_error_max=float(abs_error.max()) if abs_error.size else 0.0,
        noise=float(np.square(error[finite]).sum()),
        signal=float(np.square(ref64[np.isfinite(ref64)]).sum()),
        cosine_sum=float(np.sum(row_cosines(a, b))),
        cosine_rows=len(a),
    )
    if classification:
        agree = cand.argmax(-1) == ref.argmax(-1)
        stats.agreeing, stats.positions = int(agree.sum()), int(agree.size)
    if labels is not None and classification:
        labels = np.asarray(labels)
        keep = labels != IGNORE_LABEL
        stats.labelled = int(keep.sum())
        stats.candidate_correct = int((cand.argmax(-1)[keep] == labels[keep]).sum())
        stats.reference_correct = int((ref.argmax(-1)[keep] == labels[keep]).sum())
    return stats, error.astype(np.float32).ravel()


def _example_rows(array: np.ndarray) -> np.ndarray:
    return array.reshape(len(array), -1) if array.ndim >= 1 and len(array) else array.reshape(1, -1)


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The cosine between each row of `a` and of `b` (1 where both rows are zero)."""
    dot = np.einsum("ij,ij->i", a, b)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    both_zero = (np.linalg.norm(a, axis=1) == 0) & (np.linalg.norm(b, axis=1) == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(both_zero, 1.0, dot / np.where(norms == 0, np.inf, norms))


def cosine_similarity(cand: np.ndarray, ref: np.ndarray) -> float:
    """Mean over examples of the cosine between the two outputs (flattened per example)."""
    return float(np.mean(row_cosines(_example_rows(cand), _example_rows(ref))))


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


def join_confidences(parts: list[Confidence | None]) -> Confidence | None:
    """The Confidence of the whole data from its shards' (in data order): the rows, concatenated."""
    parts = [part for part in parts if part is not None]
    if not parts:
        return None
    first = parts[0]
    return Confidence(first.output, first.against,
                      **{key: np.concatenate([getattr(part, key) for part in parts])
                         for key in ("probability", "margin", "correct", "reference_correct")})
