"""What makes a folder a causal language model, and the side files an LM artifact carries."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from toolkit.errors import BadInput

# The families whose with-past ONNX export was exported and run here (greedy output equal to
# transformers'); optimum may accept more, which are tried but not promised.
CHECKED_FAMILIES = ("llama", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3", "gpt2")
# Files beside the model that generation needs: the config (context length, KV layout) and the tokenizer.
SIDE_FILES = ("config.json", "generation_config.json", "genai_config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")


def read_config(folder: Path) -> dict:
    try:
        config = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return config if isinstance(config, dict) else {}


def is_causal_lm(folder) -> bool:
    """A Hugging Face folder whose architecture is a `...ForCausalLM` (decoder-only language model)."""
    folder = Path(folder)
    if not folder.is_dir() or not (folder / "config.json").is_file():
        return False
    architecture = (read_config(folder).get("architectures") or [""])[0]
    return isinstance(architecture, str) and architecture.endswith(("ForCausalLM", "LMHeadModel"))


def has_tokenizer(folder: Path) -> bool:
    return any((Path(folder) / name).is_file() for name in TOKENIZER_FILES)


def require_tokenizer(folder: Path) -> None:
    if not has_tokenizer(folder):
        raise BadInput(f"{folder}: no tokenizer (tokenizer.json, tokenizer.model or vocab.json): "
                       "save one beside the model with tokenizer.save_pretrained(folder)")


def copy_side_files(source: Path, target: Path) -> list[str]:
    """Copy the config and tokenizer files that exist in `source` into `target`; returns their names."""
    copied = []
    for name in SIDE_FILES:
        path = Path(source) / name
        if path.is_file() and not (Path(target) / name).exists():
            shutil.copyfile(path, Path(target) / name)
            copied.append(name)
    return copied


def context_length(config: dict) -> int | None:
    """The longest sequence the model was built for (positions), if the config says."""
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = config.get(key) or (config.get("text_config") or {}).get(key)
        if isinstance(value, int) and value > 0:
            return value
    return None


LM_MODEL_FILES = ("model.onnx", "model.tflite")  # an exported LM: onnxruntime's graph or LiteRT's signatures


def is_lm_artifact(path) -> bool:
    """An exported language model: a folder (or its model.onnx / model.tflite) with a causal-LM config
    and a tokenizer."""
    path = Path(path)
    folder = path.parent if path.suffix.lower() in (".onnx", ".tflite") else path
    return (any((folder / name).is_file() for name in LM_MODEL_FILES) and is_causal_lm(folder)
            and has_tokenizer(folder))


def head_dim(config: dict) -> int | None:
    """The size of one attention head: `head_dim` where the config says (Gemma, Qwen3), else hidden / heads."""
    text = config.get("text_config") or {}
    explicit = config.get("head_dim") or text.get("head_dim")
    if isinstance(explicit, int) and explicit > 0:
        return explicit
    hidden = config.get("hidden_size") or config.get("n_embd") or text.get("hidden_size")
    heads = config.get("num_attention_heads") or config.get("n_head") or text.get("num_attention_heads")
    if isinstance(hidden, int) and isinstance(heads, int) and heads > 0:
        return hidden // heads
    return None
