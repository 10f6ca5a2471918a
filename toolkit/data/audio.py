"""A folder of WAV files → audio features, through the folder's feature extractor.

The standard library's `wave` reads 8/16/32-bit PCM; channels are averaged to mono and the
signal resampled (linear) to the extractor's rate. With `preprocessor=DIR` the Hugging Face
feature extractor there (`AutoFeatureExtractor`, local files only) makes the model's inputs;
without one the raw waveform, padded to the longest file, is the input `input_values`.
Class sub-folders give labels, as for images.
"""

from __future__ import annotations

import logging
import wave
from pathlib import Path

import numpy as np

from toolkit.data.dataset import Dataset
from toolkit.data.problems import labels_from_names, report_bad
from toolkit.data.spec import AUDIO_SUFFIXES, DataSpec
from toolkit.errors import BadInput, missing_library

logger = logging.getLogger(__name__)

DEFAULT_RATE = 16000


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Mono float32 samples in [-1, 1] and the sampling rate."""
    with wave.open(str(path), "rb") as reader:
        width, channels, rate = reader.getsampwidth(), reader.getnchannels(), reader.getframerate()
        frames = reader.readframes(reader.getnframes())
    if width == 1:
        samples = (np.frombuffer(frames, np.uint8).astype(np.float32) - 128) / 128
    elif width == 2:
        samples = np.frombuffer(frames, "<i2").astype(np.float32) / 32768
    elif width == 4:
        samples = np.frombuffer(frames, "<i4").astype(np.float32) / 2147483648
    else:
        raise ValueError(f"{8 * width}-bit samples")
    if samples.size == 0:
        raise ValueError("no samples")
    return samples.reshape(-1, channels).mean(axis=1), rate


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return samples
    count = max(int(round(len(samples) * target / rate)), 1)
    return np.interp(np.linspace(0, len(samples) - 1, count), np.arange(len(samples)), samples).astype(np.float32)


def load_feature_extractor(folder: str):
    try:
        from transformers import AutoFeatureExtractor
    except ImportError:
        raise missing_library("transformers") from None
    try:
        return AutoFeatureExtractor.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:  # a broken config raises any
        raise BadInput(f"{folder}: no feature extractor Edgeward can load ({str(error).splitlines()[0]})") from None


def load_audio(spec: DataSpec) -> Dataset:
    folder = Path(spec.path)
    if not folder.is_dir():
        raise BadInput(f"{folder}: not a folder of WAV files")
    files = sorted(file for file in folder.rglob("*") if file.is_file() and file.suffix.lower() in AUDIO_SUFFIXES)
    files = files[: spec.int("limit")]
    extractor = load_feature_extractor(spec.get("preprocessor")) if spec.get("preprocessor") else None
    rate = int(getattr(extractor, "sampling_rate", DEFAULT_RATE) or DEFAULT_RATE)
    waves, classes, bad = [], [], []
    for file in files:
        try:
            samples, file_rate = read_wav(file)
        except (OSError, EOFError, ValueError, wave.Error) as error:
            bad.append((str(file.relative_to(folder)), str(error) or type(error).__name__))
            continue
        waves.append(resample(samples, file_rate, rate))
        classes.append(file.parent.name if file.parent != folder else None)
    report_bad(str(folder), bad, len(waves))
    max_length = spec.int("max_length")
    if extractor is None:
        length = max_length or max(len(samples) for samples in waves)
        batch = np.zeros((len(waves), length), np.float32)
        for row, samples in enumerate(waves):
            batch[row, : min(length, len(samples))] = samples[:length]
        inputs = {spec.get("input", "input_values"): batch}
    else:
        inputs = extract_features(extractor, waves, rate, max_length)
    labels, names = labels_from_names(classes)
    meta = {"kind": "audio", "sampling_rate": rate, "classes": names, "skipped": [name for name, _ in bad]}
    logger.info("data %s: %d WAV files → %s", folder, len(waves), {k: list(v.shape) for k, v in inputs.items()})
    return Dataset(inputs, labels, name=str(folder), meta=meta)


def extract_features(extractor, waves: list[np.ndarray], rate: int, max_length: int | None) -> dict[str, np.ndarray]:
    options: dict = {"sampling_rate": rate, "return_tensors": "np"}
    if max_length:
        options.update(padding="max_length", max_length=max_length, truncation=True)
    elif not hasattr(extractor, "n_samples"):  # Whisper pads to its 30 s window by itself
        options["padding"] = "longest"
    try:
        features = extractor(waves, **options)
    except (ValueError, TypeError) as error:
        raise BadInput(f"the feature extractor refused the audio ({str(error).splitlines()[0]})") from None
    arrays = {}
    for name, array in features.items():
        array = np.asarray(array)
        arrays[name] = array.astype(np.float32) if array.dtype == np.float64 else array
        if array.dtype.kind in "iub" and name == "attention_mask":
            arrays[name] = array.astype(np.int64)
    return arrays
