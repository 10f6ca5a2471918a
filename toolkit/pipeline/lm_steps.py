"""The pipeline's stage actions for a language model (a recipe whose source is a causal LM).

The step kinds are the usual ones (distill, export, quantize, validate, bench, breakeven); for a
language model the actions in toolkit.pipeline hand their step here: distillation on text
(toolkit.lm.distill), validation on text with the LM gates (toolkit.lm.validate), tokens per
second (toolkit.lm.bench), and a per-token break-even from the bench record (toolkit.costs).
Export and quantization need nothing of their own: they already take LM folders.
"""

from __future__ import annotations

import logging
from pathlib import Path

from toolkit.artifacts import atomic_write_json
from toolkit.errors import BadInput

logger = logging.getLogger(__name__)

LM_GATES = ("max_ppl_ratio", "min_agreement", "max_kl")
BENCH_PROMPT_TOKENS = 16
BENCH_NEW_TOKENS = 32


def is_language_model_source(spec) -> bool:
    from toolkit.lm.folder import is_causal_lm
    from toolkit.lm.tiny import BUILTIN_SPEC

    return str(spec) == BUILTIN_SPEC or is_causal_lm(spec)


def is_language_model_artifact(model_path) -> bool:
    from toolkit.lm.folder import is_lm_artifact

    return is_lm_artifact(model_path)


def distill_step(step) -> dict:
    from toolkit.lm.distill import distill_lm
    from toolkit.lm.tiny import language_model_folder

    options = dict(step.options)
    teacher = language_model_folder(options.pop("teacher"))
    student, data = options.pop("student"), options.pop("data", None)
    if data is None:
        raise BadInput("distill: a language-model teacher needs 'data:', a text file (.txt lines or .jsonl)")
    options.pop("patience", None)  # no early stopping: the steps are fixed, as the baseline's
    result = distill_lm(teacher, student, data, out_dir=step.folder, force=True, **options)
    summary = result.summary()
    return {"model_path": str(step.folder), "kind": "language-model", "perplexity": summary["perplexity"],
            "parameters": summary["parameters"], "layers": summary["layers"], "steps": result.steps}


def validate_step(step, model_path: str) -> dict:
    from toolkit.lm.tiny import language_model_folder
    from toolkit.lm.validate import LmGates, validate_lm

    options = step.options
    reference = language_model_folder(options["reference"]) or options["reference"]
    gates = LmGates(**{name: options[name] for name in LM_GATES if name in options})
    report = validate_lm(Path(model_path).parent, reference, options["data"], gates=gates, out_dir=step.folder)
    figures = report.figures()
    return {"passed": report.passed, "kind": "language-model", "perplexity": figures["candidate_perplexity"],
            "reference_perplexity": figures["reference_perplexity"], "perplexity_ratio": figures["perplexity_ratio"],
            "agreement": figures["top1_agreement"], "mean_kl": figures["mean_kl"],
            "greedy_mean_match_tokens": figures["greedy_mean_match_tokens"],
            "failed": report.failure_line() or None, "report": str(step.folder / "report.md")}


def bench_step(step, model_path: str) -> dict:
    from toolkit.lm.bench import bench_lm

    options = step.options
    record = bench_lm(Path(model_path).parent, prompt_tokens=BENCH_PROMPT_TOKENS, new_tokens=BENCH_NEW_TOKENS,
                      runs=1 if options.get("estimate") else options["runs"], device=options["device"],
                      estimate=bool(options.get("estimate")))
    step.folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(step.folder / "bench.json", record)
    figures = record.get("language_model") or {}
    return {"device": options["device"], "estimate": bool(options.get("estimate")), "kind": "language-model",
            "p50_ms": None, "ttft_ms": figures.get("ttft_ms_p50", figures.get("ttft_ms")),
            "decode_tokens_per_s": figures.get("decode_tokens_per_s"), "bench_json": str(step.folder / "bench.json")}


def breakeven_step(step, done: dict) -> dict:
    """Price each validated language model from its bench record (per token: prefill + decode time
    against the scenario's tokens in and out); the one that passed its gates and breaks even first wins."""
    from toolkit.costs import breakeven
    from toolkit.costs.report import write_reports

    scenario = step.options["scenario"]
    priced = {}
    for name, summary in done.items():
        validation = done.get(f"validate-{name}") or {}
        if not (summary and summary.get("model_path") and validation.get("kind") == "language-model"):
            continue
        benches = [bench for bench_name, bench in done.items() if bench and bench.get("bench_json")
                   and bench_name in (f"bench-{name}-{bench['device']}", f"estimate-{name}-{bench['device']}")]
        benches.sort(key=lambda bench: bench["estimate"])  # a measured bench before an estimate
        if benches:
            priced[name] = (breakeven(scenario, bench=[benches[0]["bench_json"]]), benches[0], validation)
    if not priced:
        raise BadInput("breakeven: no language model was both validated and benched, so nothing can be priced")

    def rank(item):
        result, bench, validation = item[1]
        month = result.breakeven_month
        return (not validation["passed"], bench["estimate"], float("inf") if month is None else float(month))

    chosen_name, (chosen, bench, validation) = min(priced.items(), key=rank)
    paths = {kind: str(path) for kind, path in write_reports(chosen, step.folder).items()}
    per_model = {name: {"breakeven_month": _number(result.breakeven_month), "priced_device": bench["device"],
                        "latency_ms": _number(result.inputs.latency_ms),
                        "on_device_share": _number(result.effective_share),
                        "passed": validation["passed"]}
                 for name, (result, bench, validation) in priced.items()}
    month = chosen.breakeven_month
    recommendation = (f"{chosen_name} on {bench['device']}: break-even in month {float(month):.1f}"
                      if month is not None else f"{chosen_name}: no break-even within the horizon")
    return {"breakeven_month": _number(chosen.breakeven_month), "chosen_model": chosen_name,
            "chosen_device": bench["device"], "recommendation": recommendation, "reports": paths,
            "per_model": per_model}


def _number(value) -> float | None:
    return None if value is None else float(value)
