"""How long `edgeward breakeven` takes to write all its reports, against the charting it cannot avoid.

Both sides run as fresh processes in this one script, so start-up and imports count on both:
  - `edgeward breakeven - -o DIR` on the example scenario (markdown, JSON, three PNG
    charts and the self-contained HTML page);
  - a bare script that imports matplotlib (Agg) and saves three line charts of the same
    size as PNG: the floor for any report with three charts.
The target was 2 s on an idle machine; the ratio says what the cost model and the
reports add over the charts alone.

Run: .venv/bin/python benchmarks/bench_breakeven.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import edgeward, wall, write_results  # noqa: E402

REPEATS = 5

THREE_CHARTS = """
import sys, matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
for index in range(3):
    figure, axes = plt.subplots(figsize=(8, 4.5), dpi=100)
    months = list(range(37))
    axes.plot(months, [m * 1000 for m in months], label="cloud")
    axes.plot(months, [5000 + m * 400 for m in months], label="edge")
    axes.legend()
    figure.savefig(f"{sys.argv[1]}/chart{index}.png")
    plt.close(figure)
"""


def main() -> None:
    example = subprocess.run(edgeward("breakeven", "--example"), check=True, capture_output=True, text=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        timings = []
        for index in range(REPEATS):
            started = time.perf_counter()
            subprocess.run(edgeward("breakeven", "-", "-o", tmp / f"report{index}"), input=example, check=True,
                           capture_output=True, text=True)
            timings.append(time.perf_counter() - started)
        report_s = statistics.median(timings)
        charts = []
        for index in range(REPEATS):
            folder = tmp / f"charts{index}"
            folder.mkdir()
            charts.append(wall([sys.executable, "-c", THREE_CHARTS, str(folder)]))
        charts_s = statistics.median(charts)
    ratio = report_s / charts_s
    lines = ["| work | seconds | ratio to the charts alone |", "|---|---|---|",
             f"| `edgeward breakeven` example, all reports | {report_s:.2f} | {ratio:.2f} |",
             f"| bare matplotlib: three PNG charts | {charts_s:.2f} | 1.00 |"]
    write_results("breakeven", {"report_s": report_s, "charts_s": charts_s, "ratio": ratio}, lines)


if __name__ == "__main__":
    main()
