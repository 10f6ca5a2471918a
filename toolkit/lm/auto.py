"""`auto` for a language model: try the decoder modes from the smallest and keep the first that passes the LM gates.

    from toolkit.lm.auto import auto_quantize_lm
    result = auto_quantize_lm("exported/qwen2-onnx", "exported/qwen2-auto", "text.txt")

The tries: int4 weight-only with blocks of 128, 64 and 32, dynamic int8, fp16. All are built
(in a temporary folder), then validated against the float folder on the text (toolkit.lm.validate)
from the smallest file up; the first that passes is the smallest that passes, and only it is
written to `out_dir`, atomically. Tries never validated are listed without figures.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.common.text import first_line
from toolkit.errors import BadInput, EdgewardError
from toolkit.lm.validate import DEFAULT_MAX_NEW_TOKENS, DEFAULT_PROMPTS, LmGates

logger = logging.getLogger(__name__)

# (label, quantize mode, options); the search ranks them by the size they give
TRIES = (
    ("int4-block128", "int4-weight", {"block_size": 128}),
    ("int4-block64", "int4-weight", {"block_size": 64}),
    ("int4-block32", "int4-weight", {"block_size": 32}),
    ("dynamic-int8", "dynamic-int8", {}),
    ("fp16", "fp16", {}),
)


@dataclass
class LmTry:
    label: str
    mode: str
    options: dict
    size_bytes: int | None = None
    size_ratio: float | None = None
    passed: bool = False
    figures: dict = field(default_factory=dict)
    failed_gates: str | None = None
    error: str | None = None
    validated: bool = False

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def line(self) -> str:
        if self.error:
            return f"{self.label}: not built ({self.error})"
        if not self.validated:
            return f"{self.label}: {self.size_ratio:.2f}x, not validated (a smaller one passed)"
        verdict = "pass" if self.passed else f"FAIL ({self.failed_gates})"
        return (f"{self.label}: {self.size_ratio:.2f}x, ppl ratio {self.figures.get('perplexity_ratio')}, "
                f"agreement {self.figures.get('top1_agreement')}, KL {self.figures.get('mean_kl')}: {verdict}")


@dataclass
class LmAutoResult:
    model: str
    data: str
    tries: list[LmTry]
    kept: LmTry | None
    out_dir: Path | None
    seconds: float

    @property
    def passed(self) -> bool:
        return self.kept is not None

    def failure_line(self) -> str:
        return (f"no mode of {', '.join(t.label for t in self.tries)} passes the language-model gates on "
                f"{self.data}: loosen a bar (--max-ppl-ratio, --min-agreement, --max-kl) or keep the float model")

    def to_dict(self) -> dict:
        return {"kind": "language-model", "model": self.model, "data": self.data, "passed": self.passed,
                "kept": self.kept.label if self.kept else None, "out_dir": str(self.out_dir) if self.out_dir else None,
                "tries": [t.to_dict() for t in self.tries], "seconds": round(self.seconds, 3)}

    def summary(self) -> str:
        lines = [f"auto (language model) {self.model} on {self.data}:"]
        lines += [f"  {t.line()}" for t in self.tries]
        lines.append(f"kept {self.kept.label}: {self.out_dir}" if self.kept else "nothing passed")
        return "\n".join(lines)


def auto_quantize_lm(model, out_dir, data, *, gates: LmGates = LmGates(), max_length: int | None = None,
                     prompts: int = DEFAULT_PROMPTS, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                     force: bool = False, tries=TRIES) -> LmAutoResult:
    """Quantize the exported LM folder `model` with the smallest mode that passes `gates` on the text `data`."""
    from toolkit.artifacts import check_writable
    from toolkit.lm.folder import is_lm_artifact
    from toolkit.lm.validate import read_texts

    model = Path(model)
    if not is_lm_artifact(model):
        raise BadInput(f"{model} is not an exported language model: export it first (edgeward export DIR --to onnx)")
    folder = model if model.is_dir() else model.parent
    out_dir = Path(out_dir) if out_dir else folder.with_name(f"{folder.name}-auto")
    check_writable(out_dir, force)
    gates.check()
    read_texts(data)  # bad text is refused before any quantization
    out_dir.absolute().parent.mkdir(parents=True, exist_ok=True)  # the scratch folder goes beside it
    started = time.perf_counter()
    done: list[LmTry] = []
    kept = None
    with tempfile.TemporaryDirectory(prefix=".lm-auto-", dir=out_dir.absolute().parent) as scratch:
        built = {label: build(folder, Path(scratch) / label, label, mode, options) for label, mode, options in tries}
        # validate from the smallest file up: the first that passes is the smallest that passes (the usual
        # order int4-128 < 64 < 32 < int8 < fp16 does not hold where a matrix is narrower than a block)
        ranked = sorted(built.values(), key=lambda pair: (pair[1] is None, pair[0].size_bytes or 0))
        for attempt, model_dir in ranked:
            if model_dir is not None:
                judge(attempt, model_dir, folder, data, gates=gates, max_length=max_length, prompts=prompts,
                      max_new_tokens=max_new_tokens)
            done.append(attempt)
            logger.info("try %d/%d: %s", len(done), len(tries), attempt.line())
            if attempt.passed:
                kept = attempt
                keep(model_dir, out_dir, force, folder, data, attempt, done)
                break
        done += [attempt for attempt, _ in ranked if all(attempt is not seen for seen in done)]
    return LmAutoResult(str(model), str(data), done, kept, out_dir.absolute() if kept else None,
                        time.perf_counter() - started)


def build(folder: Path, target: Path, label: str, mode: str, options: dict) -> tuple[LmTry, Path | None]:
    from toolkit.quantize import quantize

    attempt = LmTry(label, mode, dict(options))
    try:
        result = quantize(folder, mode, target, **options)
    except EdgewardError as error:  # a mode the model cannot take is a try that failed, not the end
        attempt.error = first_line(error)
        return attempt, None
    attempt.size_bytes, attempt.size_ratio = result.size_bytes, round(result.size_ratio, 4)
    return attempt, result.out_dir


def judge(attempt: LmTry, model_dir: Path, folder: Path, data, *, gates: LmGates, **validation) -> None:
    from toolkit.lm.validate import validate_lm

    report = validate_lm(model_dir, folder, data, gates=gates, record=False, **validation)
    attempt.validated, attempt.passed, attempt.figures = True, report.passed, report.figures()
    attempt.failed_gates = None if report.passed else report.failure_line()


def keep(built: Path, out_dir: Path, force: bool, folder: Path, data, attempt: LmTry, tries: list[LmTry]) -> None:
    """Copy the passing try into `out_dir` atomically, with the search recorded in its manifest."""
    from toolkit.artifacts import read_manifest, staged_folder, write_manifest

    with staged_folder(out_dir, force) as stage:
        for item in built.iterdir():
            if item.is_file():
                shutil.copy2(item, stage / item.name)
        manifest = read_manifest(stage)
        manifest["auto"] = {"kind": "language-model", "parent": str(folder.absolute()), "data": str(data),
                            "kept": attempt.label, "tries": [t.to_dict() for t in tries]}
        write_manifest(stage, manifest)
