"""Generate text from an exported language model, one token at a time (a generator: stream as it comes)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np

from toolkit.errors import BadInput
from toolkit.lm.model import LanguageModel, open_lm
from toolkit.lm.sampling import Sampling, next_token

logger = logging.getLogger(__name__)


def generate_ids(lm: LanguageModel, prompt_ids: list[int], max_new_tokens: int,
                 sampling: Sampling = Sampling(), stop_at_eos: bool = True) -> Iterator[int]:
    """Token ids after `prompt_ids`: one prefill, then one decode step per token, KV cache kept."""
    if max_new_tokens < 1:
        raise BadInput(f"--max-new-tokens {max_new_tokens}: ask for at least 1 token")
    sampling.check()
    rng = np.random.default_rng(sampling.seed)
    if lm.context is not None:
        max_new_tokens = min(max_new_tokens, lm.context - len(prompt_ids))
    lm.decoder.reserve(len(prompt_ids) + max_new_tokens)
    lm.decoder.reset()
    logits = lm.decoder.forward(prompt_ids, copy=False)  # read at once, by next_token
    for produced in range(max_new_tokens):
        token = next_token(logits, sampling, rng)
        yield token
        if (stop_at_eos and token in lm.eos_ids) or produced == max_new_tokens - 1:
            return
        logits = lm.decoder.forward([token], copy=False)


def generate(model, prompt: str, *, max_new_tokens: int = 32, temperature: float = 0.0, top_k: int = 0,
             top_p: float = 1.0, seed: int | None = None, threads: int | None = None) -> Iterator[str]:
    """Text pieces as they are produced (greedy unless `temperature` > 0); `model` is a folder or an open LM."""
    lm = model if isinstance(model, LanguageModel) else open_lm(model, threads=threads)
    sampling = Sampling(temperature, top_k, top_p, seed)
    sampling.check()
    prompt_ids = lm.encode(prompt)
    produced: list[int] = []
    shown = ""
    for token in generate_ids(lm, prompt_ids, max_new_tokens, sampling):
        if token in lm.eos_ids:
            break
        produced.append(token)
        text = lm.tokenizer.decode(produced, skip_special_tokens=True)
        if text.startswith(shown) and len(text) > len(shown):
            yield text[len(shown):]
            shown = text
