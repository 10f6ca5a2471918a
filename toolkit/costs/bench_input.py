"""Reading `edgeward bench --json` output for the cost model.

The bench result names the model (path, sha256, name), the device, the latency
percentiles and the device profile's power. Keys are read leniently (a few spellings
each) so a bench file from a slightly older or newer Edgeward still fills the figures.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from toolkit.errors import BadInput


@dataclass(frozen=True)
class LanguageModelFigures:
    """What a language-model bench measured: the time to the first token for a prompt of
    `prompt_tokens`, and the decode rate after it."""

    ttft_ms: Decimal
    prompt_tokens: int
    decode_tokens_per_s: Decimal


@dataclass(frozen=True)
class SpeechFigures:
    """What a speech bench measured: audio seconds transcribed per second of processing."""

    real_time_factor: Decimal
    audio_seconds: Decimal


@dataclass
class BenchRecord:
    path: str
    model_name: str | None
    model_sha256: str | None
    model_path: str | None
    device: str | None
    device_kind: str | None
    latency_ms: Decimal | None
    power_w: Decimal | None
    power_source: str | None
    model_bytes: int | None
    estimate: bool
    latency_p95_ms: Decimal | None = None
    language_model: LanguageModelFigures | None = None
    speech: SpeechFigures | None = None

    def model_label(self) -> str:
        bits = [self.model_name or (Path(self.model_path).name if self.model_path else "an unnamed model")]
        if self.model_sha256:
            bits.append(f"sha256 {self.model_sha256[:12]}…")
        return " ".join([bits[0]] + [f"({bit})" for bit in bits[1:]])

    def names(self) -> set[str]:
        """Every name this model answers to: its name, file stem, artifact folder name."""
        found = set()
        if self.model_name:
            found.add(self.model_name.lower())
        if self.model_path:
            path = Path(self.model_path)
            found.add(path.stem.lower())
            found.add(path.name.lower())
            if path.stem.lower() == "model" and path.parent.name:
                found.add(path.parent.name.lower())
        return found


def read_bench(path: str | Path) -> BenchRecord:
    """A BenchRecord from a bench JSON file; BadInput naming the file when it cannot serve."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"--bench {path}: file not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BadInput(f"--bench {path}: not a JSON file ({error})") from None
    if isinstance(data, dict) and isinstance(data.get("results"), list) and len(data["results"]) == 1:
        data = data["results"][0]
    if not isinstance(data, dict):
        raise BadInput(f"--bench {path}: expected the JSON object printed by `edgeward bench --json`")
    return parse_bench(data, str(path))


def parse_bench(data: dict, label: str) -> BenchRecord:
    from toolkit.bench import is_emulated

    if is_emulated(data):
        device = data.get("device")
        name = device.get("name") if isinstance(device, dict) else device
        raise BadInput(f"--bench {label}: timed on the emulated board {name or '?'}; emulated timings are not "
                       f"device timings and cannot be priced (bench a real device, or use --estimate)")
    model = data.get("model")
    model_name = model_sha = model_path = None
    model_bytes = None
    if isinstance(model, dict):
        model_name = model.get("name")
        model_sha = model.get("sha256")
        model_path = model.get("path") or model.get("file")
        model_bytes = model.get("bytes") or model.get("size_bytes")
    elif isinstance(model, str):
        model_path = model
    model_sha = model_sha or data.get("model_sha256") or data.get("sha256")
    model_bytes = model_bytes or data.get("model_bytes") or data.get("size_bytes")

    device = data.get("device")
    device_kind = None
    profile = data.get("profile") if isinstance(data.get("profile"), dict) else {}
    if isinstance(device, dict):
        profile = {**device, **profile}
        device_kind = device.get("kind")
        device = device.get("name")
    device_kind = device_kind or profile.get("kind") or data.get("device_kind")

    language_model = _language_model(data, label)
    latency = _latency(data)
    if latency is None and language_model is None:
        raise BadInput(f"--bench {label}: no latency_ms (p50) in it; is it `edgeward bench --json` output?")
    if latency is not None and (latency <= 0 or latency > Decimal("1e7")):
        raise BadInput(f"--bench {label}: latency_ms p50 must be more than 0 and at most 1e7 (got {latency})")
    power, power_source = _power(data, profile)
    estimate = bool(data.get("estimate")) or data.get("measured") is False or data.get("mode") == "estimate"
    return BenchRecord(
        path=label,
        model_name=str(model_name) if model_name else None,
        model_sha256=str(model_sha).lower() if model_sha else None,
        model_path=str(model_path) if model_path else None,
        device=str(device) if device else None,
        device_kind=str(device_kind) if device_kind else None,
        latency_ms=latency,
        power_w=power,
        power_source=power_source,
        model_bytes=int(model_bytes) if isinstance(model_bytes, int | float) and model_bytes > 0 else None,
        estimate=estimate,
        latency_p95_ms=_p95(data),
        language_model=language_model,
        speech=_speech(data, label),
    )


def _language_model(data: dict, label: str) -> LanguageModelFigures | None:
    """The `language_model` record of `edgeward bench --json` on an LM folder, if there is one."""
    record = data.get("language_model")
    if not isinstance(record, dict):
        return None
    ttft = _number(record.get("ttft_ms_p50", record.get("ttft_ms")))  # measured p50, or an estimate
    rate = _number(record.get("decode_tokens_per_s"))
    prompt = record.get("prompt_tokens")
    if ttft is None or rate is None or not isinstance(prompt, int) or isinstance(prompt, bool):
        raise BadInput(f"--bench {label}: its language_model record lacks ttft_ms_p50, decode_tokens_per_s or "
                       "prompt_tokens")
    if ttft <= 0 or rate <= 0 or prompt < 1:
        raise BadInput(f"--bench {label}: language_model figures must be positive (ttft {ttft} ms, "
                       f"{rate} tokens/s, {prompt}-token prompt)")
    return LanguageModelFigures(ttft_ms=ttft, prompt_tokens=prompt, decode_tokens_per_s=rate)


def _speech(data: dict, label: str) -> SpeechFigures | None:
    """The `speech` record of `edgeward bench --json` on a speech folder, if there is one."""
    record = data.get("speech")
    if not isinstance(record, dict):
        return None
    factor, seconds = _number(record.get("real_time_factor")), _number(record.get("audio_seconds"))
    if factor is None or seconds is None or factor <= 0 or seconds <= 0:
        raise BadInput(f"--bench {label}: its speech record needs a positive real_time_factor and audio_seconds")
    return SpeechFigures(real_time_factor=factor, audio_seconds=seconds)


def _number(value) -> Decimal | None:
    if isinstance(value, dict):
        value = value.get("value", value.get("estimate"))
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = Decimal(str(value))
    except ArithmeticError:
        return None
    return number if number.is_finite() else None


def _latency(data: dict) -> Decimal | None:
    latency = data.get("latency_ms")
    if isinstance(latency, dict):
        for key in ("p50", "median", "p50_ms", "mean"):
            if latency.get(key) is not None:
                return _number(latency[key])
    elif latency is not None:
        return _number(latency)
    for key in ("latency_ms_p50", "p50_ms", "median_ms"):
        if data.get(key) is not None:
            return _number(data[key])
    estimate = data.get("estimate")
    if isinstance(estimate, dict):
        return _latency(estimate)
    return None


def _p95(data: dict) -> Decimal | None:
    latency = data.get("latency_ms")
    if isinstance(latency, dict) and latency.get("p95") is not None:
        value = _number(latency["p95"])
        return value if value is not None and 0 < value < Decimal("1e7") else None
    return None


def _power(data: dict, profile: dict) -> tuple[Decimal | None, str | None]:
    """Active power: the device's typical (else max) draw, from the bench record or its profile."""
    from toolkit.costs.device_figures import profile_power

    top = data.get("power_w")
    if top is not None and not isinstance(top, dict):
        return _number(top), "bench power_w"
    for holder in (data, profile):
        value, source = profile_power(holder)
        if value is not None:
            return value, f"device power {source}"
    return None, None
