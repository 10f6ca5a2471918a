"""Hugging Face encoder classifiers as teachers, and `layers:N` students cut from them.

The student is DistilBERT-style: the teacher's config with fewer layers, its encoder
layer i initialised from teacher layer i*k (k = teacher layers // N), and everything
else (embeddings, pooler, classifier) copied. It keeps the teacher's tokenizer files,
so it is a drop-in, smaller model for the same inputs. Loading is safe by default:
safetensors only, no remote code, eager attention (which both exporters can trace).
"""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path

from toolkit.common.text import first_line
from toolkit.errors import BadInput, Unsupported, missing_library

# Files that make up a tokenizer; copied from the teacher's folder to the student's.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
)
# The ModuleList that holds an encoder's layers, as it appears in state_dict keys:
# bert.encoder.layer.3.…, distilbert.transformer.layer.3.…, model.layers.3.…, h.3.…
_LAYER_KEY = re.compile(r"^(.*?\b(?:layer|layers|h|block|blocks)\.)(\d+)\.(.+)$")


def is_hf_folder(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / "config.json").is_file()


def is_hf_model(module) -> bool:
    """True for a transformers PreTrainedModel, without importing transformers."""
    return any(cls.__name__ == "PreTrainedModel" for cls in type(module).__mro__)


def load_classifier(folder: str | Path):
    """A sequence classifier from a local folder: safetensors only, no remote code."""
    try:
        from transformers import AutoModelForSequenceClassification
    except ImportError:
        raise missing_library("transformers") from None
    from toolkit.sources.hf import check_folder

    folder = Path(folder)
    check_folder(folder, trust_remote_code=False)  # no shipped code, safetensors only, sane headers
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(folder), trust_remote_code=False, use_safetensors=True, attn_implementation="eager", local_files_only=True
        )
    except ValueError as error:
        raise BadInput(f"{folder}: not a Hugging Face sequence classifier ({first_line(error)})") from None
    except OSError as error:
        raise BadInput(f"{folder}: cannot load it ({first_line(error)})") from None
    return model.eval()


def forward_names(model) -> list[str]:
    """The tensor inputs the model's forward takes that tokenizers produce."""
    import inspect

    accepted = inspect.signature(model.forward).parameters
    return [name for name in ("input_ids", "attention_mask", "token_type_ids") if name in accepted]


def layer_student(teacher, layers: int):
    """A `layers`-layer copy of `teacher`, its layers taken from every k-th teacher layer."""
    config = copy.deepcopy(teacher.config)
    total = getattr(config, "num_hidden_layers", None)
    if not isinstance(total, int):
        raise Unsupported(f"{type(teacher).__name__}: its config has no num_hidden_layers, so layers:N cannot apply")
    if not 1 <= layers < total:
        raise BadInput(f"layers:{layers} does not fit a {total}-layer teacher: give 1 <= N < {total}")
    step = total // layers
    chosen = [index * step for index in range(layers)]
    config.num_hidden_layers = layers
    student = type(teacher)(config)
    teacher_state = teacher.state_dict()
    state, matched = {}, 0
    for key in student.state_dict():
        match = _LAYER_KEY.match(key)
        source = key
        if match:
            source = f"{match[1]}{chosen[int(match[2])]}.{match[3]}"
            matched += 1
        state[key] = teacher_state[source].detach().clone()
    if not matched:
        raise Unsupported(f"{type(teacher).__name__}: cannot find its encoder layers to copy")
    student.load_state_dict(state)
    student.edgeward_layers = chosen  # recorded in the manifest
    return student.eval()


def save_student(student, folder: Path, teacher_folder: Path | None) -> list[str]:
    """save_pretrained as safetensors, plus the teacher's tokenizer files. Returns what was copied."""
    student.save_pretrained(str(folder), safe_serialization=True)
    copied = []
    if teacher_folder is not None:
        for name in TOKENIZER_FILES:
            if (Path(teacher_folder) / name).is_file():
                shutil.copyfile(Path(teacher_folder) / name, folder / name)
                copied.append(name)
    return copied
