"""The two sides of a language-model comparison: an exported ONNX decoder or a Hugging Face folder.

Both give the logits at every position of a token window and a greedy continuation of a prompt,
so validation treats them alike. The tokenizer always comes from the candidate's folder; the
reference's tokenizer (where it has one) must have the same vocabulary.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from toolkit.errors import BadInput

logger = logging.getLogger(__name__)


def is_language_model(path) -> bool:
    """An exported LM folder (or its model.onnx), or a Hugging Face causal-LM folder with weights."""
    from toolkit.lm.folder import is_causal_lm, is_lm_artifact

    path = Path(path)
    return is_lm_artifact(path) or (is_causal_lm(path) and any(path.glob("*.safetensors")))


class OnnxSide:
    """An exported decoder run by onnxruntime through its KV cache."""

    kind = "onnx"

    def __init__(self, path, threads: int | None = None):
        from toolkit.lm.model import open_lm

        self.lm = open_lm(path, threads=threads)
        self.kind = "tflite" if self.lm.model_path.suffix.lower() == ".tflite" else "onnx"
        self.folder = self.lm.folder
        self.context = self.lm.context
        self.tokenizer = self.lm.tokenizer

    def logits(self, ids: np.ndarray) -> np.ndarray:
        return self.lm.decoder.all_logits(ids)

    def greedy(self, prompt_ids: list[int], count: int) -> list[int]:
        from toolkit.lm.generate import generate_ids

        return list(generate_ids(self.lm, list(prompt_ids), count, stop_at_eos=False))


class TorchSide:
    """A Hugging Face causal-LM folder run by transformers (float, eager attention)."""

    kind = "hf"

    def __init__(self, path, trust_remote_code: bool = False):
        from toolkit.lm.folder import context_length, has_tokenizer
        from toolkit.lm.model import load_tokenizer
        from toolkit.sources.hf import check_folder, load_model

        self.folder = Path(path)
        config = check_folder(self.folder, trust_remote_code=trust_remote_code)
        self.model = load_model(self.folder, config, trust_remote_code=trust_remote_code)
        self.context = context_length(config)
        self.tokenizer = load_tokenizer(self.folder) if has_tokenizer(self.folder) else None

    def logits(self, ids: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            out = self.model(input_ids=torch.from_numpy(np.asarray(ids, dtype=np.int64)[None]), use_cache=False)
        return out.logits[0].float().numpy()

    def greedy(self, prompt_ids: list[int], count: int) -> list[int]:
        import torch

        produced: list[int] = []
        with torch.no_grad():
            out = self.model(input_ids=torch.tensor([list(prompt_ids)]), use_cache=True)
            for step in range(count):
                token = int(torch.argmax(out.logits[0, -1]))
                produced.append(token)
                if step < count - 1:
                    out = self.model(input_ids=torch.tensor([[token]]), past_key_values=out.past_key_values,
                                     use_cache=True)
        return produced


def open_side(path, role: str, *, threads: int | None = None, trust_remote_code: bool = False):
    """An OnnxSide or TorchSide for `path`; anything else is bad input naming the role."""
    from toolkit.lm.folder import is_lm_artifact

    path = Path(path)
    if is_lm_artifact(path):
        return OnnxSide(path, threads=threads)
    if is_language_model(path):
        return TorchSide(path, trust_remote_code=trust_remote_code)
    raise BadInput(f"{role} {path} is not a language model: give an exported LM folder (edgeward export DIR "
                   "--to onnx) or a Hugging Face ...ForCausalLM folder")


def check_same_vocabulary(candidate, reference) -> None:
    """Token ids mean the same on both sides, or the comparison is meaningless: refuse a mismatch."""
    if reference.tokenizer is None:
        return
    mine, theirs = candidate.tokenizer.get_vocab(), reference.tokenizer.get_vocab()
    if mine != theirs:
        differ = len(set(mine.items()) ^ set(theirs.items()))
        raise BadInput(f"the candidate's tokenizer ({len(mine)} tokens) and the reference's ({len(theirs)} tokens) "
                       f"differ ({differ} token-id pairs not shared): compare models with the same vocabulary")
