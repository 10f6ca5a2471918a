"""The table of auto's tries: one row per quantized model tried, as text and as Markdown."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from toolkit.common.units import human_bytes


@dataclass
class Try:
    index: int
    mode: str
    excluded: list[str] = field(default_factory=list)
    folder: str | None = None  # relative to out_dir
    size_bytes: int | None = None
    size_ratio: float | None = None
    accuracy: float | None = None  # fraction, first labelled output
    drop: float | None = None  # points
    agreement: float | None = None
    sqnr_db: float | None = None
    p50_ms: float | None = None  # measured for passing tries when the objective is latency
    format: str = "onnx"
    passed: bool = False
    smaller: bool = False  # smaller than the float model (a try that is not cannot be chosen)
    seconds: float = 0.0
    error: str | None = None
    failed_gates: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.mode}+{len(self.excluded)} float" if self.excluded else self.mode


def rounded(value, digits: int = 4):
    """A figure for the table: rounded, and None where there is none (JSON has no NaN or Infinity)."""
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def accuracy_text(t: Try) -> str:
    if t.accuracy is not None:
        return f"accuracy {t.accuracy:.2%} (drop {t.drop:.2f})"
    return f"agreement {t.agreement}"


def gate_text(gates: dict) -> str:
    parts = []
    if gates.get("max_drop") is not None:
        parts.append(f"drop <= {gates['max_drop']:g} points")
    if gates.get("min_agreement") is not None:
        parts.append(f"agreement >= {gates['min_agreement']:g}")
    return " and ".join(parts) or "no gate"


def table_rows(tries, chosen):
    for t in tries:
        yield [
            str(t.index + 1), t.label, t.format, human_bytes(t.size_bytes),
            "–" if t.size_ratio is None else f"{t.size_ratio:.2f}x",
            "–" if t.accuracy is None else f"{t.accuracy:.2%}", "–" if t.drop is None else f"{t.drop:.2f}",
            "–" if t.agreement is None else f"{t.agreement:.4f}",
            "–" if t.p50_ms is None else f"{t.p50_ms:.2f} ms",
            "error" if t.error else ("yes" if t.passed else "no"),
            ("chosen" if t.index == chosen else "") + (" not smaller than float" if not t.error and not t.smaller else "")
            + (f" {t.error}" if t.error else ""),
        ]


HEADER = ["#", "mode", "format", "size", "ratio", "accuracy", "drop", "agreement", "p50", "passed", "note"]


def float_line(reference_accuracy, float_size, float_sizes=None, float_p50_ms=None) -> str:
    """The float models' sizes (ratios are against the try's own format's float model) and p50s."""
    sizes = float_sizes or {"": float_size}
    parts = [f"{fmt + ' ' if len(sizes) > 1 else ''}{human_bytes(size)}" for fmt, size in sizes.items()]
    text = f"float: {', '.join(parts)}"
    if float_p50_ms:
        text += ", p50 " + ", ".join(f"{fmt} {p50:.2f} ms" for fmt, p50 in float_p50_ms.items())
    return text + (f", accuracy {reference_accuracy:.2%}" if reference_accuracy is not None else "")


def table_text(tries, chosen, reference_accuracy, float_size, float_sizes=None, float_p50_ms=None) -> str:
    rows = [HEADER, *table_rows(tries, chosen)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER) - 1)]
    lines = [float_line(reference_accuracy, float_size, float_sizes, float_p50_ms)]
    for row in rows:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
    return "\n".join(line.rstrip() for line in lines)


def table_markdown(tries, chosen, reference_accuracy, float_size, gates, objective: str = "size", *,
                   float_sizes=None, float_p50_ms=None, int8_hardware=None) -> str:
    rule = ("fastest passing (p50, 1 thread, batch 1; within 3% the smaller)" if objective == "latency"
            else "smallest passing")
    lines = [f"Float model{float_line(reference_accuracy, float_size, float_sizes, float_p50_ms)[5:]}. "
             f"Gates: {gate_text(gates)}. Objective: {objective} ({rule}).", "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in table_rows(tries, chosen):
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in row) + " |")
    if int8_hardware:
        slower = " May be no faster than float there." if int8_hardware.get("may_be_slower_than_float") else ""
        lines += ["", f"CPU ({int8_hardware['where']}): {int8_hardware['note']}.{slower}"]
    excluded = [t for t in tries if t.excluded]
    if excluded:
        lines += ["", "Nodes kept in float:"]
        lines += [f"- try {t.index + 1}: {', '.join(t.excluded)}" for t in excluded]
    return "\n".join(lines) + "\n"
