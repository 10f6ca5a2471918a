"""Transcribe WAV audio with an exported speech encoder-decoder: encode once, then greedy decoding
through the cached decoder.

The decoder prompt and the suppressed tokens follow the folder's generation_config.json as
transformers' Whisper `generate` reads it: the start token, forced tokens (language, task),
the no-timestamps token where the config has one, `suppress_tokens` at every step and
`begin_suppress_tokens` at the first. A multilingual model with no forced language gets the
language whose token the first step finds likeliest, as transformers detects it.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolkit.errors import BadInput
from toolkit.speech.folder import (
    DECODER_FILE,
    DECODER_WITH_PAST_FILE,
    ENCODER_FILE,
    is_seq2seq_artifact,
    is_speech_folder,
)

logger = logging.getLogger(__name__)

DEFAULT_MAX_NEW_TOKENS = 128


@dataclass
class Transcript:
    tokens: list[int]  # generated tokens, after the decoder prompt, end-of-text excluded
    text: str
    audio_seconds: float
    prompt: list[int] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)  # features, encoder, decoder wall time

    def to_dict(self) -> dict:
        return {"text": self.text, "tokens": self.tokens, "prompt_tokens": self.prompt,
                "audio_seconds": round(self.audio_seconds, 3), "seconds": self.seconds}


class SpeechModel:
    """An exported encoder-decoder folder opened on onnxruntime (CPU): three graphs, the tokenizer and, for
    speech, the feature extractor. A T5-style text model (`speech` False) is fed token ids instead of audio."""

    def __init__(self, folder, threads: int | None = None):
        from toolkit.data.audio import load_feature_extractor
        from toolkit.lm.decoder import open_session
        from toolkit.lm.model import load_tokenizer

        folder = Path(folder)
        if not is_seq2seq_artifact(folder):
            raise BadInput(f"{folder}: not an exported encoder-decoder (encoder_model.onnx, decoder_model.onnx, "
                           "decoder_with_past_model.onnx and config.json): run edgeward export DIR --to onnx")
        self.folder = folder
        self.speech = is_speech_folder(folder)
        self.config = json.loads((folder / "config.json").read_text())
        self.generation = read_generation_config(folder)
        self.extractor = load_feature_extractor(str(folder)) if self.speech else None
        self.tokenizer = load_tokenizer(folder)
        self.encoder = open_session(folder / ENCODER_FILE, threads)
        self.decoder = open_session(folder / DECODER_FILE, threads)
        self.decoder_with_past = open_session(folder / DECODER_WITH_PAST_FILE, threads)
        self.past_names = [item.name for item in self.decoder_with_past.get_inputs()
                           if item.name.startswith("past_key_values.")]
        self.max_target = int(self.config.get("max_target_positions") or 448)
        self.rate = int(getattr(self.extractor, "sampling_rate", 16000) or 16000)

    def features(self, samples: np.ndarray) -> np.ndarray:
        out = self.extractor([samples], sampling_rate=self.rate, return_tensors="np")
        return np.asarray(out["input_features"], dtype=np.float32)

    def encode(self, features: np.ndarray) -> np.ndarray:
        return self.encoder.run(None, {"input_features": features.astype(np.float32)})[0]

    def encode_text(self, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(encoder states, attention mask) of a T5-style model's input tokens."""
        ids_array = np.asarray([ids], dtype=np.int64)
        mask = np.ones_like(ids_array)
        return self.encoder.run(None, {"input_ids": ids_array, "attention_mask": mask})[0], mask

    @staticmethod
    def _with_mask(session, feeds: dict, mask: np.ndarray | None) -> dict:
        """T5-style decoders also take the encoder's attention mask; Whisper's take none."""
        if mask is not None and any(item.name == "encoder_attention_mask" for item in session.get_inputs()):
            feeds["encoder_attention_mask"] = mask
        return feeds

    def first_step(self, prompt: list[int], hidden: np.ndarray,
                   mask: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
        """Logits of every prompt position (seq, vocab) and the cache (self- and cross-attention)."""
        names = [item.name for item in self.decoder.get_outputs()]
        ids = np.asarray([prompt], dtype=np.int64)
        feeds = self._with_mask(self.decoder, {"input_ids": ids, "encoder_hidden_states": hidden}, mask)
        outputs = dict(zip(names, self.decoder.run(None, feeds), strict=True))
        cache = {name: outputs["present." + name.removeprefix("past_key_values.")] for name in self.past_names}
        return outputs["logits"][0], cache

    def next_step(self, token: int, cache: dict, mask: np.ndarray | None = None) -> np.ndarray:
        """Logits after one more token; the self-attention part of `cache` is updated in place."""
        names = [item.name for item in self.decoder_with_past.get_outputs()]
        feeds = self._with_mask(self.decoder_with_past, {"input_ids": np.asarray([[token]], dtype=np.int64),
                                                         **cache}, mask)
        outputs = dict(zip(names, self.decoder_with_past.run(None, feeds), strict=True))
        for name in self.past_names:
            present = "present." + name.removeprefix("past_key_values.")
            if present in outputs:
                cache[name] = outputs[present]
        return outputs["logits"][0, -1]

    def decoder_prompt(self, hidden: np.ndarray) -> list[int]:
        config = self.generation
        start = config.get("decoder_start_token_id", self.config.get("decoder_start_token_id"))
        if start is None:
            raise BadInput(f"{self.folder}: no decoder_start_token_id in generation_config.json or config.json")
        prompt = [int(start)]
        forced = sorted(config.get("forced_decoder_ids") or [], key=lambda pair: pair[0])
        prompt += [int(token) for _, token in forced if token is not None]
        if config.get("is_multilingual") and not forced and config.get("lang_to_id"):
            logits, _ = self.first_step(prompt, hidden)
            languages = list(config["lang_to_id"].values())
            prompt.append(int(languages[int(np.argmax(logits[-1][languages]))]))
            task = (config.get("task_to_id") or {}).get("transcribe")
            if task is not None:
                prompt.append(int(task))
        no_timestamps = config.get("no_timestamps_token_id")
        if no_timestamps is not None and prompt[-1] != no_timestamps:
            prompt.append(int(no_timestamps))
        return prompt

    def eos_ids(self) -> set[int]:
        eos = self.generation.get("eos_token_id", self.config.get("eos_token_id"))
        return set(eos if isinstance(eos, list) else [eos] if eos is not None else [])

    def greedy(self, features: np.ndarray, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> tuple[list, list, dict]:
        """(decoder prompt, generated tokens, wall seconds per part) for one clip's features."""
        started = time.perf_counter()
        hidden = self.encode(features)
        return self.decode(hidden, None, max_new_tokens, started)

    def greedy_text(self, ids: list[int], max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> tuple[list, list, dict]:
        """(decoder prompt, generated tokens, wall seconds per part) for a T5-style model's input tokens."""
        started = time.perf_counter()
        hidden, mask = self.encode_text(ids)
        return self.decode(hidden, mask, max_new_tokens, started)

    def decode(self, hidden: np.ndarray, mask: np.ndarray | None, max_new_tokens: int,
               started: float) -> tuple[list, list, dict]:
        encoded = time.perf_counter()
        prompt = self.decoder_prompt(hidden)
        budget = min(max_new_tokens, self.max_target - len(prompt))
        suppress = [int(t) for t in self.generation.get("suppress_tokens") or []]
        begin_suppress = [int(t) for t in self.generation.get("begin_suppress_tokens") or []]
        eos = self.eos_ids()
        logits, cache = self.first_step(prompt, hidden, mask)
        logits = logits[-1]
        tokens: list[int] = []
        for step in range(budget):
            logits = logits.astype(np.float32, copy=True)
            logits[suppress] = -np.inf
            if step == 0:
                logits[begin_suppress] = -np.inf
            token = int(np.argmax(logits))
            if token in eos:
                break
            tokens.append(token)
            if step < budget - 1:
                logits = self.next_step(token, cache, mask)
        done = time.perf_counter()
        return prompt, tokens, {"encoder": round(encoded - started, 4), "decoder": round(done - encoded, 4)}

    def transcribe_samples(self, samples: np.ndarray, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> Transcript:
        if not self.speech:
            raise BadInput(f"{self.folder} is a text encoder-decoder: give --prompt TEXT, not audio")
        started = time.perf_counter()
        features = self.features(samples)
        featured = time.perf_counter()
        prompt, tokens, seconds = self.greedy(features, max_new_tokens)
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        seconds = {"features": round(featured - started, 4), **seconds,
                   "total": round(time.perf_counter() - started, 4)}
        return Transcript(tokens, text, len(samples) / self.rate, prompt, seconds)


def read_generation_config(folder: Path) -> dict:
    path = Path(folder) / "generation_config.json"
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadInput(f"{path}: not valid JSON ({error})") from None
    return config if isinstance(config, dict) else {}


def read_clip(path, rate: int) -> np.ndarray:
    """A WAV file as mono float32 samples at `rate`; BadInput naming the file when it cannot be read."""
    import wave

    from toolkit.data.audio import read_wav, resample

    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: no such WAV file")
    try:
        samples, file_rate = read_wav(path)
    except (OSError, EOFError, ValueError, wave.Error) as error:
        raise BadInput(f"{path}: not a readable PCM WAV file ({error})") from None
    return resample(samples, file_rate, rate)


def transcribe(model, audio, *, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, threads: int | None = None) -> Transcript:
    """Transcribe one WAV file; `model` is an exported speech folder or an open SpeechModel."""
    if max_new_tokens < 1:
        raise BadInput(f"--max-new-tokens {max_new_tokens}: ask for at least 1 token")
    speech = model if isinstance(model, SpeechModel) else SpeechModel(model, threads)
    return speech.transcribe_samples(read_clip(audio, speech.rate), max_new_tokens)


def generate_text(model, prompt: str, *, max_new_tokens: int = 32, threads: int | None = None) -> Transcript:
    """Greedy output of an exported T5-style text encoder-decoder for `prompt` (audio_seconds is 0)."""
    if max_new_tokens < 1:
        raise BadInput(f"--max-new-tokens {max_new_tokens}: ask for at least 1 token")
    seq2seq = model if isinstance(model, SpeechModel) else SpeechModel(model, threads)
    if seq2seq.speech:
        raise BadInput(f"{seq2seq.folder} is a speech model: give --audio FILE.wav, not --prompt")
    ids = list(seq2seq.tokenizer(prompt, add_special_tokens=True)["input_ids"])
    if not ids:
        raise BadInput("the prompt is empty: it tokenizes to no tokens")
    prompt_ids, tokens, seconds = seq2seq.greedy_text(ids, max_new_tokens)
    return Transcript(tokens, seq2seq.tokenizer.decode(tokens, skip_special_tokens=True), 0.0, prompt_ids, seconds)
