"""`edgeward run --executor ray` against the serial executor, on this machine.

1. The demo recipe (`edgeward demo --show-recipe`), run from scratch by each executor in a
   fresh process and a fresh output folder: wall time of each and the ratio serial / Ray.
   Ray starts a local cluster (2 CPUs) and runs each step as a task, in a supervised child.
2. The overhead of Ray on a single step: a recipe with one export, run by each executor;
   the step's own time (as the run records it) and the whole command's wall time.

Both use one warmed model cache (the builtin teacher trained once beforehand), so neither
run pays for that. On a 2-core machine there is little room for parallel steps, and each
Ray task pays for a fresh child process that imports the model stack again: the numbers
say what that costs here, not on a cluster.

Run: .venv/bin/python benchmarks/bench_ray.py

Ray binds its servers to the machine's own address: run this in a loopback-only network
namespace, as the tests do: `unshare -n sh -c 'ip link set lo up && .venv/bin/python benchmarks/bench_ray.py'`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import edgeward, write_results  # noqa: E402

SINGLE_STEP = "name: one-step\nsource: builtin:digits-cnn\nexport: [onnx]\n"


def timed_run(recipe: Path, out: Path, executor: str, env: dict) -> tuple[float, dict]:
    started = time.perf_counter()
    done = subprocess.run(edgeward("--json", "run", recipe, "-o", out, "--executor", executor),
                          check=True, capture_output=True, text=True, env=env)
    return time.perf_counter() - started, json.loads(done.stdout)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "EDGEWARD_CACHE": str(tmp / "cache")}
        subprocess.run(edgeward("export", "builtin:digits-cnn", "--to", "onnx", "-o", tmp / "warm"),
                       check=True, capture_output=True, env=env)
        demo = tmp / "demo.yaml"
        demo.write_text(json.loads(subprocess.run(edgeward("--json", "demo", "--show-recipe"), check=True,
                                                  capture_output=True, text=True, env=env).stdout)["recipe"])
        single = tmp / "single.yaml"
        single.write_text(SINGLE_STEP)
        results = {}
        for name, recipe in (("demo", demo), ("single_step", single)):
            for executor in ("serial", "ray"):
                seconds, output = timed_run(recipe, tmp / f"{name}-{executor}", executor, env)
                results.setdefault(name, {})[executor] = {
                    "wall_s": round(seconds, 2), "steps": len(output["steps"]),
                    "step_seconds": {s["step"]: s["seconds"] for s in output["steps"]}}
                print(f"{name} {executor}: {seconds:.1f}s", file=sys.stderr)
    demo_ratio = results["demo"]["serial"]["wall_s"] / results["demo"]["ray"]["wall_s"]
    one = results["single_step"]
    step_serial = one["serial"]["step_seconds"]["export-onnx"]
    step_ray = one["ray"]["step_seconds"]["export-onnx"]
    overhead = {"step_s": round(step_ray - step_serial, 2),
                "command_s": round(one["ray"]["wall_s"] - one["serial"]["wall_s"], 2)}
    lines = [
        "| run | serial (s) | ray (s) | serial / ray |", "|---|---|---|---|",
        f"| demo recipe, {results['demo']['serial']['steps']} steps | {results['demo']['serial']['wall_s']:.1f} "
        f"| {results['demo']['ray']['wall_s']:.1f} | {demo_ratio:.2f}x |",
        f"| one export step: the step | {step_serial:.2f} | {step_ray:.2f} | {step_serial / step_ray:.2f}x |",
        f"| one export step: the command | {one['serial']['wall_s']:.1f} | {one['ray']['wall_s']:.1f} "
        f"| {one['serial']['wall_s'] / one['ray']['wall_s']:.2f}x |",
        "",
        f"Ray's overhead on a single step: {overhead['step_s']:+.2f} s in the step (a Ray task and a fresh "
        f"supervised child that imports the stack), {overhead['command_s']:+.2f} s for the whole command "
        f"(starting and stopping the local cluster too).",
        "A Ray step's time runs from its submission, so on 2 cores it also counts time queued behind other steps.",
    ]
    write_results("ray", {"results": results, "demo_ratio_serial_over_ray": demo_ratio,
                          "ray_overhead_single_step": overhead}, lines)


if __name__ == "__main__":
    main()
