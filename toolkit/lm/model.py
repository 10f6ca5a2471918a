"""Open an exported language model: the ONNX decoder, its tokenizer and its config, from one folder."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import BadInput
from toolkit.lm.decoder import KvDecoder, open_session
from toolkit.lm.folder import context_length, head_dim, read_config, require_tokenizer

logger = logging.getLogger(__name__)


@dataclass
class LanguageModel:
    folder: Path
    model_path: Path
    decoder: KvDecoder
    tokenizer: object  # a transformers tokenizer
    config: dict
    eos_ids: frozenset

    @property
    def context(self) -> int | None:
        return self.decoder.context

    def encode(self, prompt: str) -> list[int]:
        ids = list(self.tokenizer(prompt, add_special_tokens=True)["input_ids"])
        if not ids:
            raise BadInput("the prompt is empty: it tokenizes to no tokens")
        if self.context is not None and len(ids) >= self.context:
            raise BadInput(f"the prompt is {len(ids)} tokens, longer than the model's context of "
                           f"{self.context} tokens: shorten it")
        return ids


def model_file(path: Path) -> tuple[Path, Path]:
    """(folder, model.onnx or model.tflite) from an artifact folder or the model file inside one."""
    path = Path(path)
    if path.is_dir():
        candidate = path / "model.onnx"
        if not candidate.is_file() and (path / "model.tflite").is_file():
            candidate = path / "model.tflite"
        if not candidate.is_file():
            raise BadInput(f"{path} holds no model.onnx: export a language model first (edgeward export DIR --to onnx)")
        return path, candidate
    if path.suffix.lower() not in (".onnx", ".tflite") or not path.is_file():
        raise BadInput(f"{path}: give an exported language model folder (or its model.onnx / model.tflite)")
    return path.parent, path


def open_lm(path, *, threads: int | None = None) -> LanguageModel:
    folder, onnx_path = model_file(Path(path))
    require_tokenizer(folder)
    config = read_config(folder)
    if not config:
        raise BadInput(f"{folder}: no config.json beside the model (the exported folder carries one)")
    tokenizer = load_tokenizer(folder)
    if onnx_path.suffix.lower() == ".tflite":  # LiteRT's prefill/decode signatures (toolkit.lm.litert_decoder)
        from toolkit.lm.litert_decoder import LiteRtDecoder, open_interpreter

        decoder = LiteRtDecoder(open_interpreter(onnx_path, threads))
    else:
        decoder = KvDecoder(open_session(onnx_path, threads), context=context_length(config),
                            head_dim=head_dim(config))
    eos = config.get("eos_token_id")
    eos_ids = set(eos if isinstance(eos, list) else [eos] if isinstance(eos, int) else [])
    if tokenizer.eos_token_id is not None:
        eos_ids.add(int(tokenizer.eos_token_id))
    return LanguageModel(folder, onnx_path, decoder, tokenizer, config, frozenset(eos_ids))


def load_tokenizer(folder: Path):
    from toolkit.common.quiet import quiet
    from toolkit.common.text import first_line

    with quiet():
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
        except Exception as error:
            raise BadInput(f"{folder}: the tokenizer cannot be loaded ({first_line(error)})") from None
