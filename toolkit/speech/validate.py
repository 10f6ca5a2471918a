"""Compare an exported encoder-decoder's outputs with its original's: a speech model's transcripts on
a folder of WAV files, a T5-style text model's greedy outputs on a text file (one input a line).

The reference is the Hugging Face folder (transformers' greedy `generate` on the same features)
or another exported speech folder. Per clip the candidate's tokens are compared with the
reference's position by position over the longer of the two (a missing token is a miss):
token agreement is the share of positions that agree over all clips, exact match the share of
clips (or text inputs) whose tokens are identical. A text model's reference is the Hugging Face
folder (transformers' greedy `generate`) or another exported text folder.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolkit.errors import BadInput
from toolkit.speech.transcribe import DEFAULT_MAX_NEW_TOKENS, SpeechModel, read_clip

logger = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav",)
DEFAULT_TEXT_NEW_TOKENS = 32


@dataclass
class SpeechValidation:
    candidate: str
    reference: str
    data: str
    clips: int
    token_agreement: float
    exact_match_rate: float
    min_agreement: float | None
    min_exact_match: float | None
    per_clip: list = field(default_factory=list)
    kind: str = "speech"  # or "text" (T5-style: `clips` counts text inputs)

    @property
    def passed(self) -> bool:
        return not self.failures()

    def failures(self) -> list[str]:
        failed = []
        if self.min_agreement is not None and self.token_agreement < self.min_agreement:
            failed.append(f"token agreement {self.token_agreement:.4f} < {self.min_agreement}")
        if self.min_exact_match is not None and self.exact_match_rate < self.min_exact_match:
            failed.append(f"exact-match rate {self.exact_match_rate:.4f} < {self.min_exact_match}")
        return failed

    def to_dict(self) -> dict:
        count = {"clips": self.clips} if self.kind == "speech" else {"inputs": self.clips}
        return {"kind": self.kind, "candidate": self.candidate, "reference": self.reference, "data": self.data,
                **count, "token_agreement": self.token_agreement,
                "exact_match_rate": self.exact_match_rate,
                "gates": {"min_agreement": self.min_agreement, "min_exact_match": self.min_exact_match},
                "passed": self.passed, ("per_clip" if self.kind == "speech" else "per_input"): self.per_clip}

    def summary(self) -> str:
        what = "clips" if self.kind == "speech" else "inputs"
        lines = [f"{self.candidate} vs {self.reference} on {self.data} ({self.clips} {what})",
                 f"  token agreement {self.token_agreement:.4f}, exact match {self.exact_match_rate:.2%}"]
        lines += [f"  [FAIL] {line}" for line in self.failures()]
        lines.append("PASSED" if self.passed else "FAILED")
        return "\n".join(lines)


def wav_files(data) -> list[Path]:
    path = Path(str(data))
    if path.is_file() and path.suffix.lower() in AUDIO_SUFFIXES:
        return [path]
    if not path.is_dir():
        raise BadInput(f"{path}: give a WAV file or a folder of WAV files")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise BadInput(f"{path}: no .wav files in it")
    return files


def agreement(candidate: list[int], reference: list[int]) -> tuple[int, int]:
    """(positions that agree, positions compared): over the longer sequence, a missing token misses."""
    length = max(len(candidate), len(reference))
    same = sum(1 for a, b in zip(candidate, reference, strict=False) if a == b)
    return same, length


def reference_tokens(reference, features: np.ndarray, max_new_tokens: int, model_cache: dict) -> list[int]:
    """Greedy tokens of the reference: an exported speech folder, or transformers on the HF folder."""
    from toolkit.speech.folder import is_speech_artifact, is_speech_folder

    path = Path(str(reference))
    if is_speech_artifact(path):
        opened = model_cache.setdefault("onnx", SpeechModel(path))
        return opened.greedy(features, max_new_tokens)[1]
    if not is_speech_folder(path):
        raise BadInput(f"--reference {reference}: give the Hugging Face speech folder or an exported speech folder")
    import torch

    from toolkit.sources.hf import check_folder, load_model

    if "hf" not in model_cache:
        model_cache["hf"] = load_model(path, check_folder(path, trust_remote_code=False), trust_remote_code=False)
    with torch.no_grad():
        out = model_cache["hf"].generate(torch.from_numpy(features), max_new_tokens=max_new_tokens)
    tokens = [int(t) for t in out[0].tolist()]
    eos = model_cache["hf"].generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    # Whisper's generate returns the tokens after its decoder prompt, ending with end-of-text
    return tokens[: next((i for i, t in enumerate(tokens) if t in eos), len(tokens))]


def validate_speech(candidate, reference, data, *, min_agreement: float | None = 0.99,
                    min_exact_match: float | None = None,
                    max_new_tokens: int | None = None) -> SpeechValidation:
    """Token agreement and exact-match rate of `candidate` (an exported encoder-decoder) against `reference`
    on `data`: WAV clips for a speech model, a text file for a T5-style one."""
    speech = SpeechModel(candidate)
    if not speech.speech:
        return validate_text(speech, reference, data, min_agreement=min_agreement, min_exact_match=min_exact_match,
                             max_new_tokens=max_new_tokens or DEFAULT_TEXT_NEW_TOKENS)
    max_new_tokens = max_new_tokens or DEFAULT_MAX_NEW_TOKENS
    files = wav_files(data)
    cache: dict = {}
    same_total = compared_total = exact = 0
    per_clip = []
    for file in files:
        features = speech.features(read_clip(file, speech.rate))
        prompt, tokens, _ = speech.greedy(features, max_new_tokens)
        budget = min(max_new_tokens, speech.max_target - len(prompt))  # what both sides can decode
        expected = reference_tokens(reference, features, budget, cache)
        same, compared = agreement(tokens, expected)
        same_total, compared_total = same_total + same, compared_total + compared
        exact += tokens == expected
        per_clip.append({"file": str(file), "tokens": len(tokens), "reference_tokens": len(expected),
                         "agreeing": same, "exact": tokens == expected})
    rate = same_total / compared_total if compared_total else 1.0
    return SpeechValidation(str(candidate), str(reference), str(data), len(files), round(rate, 6),
                            round(exact / len(files), 6), min_agreement, min_exact_match, per_clip)


def validate_text(seq2seq: SpeechModel, reference, data, *, min_agreement: float | None,
                  min_exact_match: float | None, max_new_tokens: int) -> SpeechValidation:
    """A T5-style model: greedy outputs for every line of `data`, compared token by token."""
    from toolkit.lm.validate import read_texts

    texts = read_texts(data)
    cache: dict = {}
    same_total = compared_total = exact = 0
    per_input = []
    for text in texts:
        ids = list(seq2seq.tokenizer(text, add_special_tokens=True)["input_ids"])
        if not ids:
            raise BadInput(f"{data}: the input {text[:40]!r} tokenizes to no tokens")
        prompt, tokens, _ = seq2seq.greedy_text(ids, max_new_tokens)
        budget = min(max_new_tokens, seq2seq.max_target - len(prompt))
        expected = text_reference_tokens(reference, ids, budget, cache)
        same, compared = agreement(tokens, expected)
        same_total, compared_total = same_total + same, compared_total + compared
        exact += tokens == expected
        per_input.append({"input": text[:80], "tokens": len(tokens), "reference_tokens": len(expected),
                          "agreeing": same, "exact": tokens == expected})
    rate = same_total / compared_total if compared_total else 1.0
    return SpeechValidation(str(seq2seq.folder), str(reference), str(data), len(texts), round(rate, 6),
                            round(exact / len(texts), 6), min_agreement, min_exact_match, per_input, kind="text")


def text_reference_tokens(reference, ids: list[int], max_new_tokens: int, model_cache: dict) -> list[int]:
    """Greedy tokens of a text reference: an exported T5-style folder, or transformers on the HF folder."""
    from toolkit.speech.folder import is_seq2seq_artifact, is_seq2seq_folder, is_speech_folder

    path = Path(str(reference))
    if is_seq2seq_artifact(path) and not is_speech_folder(path):
        opened = model_cache.setdefault("onnx", SpeechModel(path))
        return opened.greedy_text(ids, max_new_tokens)[1]
    if not is_seq2seq_folder(path) or is_speech_folder(path):
        raise BadInput(f"--reference {reference}: give the Hugging Face text encoder-decoder folder (T5) or an "
                       "exported one")
    import torch

    from toolkit.sources.hf import check_folder, load_model

    if "hf" not in model_cache:
        model_cache["hf"] = load_model(path, check_folder(path, trust_remote_code=False), trust_remote_code=False)
    model = model_cache["hf"]
    inputs = torch.tensor([ids])
    with torch.no_grad():
        out = model.generate(inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=max_new_tokens,
                             do_sample=False, num_beams=1)
    tokens = [int(t) for t in out[0].tolist()[1:]]  # after the decoder start token
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    return tokens[: next((i for i, t in enumerate(tokens) if t in eos), len(tokens))]
