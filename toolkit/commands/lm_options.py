"""The language-model flags of validate and quantize --mode auto, and those commands' language-model path.

A candidate that is an exported LM folder (or a Hugging Face causal-LM folder) is compared on
text, not on tensors: perplexity, next-token agreement, KL and greedy match (toolkit.lm.validate).
"""

from __future__ import annotations

import functools

import click

# (flag, click type, help); the defaults live in toolkit.lm.validate (LmGates and the validate_lm arguments)
FLAGS = (
    ("--max-ppl-ratio", click.FloatRange(min=0), "Language models: largest candidate/reference perplexity ratio "
     "(default 1.10)."),
    ("--max-kl", click.FloatRange(min=0), "Language models: largest mean KL(reference || candidate) over every "
     "position (default 0.10)."),
    ("--min-greedy-match", click.FloatRange(0, 1), "Language models: least share of greedy continuations that "
     "match the reference's fully (default: reported, not gated)."),
    ("--prompts", click.IntRange(min=0), "Language models: greedy continuations from the first N records "
     "(default 4)."),
    ("--max-new-tokens", click.IntRange(min=1), "Language models: tokens each greedy continuation runs for "
     "(default 16)."),
)
LM_DEFAULT_MIN_AGREEMENT = 0.90  # next-token agreement, where the classifier default (0.99) is too strict
LM_GATES = ("ppl", "kl", "greedy")  # extra --no-gate names


def lm_options(function):
    """Add the language-model flags; the command receives them as one `lm_options` dict."""
    names = [flag.removeprefix("--").replace("-", "_") for flag, *_ in FLAGS]

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        return function(*args, lm_options={name: kwargs.pop(name) for name in names}, **kwargs)

    wrapper.__click_params__ = list(getattr(function, "__click_params__", []))
    for flag, kind, help_text in reversed(FLAGS):
        wrapper = click.option(flag, type=kind, default=None, help=help_text)(wrapper)
    return wrapper


def is_language_model(path) -> bool:
    from pathlib import Path

    if not path or not Path(path).exists():
        return False
    from toolkit.lm.sides import is_language_model as check

    return check(path)


def refuse_lm_flags(options: dict | None) -> None:
    """The language-model flags on a model that is not one: say so rather than ignore them."""
    from toolkit.errors import BadInput

    given = ["--" + name.replace("_", "-") for name, value in (options or {}).items() if value is not None]
    if given:
        raise BadInput(f"{', '.join(given)}: for a language model (an exported LM folder) only")


def lm_gates(options: dict, min_agreement: float | None, no_gates=()):
    """LmGates from the flags; --min-agreement keeps the LM default unless the user gave it."""
    from toolkit.lm.validate import LmGates

    defaults = LmGates()
    agreement_given = click.get_current_context().get_parameter_source("min_agreement") \
        not in (click.core.ParameterSource.DEFAULT, None)
    if min_agreement is None or not agreement_given:
        min_agreement = LM_DEFAULT_MIN_AGREEMENT

    def pick(value, default):
        return default if value is None else value

    return LmGates(
        max_ppl_ratio=None if "ppl" in no_gates else pick(options.get("max_ppl_ratio"), defaults.max_ppl_ratio),
        min_agreement=None if "agreement" in no_gates else min_agreement,
        max_kl=None if "kl" in no_gates else pick(options.get("max_kl"), defaults.max_kl),
        min_full_match=None if "greedy" in no_gates else options.get("min_greedy_match"),
    )


def greedy_arguments(options: dict) -> dict:
    from toolkit.lm.validate import DEFAULT_MAX_NEW_TOKENS, DEFAULT_PROMPTS

    prompts, new_tokens = options.get("prompts"), options.get("max_new_tokens")
    return {"prompts": DEFAULT_PROMPTS if prompts is None else prompts,
            "max_new_tokens": DEFAULT_MAX_NEW_TOKENS if new_tokens is None else new_tokens}


def validate_language_model(candidate, reference, data, *, options: dict, min_agreement, no_gates, max_length,
                            out_dir, record: bool, unused: dict | None = None, per_layer: bool = False,
                            top: int = 10) -> None:
    """`edgeward validate` for a language model: print the figures, exit 1 on a failed gate.
    `unused`: flags of tensor validation given a value, refused rather than quietly ignored."""
    from toolkit.console import emit
    from toolkit.errors import BadInput, GateFailed

    given = [flag for flag, value in (unused or {}).items() if value]
    if given:
        raise BadInput(f"{', '.join(given)}: not for a language model (it is validated on text on this host)")
    from toolkit.lm.report import summary_text
    from toolkit.lm.validate import validate_lm

    report = validate_lm(candidate, reference, data, gates=lm_gates(options, min_agreement, no_gates),
                         max_length=max_length, out_dir=out_dir, record=record, per_layer=per_layer, top=top,
                         **greedy_arguments(options))
    emit(report.to_dict(), summary_text(report, out_dir))
    if not report.passed:
        raise GateFailed(f"validation failed: {report.failure_line()}")


def auto_language_model(model, out_dir, data, *, options: dict, min_agreement, max_length, force: bool) -> None:
    """`edgeward quantize --mode auto` for a language model: keep the smallest mode that passes the LM gates."""
    from toolkit.console import emit
    from toolkit.errors import BadInput, GateFailed
    from toolkit.lm.auto import auto_quantize_lm

    if not data:
        raise BadInput("--mode auto on a language model needs --data TEXT (a .txt or .jsonl file to compare on)")
    result = auto_quantize_lm(model, out_dir, data, gates=lm_gates(options, min_agreement), max_length=max_length,
                              force=force, **greedy_arguments(options))
    emit(result.to_dict(), result.summary())
    if not result.passed:
        raise GateFailed(result.failure_line())
