"""Where each op ran on a device, and the fallback gate (`--max-fallback PCT`).

The runner measures placement on the device (toolkit/devices/runner.py: `op_placement`):
for LiteRT the nodes the XNNPACK delegate took and those left on the builtin kernels, for
onnxruntime the execution provider of every node with its profiled time. This module reads
that record, words it and gates on the share outside the accelerator.
"""

from __future__ import annotations

from toolkit.errors import GateFailed

SHOWN_FALLBACK_NODES = 8


def fallback_pct(placement: dict | None) -> float | None:
    """The share (percent) of the model's work outside the accelerator; None when unknown."""
    if not placement or placement.get("error"):
        return None
    return placement.get("fallback_pct")


def placement_line(placement: dict | None) -> str:
    """One line for the human summary."""
    if not placement:
        return "ops     placement not reported by this runtime"
    if placement.get("error"):
        return f"ops     placement unavailable: {placement['error']}"
    accelerator = placement.get("accelerator") or "no delegate"
    basis = "of nodes" if str(placement.get("basis", "")).startswith("nodes") else "of op time"
    line = (f"ops     {placement['delegated_nodes']}/{placement['nodes']} nodes on {accelerator}; "
            f"fallback {placement['fallback_pct']:.1f}% {basis}")
    fallback = placement.get("fallback_nodes") or []
    if fallback:
        shown = ", ".join(fallback[:SHOWN_FALLBACK_NODES])
        more = f" and {len(fallback) - SHOWN_FALLBACK_NODES} more" if len(fallback) > SHOWN_FALLBACK_NODES else ""
        line += f": {shown}{more}"
    return line


def check_fallback(placement: dict | None, max_fallback: float | None, device: str) -> None:
    """A gate: more than `max_fallback` percent outside the accelerator is exit 1.

    A placement the runtime could not report fails the gate too: a gate that cannot be
    measured must not pass silently.
    """
    if max_fallback is None:
        return
    share = fallback_pct(placement)
    if share is None:
        why = (placement or {}).get("error") or "the runtime did not report op placement"
        raise GateFailed(f"--max-fallback {max_fallback:g}%: cannot tell where the ops ran on {device} ({why})")
    if share > max_fallback:
        ops = ", ".join(placement.get("fallback_ops") or []) or "unnamed ops"
        accelerator = placement.get("accelerator") or "the accelerator"
        basis = "of the nodes" if str(placement.get("basis", "")).startswith("nodes") else "of the op time"
        raise GateFailed(f"{share:.1f}% {basis} ran outside {accelerator} on {device} "
                         f"(--max-fallback {max_fallback:g}%): fell back: {ops}")


def placement_on_device(model, device: str, *, profiles_dir=None, threads: int | None = None) -> dict | None:
    """Placement of `model` on `device` from one short runner pass (used by validate --device)."""
    from toolkit.artifacts import resolve_model
    from toolkit.bench.shapes import resolve_shapes, sample_inputs
    from toolkit.devices import bench_on_device, get_profile

    inputs = None
    if get_profile(device, profiles_dir).transport.get("type") != "adb":
        inputs = sample_inputs(resolve_shapes(resolve_model(model)))
    record = bench_on_device(model, device, runs=1, warmup=0, threads=threads, profiles_dir=profiles_dir,
                             inputs=inputs)
    return record.get("placement")
