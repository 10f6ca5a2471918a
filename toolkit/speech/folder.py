"""What makes a folder an encoder-decoder (Whisper speech, T5-style text), and the files its artifact carries."""

from __future__ import annotations

import shutil
from pathlib import Path

from toolkit.lm.folder import SIDE_FILES, read_config

# model types whose with-past export was run and checked here, and optimum's task for each
SPEECH_TYPES = ("whisper",)
TEXT_TYPES = ("t5",)
TASKS = {"whisper": "automatic-speech-recognition-with-past", "t5": "text2text-generation-with-past"}
ENCODER_FILE = "encoder_model.onnx"
DECODER_FILE = "decoder_model.onnx"
DECODER_WITH_PAST_FILE = "decoder_with_past_model.onnx"
GRAPH_FILES = (ENCODER_FILE, DECODER_FILE, DECODER_WITH_PAST_FILE)
SPEECH_SIDE_FILES = (*SIDE_FILES, "preprocessor_config.json", "normalizer.json")


def is_speech_folder(folder) -> bool:
    """A Hugging Face folder (config.json) of a speech encoder-decoder such as Whisper."""
    folder = Path(folder)
    if not folder.is_dir() or not (folder / "config.json").is_file():
        return False
    return read_config(folder).get("model_type") in SPEECH_TYPES


def is_seq2seq_folder(folder) -> bool:
    """A Hugging Face folder of an encoder-decoder exported here: Whisper or T5-style text."""
    folder = Path(folder)
    if not folder.is_dir() or not (folder / "config.json").is_file():
        return False
    return read_config(folder).get("model_type") in TASKS


def is_seq2seq_artifact(path) -> bool:
    """A folder written by `export_speech_onnx`: the encoder and both decoders beside the config."""
    folder = Path(path)
    return folder.is_dir() and all((folder / name).is_file() for name in GRAPH_FILES) and is_seq2seq_folder(folder)


def is_speech_artifact(path) -> bool:
    """An exported Whisper: the encoder and both decoders beside a speech config."""
    return is_seq2seq_artifact(path) and is_speech_folder(path)


def copy_speech_side_files(source: Path, target: Path) -> list[str]:
    copied = []
    for name in SPEECH_SIDE_FILES:
        path = Path(source) / name
        if path.is_file() and not (Path(target) / name).exists():
            shutil.copyfile(path, Path(target) / name)
            copied.append(name)
    return copied
