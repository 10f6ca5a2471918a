"""Hugging Face model folders: code the folder would run, pickle weights, safetensors headers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from toolkit.errors import BadInput
from toolkit.safety.files import parse_json_limited, read_limited
from toolkit.safety.pickle import TRUST_PICKLE_HINT
from toolkit.safety.safetensors import check_safetensors

HF_CONFIG_FILES = ("config.json", "tokenizer_config.json", "preprocessor_config.json", "processor_config.json",
                   "generation_config.json")
_PICKLE_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


@dataclass
class HfFolder:
    """What a Hugging Face model folder holds, as far as safety goes."""

    path: Path
    config: dict
    code_files: list[str] = field(default_factory=list)  # .py files it ships
    needs_remote_code: bool = False  # its config names classes in those files (auto_map)
    safetensors: list[str] = field(default_factory=list)
    pickle_weights: list[str] = field(default_factory=list)


def check_hf_folder(path: Path, trust_remote_code: bool = False, trust_pickle: bool = False) -> HfFolder:
    """Check a Hugging Face folder before transformers/optimum touch it.

    Refuses a folder whose config asks for its own code (auto_map) unless
    trust_remote_code, naming the .py files that would run; refuses pickle weights
    (pytorch_model.bin) when no safetensors exist unless trust_pickle; checks every
    safetensors header. Load with use_safetensors=True so nothing falls back to pickle.
    """
    path = Path(path)
    config_path = path / "config.json"
    if not config_path.is_file():
        raise BadInput(f"{path}: not a Hugging Face model folder (no config.json)")
    configs = {}
    for name in HF_CONFIG_FILES:
        if (path / name).is_file():
            configs[name] = parse_json_limited(read_limited(path / name), f"{path / name}")
    config = configs["config.json"]
    if not isinstance(config, dict):
        raise BadInput(f"{config_path}: not a JSON object")
    folder = HfFolder(path=path, config=config)
    folder.code_files = sorted(str(p.relative_to(path)) for p in path.rglob("*.py"))
    folder.needs_remote_code = any(isinstance(c, dict) and ("auto_map" in c or "custom_pipelines" in c)
                                   for c in configs.values())
    if folder.needs_remote_code and not trust_remote_code:
        files = ", ".join(folder.code_files) or "files it would fetch from the Hub"
        raise BadInput(f"refused: {path} wants to run its own code ({files}): read it, then pass "
                       f"--trust-remote-code if you trust it")
    folder.safetensors = sorted(str(p.relative_to(path)) for p in path.rglob("*.safetensors"))
    folder.pickle_weights = sorted(
        str(p.relative_to(path)) for p in path.rglob("*") if p.suffix in _PICKLE_WEIGHT_SUFFIXES and p.is_file())
    if not folder.safetensors and folder.pickle_weights and not trust_pickle:
        raise BadInput(f"refused: {path} has only pickle weights ({', '.join(folder.pickle_weights[:4])}), "
                       f"which can run code when loaded: {TRUST_PICKLE_HINT}")
    for name in folder.safetensors:
        check_safetensors(path / name)
    return folder
