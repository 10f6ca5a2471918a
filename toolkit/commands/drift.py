"""`edgeward drift CANDIDATE --data D --device A [--device B ...] [--reference R]`."""

from __future__ import annotations

import click


@click.command(epilog="""\b
Examples:
  edgeward drift exported/digits-fp16 --data builtin:digits:test --device arm64-cortex-a76
  edgeward drift exported/digits-int8 --reference builtin:digits-cnn --data builtin:digits:test \\
      --device raspberry-pi-5 --device pixel-8-ssh -o drift.json

\b
Runs CANDIDATE on this host and on each device (the same runner, the same inputs) and
reports per output the difference between each device and the host, and between each
device and the reference. For ONNX models, every node's output is compared too (on a few
examples) and the first node that diverges is named. Tolerances depend on the model's
precision and the device's CPU family (static int8: exact equality; fp16 looser on cores
with fp16 arithmetic); the table is TOLERANCE in toolkit/validate/drift.py.
Exit 1 when a device drifts beyond tolerance, 2 on bad input, 4 on a device fault.""")
@click.argument("candidate")
@click.option("--data", required=True, metavar="DATA", help="Inputs (.npz, builtin:digits:test, ...).")
@click.option("--device", "devices", multiple=True, required=True, metavar="NAME",
              help="A device profile to compare with this host (repeatable).")
@click.option("--reference", default=None, help="Also compare each device with this reference model.")
@click.option("--examples", type=int, default=None, help="Use only the first N examples of DATA.")
@click.option("--per-layer/--no-per-layer", default=True, show_default=True,
              help="Compare every node's output (ONNX, TFLite) and name the first that diverges.")
@click.option("--profiles", type=click.Path(exists=True, file_okay=False), default=None,
              help="Extra folder of device profiles (searched before the builtin ones).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="Write the report JSON here.")
def command(candidate, data, devices, reference, examples, per_layer, profiles, output) -> None:
    """Compare CANDIDATE's outputs on devices with this host's (host-vs-device drift)."""
    from toolkit.artifacts import atomic_write_json
    from toolkit.console import emit, info
    from toolkit.validate.drift import check_drift, drift, human_summary

    report = drift(candidate, list(devices), data, reference=reference, per_layer=per_layer, examples=examples,
                   profiles_dir=profiles)
    if output:
        atomic_write_json(output, report.to_dict())
        info(f"wrote {output}")
    emit(report.to_dict(), human_summary(report))
    check_drift(report)
