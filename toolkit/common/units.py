"""Numbers for people, one formatter per quantity: sizes, latencies, months, counts,
percentages and plain measurements. Money is `toolkit.costs.money`'s.

A missing value is an en dash, as in the tables ("never" for a break-even month that never comes).
"""

from __future__ import annotations

import math
import numbers
from decimal import ROUND_HALF_UP, Decimal

MISSING = "–"


def human_bytes(count: float | None) -> str:
    """512 B, 12.3 KiB, 4.5 MiB, 1.2 GiB."""
    if count is None:
        return MISSING
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


def human_ms(ms: float | None) -> str:
    """A latency given in ms, three significant figures: 11.6 µs, 1.23 ms, 12.3 ms, 123 ms, 1235 ms."""
    if not _is_number(ms):
        return MISSING
    if abs(ms) < 1:
        return f"{ms * 1000:.3g} µs"
    return f"{ms:.3g} ms" if abs(ms) < 100 else f"{ms:.0f} ms"


def human_months(months) -> str:
    """8.2 months, 1 month; 'never' for None; a text (a reason) is passed through."""
    if months is None:
        return "never"
    if isinstance(months, str):
        return months
    number = float(months)
    return "1 month" if abs(number - 1) < 0.05 else f"{number:.1f} months"


def human_count(value) -> str:
    """1,000,000 up to ten million, then 12.3M; fractions kept to two digits."""
    number = value if isinstance(value, Decimal) else Decimal(str(value))
    if abs(number) >= 10_000_000:
        text = f"{(number / Decimal('1e6')).quantize(Decimal('0.1'), ROUND_HALF_UP):,}"
        return (text[:-2] if text.endswith(".0") else text) + "M"
    if number == number.to_integral_value():
        return f"{number.to_integral_value():,}"
    return f"{float(number):,.4g}" if abs(number) < 10 else f"{number.quantize(Decimal('0.01'), ROUND_HALF_UP):,}"


def human_percent(fraction, digits: int = 1) -> str:
    """A fraction as a percentage: 20%, 12.5% (98.22% with digits=2); <0.1% for a sliver."""
    if not _is_number(fraction) or math.isnan(float(fraction)):
        return MISSING
    number = float(fraction) * 100
    smallest = 10.0 ** -digits
    if 0 < abs(number) < smallest:
        return f"<{smallest:.{digits}f}%" if number > 0 else f">-{smallest:.{digits}f}%"
    return f"{number:.0f}%" if number == round(number) else f"{number:.{digits}f}%"


def human_number(value, digits: int = 4) -> str:
    """A measurement with `digits` significant figures (0.001234, 12.35); integers whole."""
    if value is None:
        return MISSING
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    number = float(value)
    if math.isnan(number):
        return "nan"
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    return f"{number:.{digits}g}"


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real | Decimal) and not isinstance(value, bool)
