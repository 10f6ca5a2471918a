"""Choose the next token from logits: greedy, or sampled with temperature, top-k and top-p."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from toolkit.errors import BadInput


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0  # 0 = greedy (argmax)
    top_k: int = 0  # 0 = no limit
    top_p: float = 1.0
    seed: int | None = None

    def check(self) -> None:
        if self.temperature < 0:
            raise BadInput(f"--temperature {self.temperature}: use 0 (greedy) or a positive number")
        if self.top_k < 0:
            raise BadInput(f"--top-k {self.top_k}: use 0 (no limit) or a positive number")
        if not 0 < self.top_p <= 1:
            raise BadInput(f"--top-p {self.top_p}: use a number in (0, 1]")


def next_token(logits: np.ndarray, sampling: Sampling, rng: np.random.Generator) -> int:
    if sampling.temperature == 0:
        return int(logits.argmax())  # the same index as the float64 copy below; why the method: KvDecoder.forward
    logits = np.asarray(logits, dtype=np.float64)
    scaled = logits / sampling.temperature
    order = np.argsort(-scaled, kind="stable")
    if sampling.top_k:
        order = order[: sampling.top_k]
    kept = scaled[order]
    probabilities = np.exp(kept - kept.max())
    probabilities /= probabilities.sum()
    if sampling.top_p < 1:
        cumulative = np.cumsum(probabilities)
        cut = int(np.searchsorted(cumulative, sampling.top_p)) + 1  # the smallest set reaching top_p
        order, probabilities = order[:cut], probabilities[:cut] / probabilities[:cut].sum()
    return int(order[rng.choice(len(order), p=probabilities)])
