"""Hugging Face model folders: `config.json` + safetensors, never remote code unasked.

The torch side wraps the model so it takes named tensors and returns plain tensors
(logits, or the last hidden state), with eager attention so torch.export and
litert-torch can trace it. Text models get int64 `input_ids`, `attention_mask` and, where
the model uses it, `token_type_ids`, shaped [batch, sequence] (1 x 128 unless pinned).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from toolkit.common.tensors import TensorSpec
from toolkit.errors import BadInput, Unsupported
from toolkit.sources.source import Source

# architecture suffix -> optimum task, and the outputs optimum names for it
TASKS = (
    ("ForSequenceClassification", "text-classification", ("logits",)),
    ("ForTokenClassification", "token-classification", ("logits",)),
    ("ForQuestionAnswering", "question-answering", ("start_logits", "end_logits")),
    ("ForMaskedLM", "fill-mask", ("logits",)),
    ("ForCausalLM", "text-generation", ("logits",)),
    ("ForImageClassification", "image-classification", ("logits",)),
    ("Model", "feature-extraction", ("last_hidden_state",)),
)


def check_folder(folder: Path, *, trust_remote_code: bool) -> dict:
    """The parsed config.json, after refusing remote code and pickled weights."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadInput(f"{folder}/config.json is not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise BadInput(f"{folder}/config.json is not a Hugging Face config")
    code = sorted(p.name for p in folder.glob("*.py"))
    if (code or config.get("auto_map")) and not trust_remote_code:
        shipped = ", ".join(code) if code else "auto_map in config.json"
        raise BadInput(f"{folder} ships its own code ({shipped}): pass --trust-remote-code if you trust its author")
    from toolkit.safety.hf import check_hf_folder

    check_hf_folder(folder, trust_remote_code=trust_remote_code)  # safetensors headers, pickle-only folders
    if not any(folder.glob("*.safetensors")):
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        if pickles:
            raise BadInput(
                f"{folder}: pickled weights ({', '.join(pickles)}) are refused (unpickling can run code): "
                "re-save with model.save_pretrained(folder, safe_serialization=True)"
            )
        raise BadInput(f"{folder}: no *.safetensors weights beside config.json")
    return config


def task_for(config: dict) -> tuple[str, tuple[str, ...]]:
    architecture = (config.get("architectures") or [""])[0]
    for suffix, task, outputs in TASKS:
        if architecture.endswith(suffix):
            return task, outputs
    return "auto", ("logits",)


def load_hf(folder: Path, pins: dict, *, trust_remote_code: bool) -> Source:
    config_dict = check_folder(folder, trust_remote_code=trust_remote_code)
    task, output_names = task_for(config_dict)
    model = load_model(folder, config_dict, trust_remote_code=trust_remote_code)
    config = model.config
    inputs = _inputs_for(model, config, folder)
    limit = getattr(config, "max_position_embeddings", None)
    if inputs[0].name == "input_ids" and limit and limit < 128 and not pins:
        pins.update({spec.name: [1, int(limit)] for spec in inputs})  # sequence 128 would not fit
    wrapper = HfWrapper(model, [spec.name for spec in inputs], list(output_names))
    meta = {"task": task, "vocab_size": getattr(config, "vocab_size", None), "model_type": config.model_type,
            "trust_remote_code": trust_remote_code, "output_names": list(output_names)}
    return Source("hf", str(folder), path=folder, module=wrapper, inputs=inputs, meta=meta)


def load_model(folder: Path, config: dict, *, trust_remote_code: bool):
    from toolkit.common.quiet import quiet

    with quiet():
        import transformers

        architecture = (config.get("architectures") or [""])[0]
        model_class = getattr(transformers, architecture, None) if architecture else None
        if model_class is None:
            model_class = transformers.AutoModel
        try:
            model = model_class.from_pretrained(
                str(folder), local_files_only=True, use_safetensors=True, attn_implementation="eager",
                trust_remote_code=trust_remote_code,
            )
        except Exception as error:
            text = str(error).strip().splitlines()
            # a model type this transformers does not know is a valid folder Edgeward cannot handle
            kind = Unsupported if "does not recognize this architecture" in str(error) else BadInput
            raise kind(f"{folder}: transformers cannot load it ({(text[0] if text else type(error).__name__)[:200]})") from None
    return model.eval()


def _inputs_for(model, config, folder: Path) -> list[TensorSpec]:
    import inspect

    parameters = inspect.signature(model.forward).parameters
    if "input_ids" in parameters and getattr(config, "vocab_size", None):
        inputs = [TensorSpec("input_ids", ["batch_size", "sequence_length"], "int64")]
        if "attention_mask" in parameters:
            inputs.append(TensorSpec("attention_mask", ["batch_size", "sequence_length"], "int64"))
        if "token_type_ids" in parameters and getattr(config, "type_vocab_size", 0):
            inputs.append(TensorSpec("token_type_ids", ["batch_size", "sequence_length"], "int64"))
        return inputs
    if "pixel_values" in parameters:
        size = getattr(config, "image_size", None)
        size = size if isinstance(size, list | tuple) else [size, size]
        channels = getattr(config, "num_channels", 3)
        if not size[0]:
            raise BadInput(f"{folder}: the config gives no image_size; pass --input-shape pixel_values=1x3xHxW")
        return [TensorSpec("pixel_values", ["batch_size", channels, int(size[0]), int(size[1])], "float32")]
    if "input_features" in parameters and getattr(config, "is_encoder_decoder", False):
        raise Unsupported(f"{folder}: a {config.model_type} speech encoder-decoder is not one graph: export the folder "
                          "itself (edgeward export DIR --to onnx) for an encoder plus a cached decoder")
    raise Unsupported(f"{folder}: a {config.model_type} model takes neither input_ids nor pixel_values; not supported yet")


class HfWrapper(torch.nn.Module):
    """Named tensors in, plain tensors out: what torch.export, ONNX and LiteRT can trace."""

    def __init__(self, model, input_names: list[str], output_names: list[str]):
        super().__init__()
        self.model = model
        self.input_names = input_names
        self.output_names = output_names
        self.config = model.config

    def forward(self, *args, **kwargs):
        named = dict(zip(self.input_names, args, strict=False))
        named.update(kwargs)
        result = self.model(**named, return_dict=True)
        values = [result[name] for name in self.output_names if name in result]
        if not values:
            values = [result[0]]
        return values[0] if len(values) == 1 else tuple(values)
