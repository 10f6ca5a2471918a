"""`edgeward bench MODEL [--device NAME] [--runs N] [--warmup N] [--threads N] [--estimate]`."""

from __future__ import annotations

import click


@click.command(epilog="""\b
Examples:
  edgeward bench exported/digits-onnx
  edgeward bench model.tflite --device ssh-testbed --runs 200 --warmup 20
  edgeward bench model.onnx --device raspberry-pi-5 --estimate
  edgeward bench silero_vad.onnx --device localhost --data vad.npz
  edgeward --json bench model.tflite --device localhost -o bench.json

\b
Measured runs copy the model and runner.py to the device, run it with the device's
Python and runtime, and report p50/p90/p99/mean/std, load time, first inference, peak
RSS, the delegate actually used, and a drift flag. --estimate needs no device: a roofline
from the graph's FLOPs and bytes and the profile's peaks (says compute- or memory-bound)
and a fit check (exit 1 if the model does not fit). Devices on adb run LiteRT's
benchmark_model (tested here on recorded output only: no phone is attached).
Exit 4 on device faults; a run cut short writes -o marked "complete": false.""")
@click.argument("model", type=click.Path())
@click.option("--device", default="localhost", show_default=True, help="A device profile name (edgeward devices list).")
@click.option("--runs", default=50, show_default=True, type=click.IntRange(min=1), help="Measured runs.")
@click.option("--warmup", default=5, show_default=True, type=click.IntRange(min=0), help="Warm-up runs, not timed.")
@click.option("--threads", default=None, type=click.IntRange(min=1), help="Runtime threads (default: the runtime's).")
@click.option("--estimate", is_flag=True, help="Estimate fit and latency from the profile instead of measuring.")
@click.option("--profiles", "profiles_dir", type=click.Path(file_okay=False), help="A folder of extra device profiles.")
@click.option("--benchmark-binary", default=None, help="adb devices: benchmark_model on the device or a local file.")
@click.option("--data", metavar="DATA", default=None,
              help="Inputs to time (.npz, one array per model input; its first example is run). Default: random.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="Write the result JSON here.")
def command(model, device, runs, warmup, threads, estimate, profiles_dir, benchmark_binary, data, output) -> None:
    """Measure or estimate latency and memory of MODEL on a device."""
    from toolkit.artifacts import atomic_write_json
    from toolkit.bench import bench, check_fit, human_summary
    from toolkit.console import emit, info
    from toolkit.errors import DeviceError

    try:
        record = bench(model, device=device, runs=runs, warmup=warmup, threads=threads, estimate=estimate,
                       profiles_dir=profiles_dir, benchmark_binary=benchmark_binary, data=data)
    except DeviceError as error:
        partial = getattr(error, "partial", None)
        if partial is not None and output:
            atomic_write_json(output, partial)
            info(f"partial result (complete: false) written to {output}")
        raise
    if output:
        atomic_write_json(output, record)
        info(f"wrote {output}")
    emit(record, human_summary(record))
    if estimate:
        check_fit(record)
