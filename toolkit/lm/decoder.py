"""Run an exported decoder with its KV cache: one prefill over the prompt, then one token a step.

The graph is optimum's text-generation-with-past export: inputs `input_ids`, `attention_mask`,
`position_ids` (where the family takes them) and `past_key_values.N.key/value`; outputs `logits`
and `present.N.key/value`, which become the next step's past.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from toolkit.errors import BadInput, Unsupported

logger = logging.getLogger(__name__)

PAST_PREFIX = "past_key_values."
PRESENT_PREFIX = "present."
ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(bfloat16)": np.float32}


def open_session(model_path: Path, threads: int | None = None):
    """An onnxruntime CPU session on a checked ONNX file."""
    import onnxruntime as ort

    from toolkit.safety.onnx import check_onnx_file

    check_onnx_file(model_path)
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


class KvDecoder:
    """One sequence (batch 1) through a with-past decoder; `past_length` tokens are cached."""

    def __init__(self, session, context: int | None = None, head_dim: int | None = None):
        self.session = session
        self.context = context
        self.head_dim = head_dim  # for a cache input whose last axis is symbolic (onnxruntime-genai's graphs)
        self.input_names = [item.name for item in session.get_inputs()]
        self.past_specs = {item.name: item for item in session.get_inputs() if item.name.startswith(PAST_PREFIX)}
        if "input_ids" not in self.input_names or not self.past_specs:
            raise Unsupported("the ONNX model is not a decoder with a KV cache (no input_ids or past_key_values.* "
                              "inputs): export the Hugging Face folder with edgeward export DIR --to onnx")
        self.output_names = [item.name for item in session.get_outputs()]
        self.reset()

    def reset(self) -> None:
        self.past = {name: self._empty(spec) for name, spec in self.past_specs.items()}
        self.past_length = 0

    def _empty(self, spec) -> np.ndarray:
        shape = [1 if i == 0 else (dim if isinstance(dim, int) else 0) for i, dim in enumerate(spec.shape)]
        if len(shape) == 4 and shape[3] == 0 and self.head_dim:
            shape[3] = self.head_dim
        if len(shape) != 4:
            raise Unsupported(f"unexpected KV cache input {spec.name} of shape {spec.shape}")
        return np.zeros(shape, dtype=ORT_TYPES.get(spec.type, np.float32))

    def _feeds(self, ids: np.ndarray, past: dict, past_length: int) -> dict:
        total = past_length + ids.shape[1]
        feeds = {"input_ids": ids, **past}
        if "attention_mask" in self.input_names:
            feeds["attention_mask"] = np.ones((1, total), dtype=np.int64)
        if "position_ids" in self.input_names:
            feeds["position_ids"] = np.arange(past_length, total, dtype=np.int64).reshape(1, -1)
        return feeds

    def forward(self, token_ids) -> np.ndarray:
        """Feed new tokens after the cached ones; returns the logits of the last one (vocab,)."""
        ids = np.asarray(token_ids, dtype=np.int64).reshape(1, -1)
        if ids.shape[1] == 0:
            raise BadInput("the prompt is empty: it tokenizes to no tokens")
        total = self.past_length + ids.shape[1]
        if self.context is not None and total > self.context:
            raise BadInput(f"{total} tokens do not fit the model's context of {self.context} tokens")
        outputs = dict(zip(self.output_names, self.session.run(None, self._feeds(ids, self.past, self.past_length)),
                           strict=True))
        for name in self.past:
            self.past[name] = outputs[PRESENT_PREFIX + name[len(PAST_PREFIX):]]
        self.past_length = total
        return outputs["logits"][0, -1]

    def all_logits(self, token_ids) -> np.ndarray:
        """The logits at every position of `token_ids` from an empty cache (seq, vocab); the cache is untouched."""
        ids = np.asarray(token_ids, dtype=np.int64).reshape(1, -1)
        empty = {name: self._empty(spec) for name, spec in self.past_specs.items()}
        return self.session.run(["logits"], self._feeds(ids, empty, 0))[0][0]
