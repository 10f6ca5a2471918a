"""Fill a scenario's measured figures from `edgeward bench --json` files.

A bench on the edge device gives the latency (p50) and the device's power; a bench on
the cloud instance the scenario names gives its throughput (1000 / p50 ms, one stream,
a floor for a batched server). A bench of another model than the scenario names is
refused: its figures would price the wrong thing.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import PurePath

from toolkit.costs.bench_input import BenchRecord


def model_matches(model: dict, bench: BenchRecord) -> bool | None:
    """True/False when the bench says which model it measured, None when it cannot tell."""
    wanted_sha = (model.get("sha256") or "").lower()
    if wanted_sha and bench.model_sha256:
        shorter = min(len(wanted_sha), len(bench.model_sha256))
        return shorter >= 12 and wanted_sha[:shorter] == bench.model_sha256[:shorter]
    name = (model.get("name") or "").lower()
    if name:
        names = bench.names()
        if not names:
            return None
        return name in names or PurePath(name).stem in names or PurePath(name).name in names
    return None


def apply_benches(parser, model: dict | None) -> None:
    """Check each bench against the scenario and write its figures into parser.values."""
    if not parser.benches:
        return
    values, sources = parser.values, parser.sources
    wanted = model and (model.get("name") or model.get("sha256"))
    for bench in parser.benches:
        if model:
            match = model_matches(model, bench)
            if match is False:
                parser.problems.append(
                    f"--bench {bench.path} measured model {bench.model_label()} but the scenario names "
                    f"model {wanted!r}")
            elif match is None:
                parser.notes.append(f"--bench {bench.path} does not say which model it measured: not checked")
    edge_device = parser.device_name
    cloud_entry = parser._cloud_entry
    cloud_names = {cloud_entry.name.lower(), *(a.lower() for a in cloud_entry.aliases)} if cloud_entry else set()
    edge_benches, cloud_benches = [], []
    for bench in parser.benches:
        device = (bench.device or "").lower()
        if values.get("cloud_mode") == "instances" and (device in cloud_names or bench.device_kind == "cloud"):
            cloud_benches.append(bench)
        elif edge_device and bench.device and bench.device != edge_device:
            parser.problems.append(f"--bench {bench.path} was measured on {bench.device!r} but edge.device is "
                                   f"{edge_device!r}")
        else:
            edge_benches.append(bench)
    if len(edge_benches) > 1:
        devices = ", ".join(sorted({b.device or "?" for b in edge_benches}))
        parser.problems.append(f"--bench: {len(edge_benches)} files for the edge device ({devices}); give one, "
                               "or name edge.device")
        return
    if len(cloud_benches) > 1:
        parser.problems.append(f"--bench: {len(cloud_benches)} files for the cloud instance; give one")
        return
    if edge_benches:
        _edge(parser, edge_benches[0], edge_device)
    if cloud_benches:
        request = _request_ms(parser, cloud_benches[0])
        if request is not None:
            values["throughput_rps"] = Decimal(1000) / request[0]
            sources["throughput_rps"] = f"1000 / {request[0]} ms per request, one stream ({request[1]})"


def _edge(parser, bench: BenchRecord, edge_device: str | None) -> None:
    values, sources = parser.values, parser.sources
    how = "estimated" if bench.estimate else "measured"
    values["latency_kind"] = "estimate" if bench.estimate else "measured"
    request = _request_ms(parser, bench)
    if request is None:
        return
    values["latency_ms"], sources["latency_ms"] = request
    if bench.latency_p95_ms is not None and bench.latency_p95_ms >= bench.latency_ms:
        values["latency_p95_ms"] = bench.latency_p95_ms
        sources["latency_p95_ms"] = f"bench {bench.path}: p95 {how} on {bench.device or 'the device'}"
    scenario_power = sources.get("power_w", "").startswith("scenario")
    if bench.power_w is not None and not scenario_power:
        values["power_w"] = bench.power_w
        sources["power_w"] = f"bench {bench.path}: {bench.power_source}"
    elif "power_w" not in values and bench.device and not edge_device:
        from toolkit.costs.device_figures import device_profile
        from toolkit.errors import BadInput

        try:
            profile = device_profile(bench.device)
        except BadInput:
            profile = None
        if profile and profile.power_w is not None:
            values["power_w"] = profile.power_w
            sources["power_w"] = f"device profile {bench.device} power ({profile.power_source})"
    if "model_size_mb" not in values and bench.model_bytes:
        values["model_size_mb"] = Decimal(bench.model_bytes) / Decimal(1_000_000)
        sources["model_size_mb"] = f"bench {bench.path}: model file size"


def _request_ms(parser, bench: BenchRecord) -> tuple[Decimal, str] | None:
    """Milliseconds per request and how they were found. A language model answers a request
    in the prompt's prefill (the measured time to first token, scaled linearly from the benched
    prompt length to the scenario's tokens in) plus one decode step per further output token at
    the measured rate; that time is what the latency budget and capacity are checked against."""
    figures = bench.language_model
    where = bench.device or "the device"
    if bench.speech is not None:
        return _speech_request_ms(parser, bench, where)
    if figures is None:
        return bench.latency_ms, f"bench {bench.path}: p50 {'estimated' if bench.estimate else 'measured'} on {where}"
    tokens_out = parser.values.get("tokens_out_per_request")
    if not tokens_out:
        parser.problems.append(f"--bench {bench.path} measured a language model: traffic.tokens_out_per_request is "
                               "required to turn its tokens/s into a time per request")
        return None
    tokens_in = parser.values.get("tokens_in_per_request") or Decimal(figures.prompt_tokens)
    prefill_ms = figures.ttft_ms * tokens_in / Decimal(figures.prompt_tokens)
    decode_ms = max(tokens_out - 1, Decimal(0)) * Decimal(1000) / figures.decode_tokens_per_s
    return prefill_ms + decode_ms, (
        f"bench {bench.path} on {where}: time to first token {figures.ttft_ms} ms for {figures.prompt_tokens} "
        f"prompt tokens, scaled to {tokens_in} tokens in, + {max(tokens_out - 1, Decimal(0))} more tokens out at "
        f"{figures.decode_tokens_per_s} tokens/s")


def _speech_request_ms(parser, bench: BenchRecord, where: str) -> tuple[Decimal, str] | None:
    """A speech request of `seconds_per_request` audio seconds takes that many seconds divided by the
    measured real-time factor (linear in the audio's length: the decoder's work follows the words)."""
    seconds = parser.values.get("seconds_per_request")
    if not seconds:
        parser.problems.append(f"--bench {bench.path} measured a speech model: traffic.seconds_per_request is "
                               "required to turn its real-time factor into a time per request")
        return None
    factor = bench.speech.real_time_factor
    return seconds * Decimal(1000) / factor, (
        f"bench {bench.path} on {where}: {seconds} audio seconds per request at a real-time factor of {factor} "
        f"(measured on a {bench.speech.audio_seconds} s clip)")
