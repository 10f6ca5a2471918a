"""Validate a language model against its original on a text file: perplexity, next-token agreement, KL, greedy match.

    from toolkit.lm.validate import validate_lm
    report = validate_lm("exported/qwen2-int4", "exported/qwen2-onnx", "text.txt")

The text (plain lines, or JSONL records with a `text` field) is tokenized with the candidate
folder's tokenizer, record by record, into one stream cut into windows of `max_length` tokens.
Both models score every window from an empty cache:

- perplexity of each (exp of the mean next-token negative log-likelihood) and their ratio;
- top-1 agreement of the next-token argmax and the mean KL divergence KL(reference ‖ candidate),
  over every position;
- greedy continuation of the first `prompts` records by both, and the length of the candidate's
  exact match to the reference's continuation.

A failed gate does not raise: the report says so and the command turns it into exit code 1.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from toolkit.errors import BadInput

logger = logging.getLogger(__name__)

DEFAULT_MAX_LENGTH = 1024  # window cap when the context is longer: the cost grows with the square of it
DEFAULT_PROMPTS = 4
DEFAULT_MAX_NEW_TOKENS = 16
ROWS_PER_CHUNK = 256  # positions turned into float64 log-probabilities at once (vocab × rows)


@dataclass(frozen=True)
class LmGates:
    """The bars; None turns a gate off."""

    max_ppl_ratio: float | None = 1.10
    min_agreement: float | None = 0.90
    max_kl: float | None = 0.10
    min_full_match: float | None = None  # share of prompts whose greedy continuation matches fully

    def check(self) -> None:
        for name, value in asdict(self).items():
            if value is not None and (not math.isfinite(value) or value < 0):
                raise BadInput(f"--{name.replace('_', '-')} {value}: use a finite number >= 0")
        for name in ("min_agreement", "min_full_match"):
            value = getattr(self, name)
            if value is not None and value > 1:
                raise BadInput(f"--{name.replace('_', '-')} {value}: use a share in [0, 1]")


@dataclass
class Gate:
    figure: str
    value: float
    bar: float
    op: str  # "<=" or ">="
    passed: bool

    def describe(self) -> str:
        return f"{self.figure} is {self.value:.4g} (bar {self.op} {self.bar:.4g})"


@dataclass
class PromptMatch:
    prompt_tokens: int
    new_tokens: int
    match_length: int
    reference_text: str
    candidate_text: str

    @property
    def full(self) -> bool:
        return self.match_length == self.new_tokens


@dataclass
class LmValidation:
    candidate: str
    reference: str
    data: str
    candidate_kind: str
    reference_kind: str
    max_length: int
    windows: int
    positions: int  # positions scored for agreement and KL
    predicted: int  # next tokens scored for perplexity
    candidate_ppl: float
    reference_ppl: float
    agreement: float
    mean_kl: float
    max_new_tokens: int
    prompts: list[PromptMatch]
    gates: list[Gate]
    seconds: float = 0.0
    files: dict = field(default_factory=dict)
    per_layer: object | None = None  # toolkit.lm.per_layer.LmPerLayerResult, with per_layer=True

    @property
    def ppl_ratio(self) -> float:
        return self.candidate_ppl / self.reference_ppl

    @property
    def mean_match_length(self) -> float:
        return float(np.mean([p.match_length for p in self.prompts])) if self.prompts else float("nan")

    @property
    def full_match_share(self) -> float:
        return float(np.mean([p.full for p in self.prompts])) if self.prompts else float("nan")

    @property
    def passed(self) -> bool:
        return all(gate.passed for gate in self.gates)

    def failure_line(self) -> str:
        return "; ".join(gate.describe() for gate in self.gates if not gate.passed)

    def figures(self) -> dict:
        return {"candidate_perplexity": _round(self.candidate_ppl), "reference_perplexity": _round(self.reference_ppl),
                "perplexity_ratio": _round(self.ppl_ratio), "top1_agreement": _round(self.agreement),
                "mean_kl": _round(self.mean_kl), "greedy_mean_match_tokens": _round(self.mean_match_length),
                "greedy_full_match_share": _round(self.full_match_share)}

    def to_dict(self) -> dict:
        return {"kind": "language-model", "candidate": self.candidate, "reference": self.reference,
                "data": self.data, "candidate_format": self.candidate_kind, "reference_format": self.reference_kind,
                "passed": self.passed, "max_length": self.max_length, "windows": self.windows,
                "positions": self.positions, "predicted_tokens": self.predicted, **self.figures(),
                "greedy": {"prompts": len(self.prompts), "max_new_tokens": self.max_new_tokens,
                           "results": [{**asdict(p), "full": p.full} for p in self.prompts]},
                "gates": [asdict(gate) for gate in self.gates], "seconds": round(self.seconds, 3),
                "files": dict(self.files), **({"per_layer": self.per_layer.to_dict()} if self.per_layer else {})}

    def manifest_record(self) -> dict:
        """The short record kept in the candidate's manifest under `validation`."""
        return {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "kind": "language-model",
                "reference": self.reference, "data": self.data, "positions": self.positions,
                "passed": self.passed, **self.figures(), "gates": [asdict(gate) for gate in self.gates]}


def _round(value: float, digits: int = 6) -> float | None:
    """`digits` significant figures (a KL of 2e-7 stays 2e-7); None for inf / nan (JSON has neither)."""
    return float(f"{float(value):.{digits}g}") if math.isfinite(value) else None


def read_texts(path) -> list[str]:
    """The records of a text file: non-empty lines, or the `text` field of each JSONL object."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: no such text file (give a .txt with one passage a line, or a .jsonl)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise BadInput(f"{path} is not UTF-8 text (byte {error.start}): a language model is validated on UTF-8 "
                       "text (.txt lines or .jsonl records with a text field)") from None
    except OSError as error:
        raise BadInput(f"{path}: cannot read it ({error.strerror})") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if path.suffix.lower() == ".jsonl":
        lines = [_record_text(line, number, path) for number, line in enumerate(lines, start=1)]
    if not lines:
        raise BadInput(f"{path} holds no text")
    return lines


def _record_text(line: str, number: int, path: Path) -> str:
    try:
        record = json.loads(line)
    except ValueError:
        raise BadInput(f"{path}: record {number} is not JSON") from None
    if isinstance(record, dict) and isinstance(record.get("text"), str):
        return record["text"]
    raise BadInput(f"{path}: record {number} has no \"text\" string field")


def token_windows(token_lists: list[list[int]], max_length: int) -> list[np.ndarray]:
    """One stream of every record's tokens cut into windows of `max_length` (the last may be shorter)."""
    stream = np.asarray([token for tokens in token_lists for token in tokens], dtype=np.int64)
    windows = [stream[start:start + max_length] for start in range(0, len(stream), max_length)]
    return [window for window in windows if len(window) >= 2]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


@dataclass
class Tally:
    """Running sums over windows."""

    positions: int = 0
    predicted: int = 0
    agree: int = 0
    kl_sum: float = 0.0
    candidate_nll: float = 0.0
    reference_nll: float = 0.0

    def add(self, window: np.ndarray, candidate_logits: np.ndarray, reference_logits: np.ndarray) -> None:
        targets = window[1:]
        for start in range(0, len(window), ROWS_PER_CHUNK):
            rows = slice(start, start + ROWS_PER_CHUNK)
            cand, ref = log_softmax(candidate_logits[rows]), log_softmax(reference_logits[rows])
            self.positions += len(cand)
            self.agree += int(np.sum(cand.argmax(-1) == ref.argmax(-1)))
            self.kl_sum += float(np.sum(np.exp(ref) * (ref - cand)))
            scored = targets[start:start + ROWS_PER_CHUNK]  # the last position has no next token
            index = np.arange(len(scored))
            self.candidate_nll -= float(np.sum(cand[index, scored]))
            self.reference_nll -= float(np.sum(ref[index, scored]))
            self.predicted += len(scored)


def validate_lm(candidate, reference, data, *, gates: LmGates = LmGates(), max_length: int | None = None,
                prompts: int = DEFAULT_PROMPTS, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                out_dir=None, record: bool = True, threads: int | None = None,
                trust_remote_code: bool = False, per_layer: bool = False, top: int = 10) -> LmValidation:
    """Compare the language model `candidate` with `reference` on the text file `data`; `per_layer`
    adds the error of the hidden states after every layer (toolkit.lm.per_layer)."""
    from toolkit.lm.sides import check_same_vocabulary, open_side

    gates.check()
    if per_layer:
        from toolkit.lm.per_layer import check_per_layer_supported

        check_per_layer_supported(candidate, top, reference)
    if prompts < 0 or max_new_tokens < 1:
        raise BadInput("--prompts must be >= 0 and --max-new-tokens >= 1")
    started = time.perf_counter()
    texts = read_texts(data)
    cand = open_side(candidate, "candidate", threads=threads, trust_remote_code=trust_remote_code)
    if cand.tokenizer is None:
        from toolkit.lm.folder import require_tokenizer

        require_tokenizer(cand.folder)
    ref = open_side(reference, "reference", threads=threads, trust_remote_code=trust_remote_code)
    check_same_vocabulary(cand, ref)
    context = min(filter(None, (cand.context, ref.context)), default=None)
    length = window_length(max_length, context)
    token_lists = [list(cand.tokenizer(text, add_special_tokens=True)["input_ids"]) for text in texts]
    windows = token_windows(token_lists, length)
    if not windows:
        raise BadInput(f"{data} tokenizes to fewer than 2 tokens: nothing to predict")
    tally = Tally()
    for number, window in enumerate(windows, start=1):
        cand_logits, ref_logits = cand.logits(window), ref.logits(window)
        if cand_logits.shape != ref_logits.shape:
            raise BadInput(f"the candidate gives {cand_logits.shape[-1]} logits a token and the reference "
                           f"{ref_logits.shape[-1]}: the vocabularies differ")
        tally.add(window, cand_logits, ref_logits)
        logger.debug("window %d/%d: %d tokens scored", number, len(windows), len(window))
    matches = greedy_matches(cand, ref, [t for t in token_lists if t][:prompts], max_new_tokens, context)
    report = LmValidation(
        candidate=str(candidate), reference=str(reference), data=str(data), candidate_kind=cand.kind,
        reference_kind=ref.kind, max_length=length, windows=len(windows), positions=tally.positions,
        predicted=tally.predicted, candidate_ppl=math.exp(tally.candidate_nll / tally.predicted),
        reference_ppl=math.exp(tally.reference_nll / tally.predicted), agreement=tally.agree / tally.positions,
        mean_kl=max(tally.kl_sum / tally.positions, 0.0), max_new_tokens=max_new_tokens, prompts=matches, gates=[])
    report.gates = gate_results(report, gates)
    if per_layer:
        from toolkit.lm.per_layer import lm_per_layer_error

        report.per_layer = lm_per_layer_error(candidate, reference, windows, top=top, threads=threads,
                                              trust_remote_code=trust_remote_code)
    report.seconds = time.perf_counter() - started
    if out_dir is not None:
        from toolkit.lm.report import write_lm_report

        write_lm_report(report, Path(out_dir))
    if record:
        record_in_manifest(Path(candidate), report)
    return report


def window_length(max_length: int | None, context: int | None) -> int:
    if max_length is None:
        return min(context or DEFAULT_MAX_LENGTH, DEFAULT_MAX_LENGTH)
    if max_length < 2:
        raise BadInput(f"--max-length {max_length}: a window needs at least 2 tokens")
    if context is not None and max_length > context:
        raise BadInput(f"--max-length {max_length} is longer than the model's context of {context} tokens")
    return max_length


def greedy_matches(cand, ref, prompt_lists: list[list[int]], max_new_tokens: int,
                   context: int | None) -> list[PromptMatch]:
    """Both sides continue each prompt greedily (no stop at end of sequence); the common prefix is the match."""
    if context is not None and max_new_tokens >= context:
        raise BadInput(f"--max-new-tokens {max_new_tokens} leaves no room for a prompt in the model's context "
                       f"of {context} tokens")
    results = []
    for prompt in prompt_lists:
        if context is not None:
            prompt = prompt[-(context - max_new_tokens):]  # keep the end: it is what the continuation follows
        expected, produced = ref.greedy(prompt, max_new_tokens), cand.greedy(prompt, max_new_tokens)
        match = next((i for i, (a, b) in enumerate(zip(expected, produced, strict=False)) if a != b),
                     min(len(expected), len(produced)))
        results.append(PromptMatch(len(prompt), len(expected), match,
                                   cand.tokenizer.decode(expected, skip_special_tokens=True),
                                   cand.tokenizer.decode(produced, skip_special_tokens=True)))
    return results


def gate_results(report: LmValidation, gates: LmGates) -> list[Gate]:
    found = []
    if gates.max_ppl_ratio is not None:
        found.append(Gate("perplexity ratio (candidate / reference)", report.ppl_ratio, gates.max_ppl_ratio, "<=",
                          report.ppl_ratio <= gates.max_ppl_ratio))
    if gates.min_agreement is not None:
        found.append(Gate("next-token top-1 agreement", report.agreement, gates.min_agreement, ">=",
                          report.agreement >= gates.min_agreement))
    if gates.max_kl is not None:
        found.append(Gate("mean KL(reference ‖ candidate)", report.mean_kl, gates.max_kl, "<=",
                          report.mean_kl <= gates.max_kl))
    if gates.min_full_match is not None and report.prompts:
        found.append(Gate("share of greedy continuations matching fully", report.full_match_share,
                          gates.min_full_match, ">=", report.full_match_share >= gates.min_full_match))
    return found


def record_in_manifest(candidate: Path, report: LmValidation) -> None:
    from toolkit.artifacts import read_manifest, update_manifest

    folder = candidate if candidate.is_dir() else candidate.parent
    if read_manifest(folder):
        update_manifest(folder, validation=report.manifest_record())
