"""Numbers for people: sizes, durations, months, money."""

from __future__ import annotations


def human_bytes(count: float | None) -> str:
    if count is None:
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


def human_months(months) -> str:
    if months is None:
        return "never"
    if isinstance(months, str):
        return months
    return f"{months:.1f} months"


def human_ms(ms: float | None) -> str:
    """Latency with three significant figures: µs below a millisecond."""
    if ms is None:
        return "—"
    if ms < 1:
        return f"{ms * 1000:.3g} µs"
    return f"{ms:.3g} ms" if ms < 100 else f"{ms:.0f} ms"
