"""`edgeward demo`: first run against a second run that reuses every artifact.

Both runs are fresh processes in this one script, with an empty model cache, so the
first run includes training the builtin teacher. Targets: the first run under 3
minutes on 2 cores, the second at least 5x faster.

Run: .venv/bin/python benchmarks/bench_demo.py
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import edgeward, wall, write_results  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "EDGEWARD_CACHE": str(Path(tmp) / "cache")}
        out = Path(tmp) / "demo"
        first = wall(edgeward("demo", "-o", out), env=env)
        second = wall(edgeward("demo", "-o", out), env=env)
    ratio = first / second
    lines = ["| run | wall time (s) |", "|---|---|", f"| first (empty cache) | {first:.1f} |",
             f"| second (artifacts reused) | {second:.2f} |", "",
             f"speed-up of the second run: {ratio:.1f}x (target >= 5x); first run target < 180 s"]
    write_results("demo", {"seconds": {"first": first, "second": second}, "speedup": ratio}, lines)


if __name__ == "__main__":
    main()
