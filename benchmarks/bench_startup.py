"""Start-up costs that tests used to time: `edgeward --help` and loading the cached builtin model.

Each is set against a baseline measured in the same run, on the same machine and load:
  - `edgeward --help` in a fresh process against a bare `python -c pass` (target: under
    1 s absolute on an idle machine; the ratio shows what the CLI's own imports add);
  - `load_builtin("digits-cnn")` from the cache against building the same network and
    loading the same safetensors file with torch and safetensors directly (target <= 1.2x).

Run: .venv/bin/python benchmarks/bench_startup.py
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import edgeward, time_call, wall, write_results  # noqa: E402

REPEATS = 7


def main() -> None:
    help_s = statistics.median(wall(edgeward("--help")) for _ in range(REPEATS))
    python_s = statistics.median(wall([sys.executable, "-c", "pass"]) for _ in range(REPEATS))

    import torch
    from safetensors.torch import load_file

    from toolkit.models.digits import DigitsConfig, build, load_builtin
    from toolkit.paths import cache_dir

    load_builtin("digits-cnn")  # trains and caches it once if the cache is empty
    weights = cache_dir() / "builtin-digits-cnn-v1.safetensors"

    def direct():
        torch.manual_seed(0)
        model = build(DigitsConfig(family="digits-cnn"))
        model.load_state_dict(load_file(weights))
        return model.eval()

    cached = time_call(lambda: load_builtin("digits-cnn"), warmup=3, runs=30)["p50_ms"]
    baseline = time_call(direct, warmup=3, runs=30)["p50_ms"]
    ratios = {"help": help_s / python_s, "load_builtin": cached / baseline}
    lines = ["| work | edgeward | baseline | ratio |", "|---|---|---|---|",
             f"| `edgeward --help` (fresh process) | {help_s * 1000:.0f} ms | bare `python -c pass`: "
             f"{python_s * 1000:.0f} ms | {ratios['help']:.2f} |",
             f"| `load_builtin('digits-cnn')`, cached | {cached:.2f} ms | build + safetensors load: "
             f"{baseline:.2f} ms | {ratios['load_builtin']:.2f} (target <= 1.2) |"]
    write_results("startup", {"help_s": help_s, "python_s": python_s, "load_builtin_ms": cached,
                              "direct_load_ms": baseline, "ratios": ratios}, lines)


if __name__ == "__main__":
    main()
