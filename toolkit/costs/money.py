"""Money, counts and months for people: $1.5M, $300,000, $0.0042, 8.2 months."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

# Counts, months and percentages are formatted alike in every report: the common formatters.
from toolkit.common.units import human_count as count
from toolkit.common.units import human_months as months
from toolkit.common.units import human_percent as percent

__all__ = ["cents", "count", "money", "months", "percent", "price", "unit_cost"]

SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥"}


def _decimal(value) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _scaled(number: Decimal) -> str:
    """Three significant digits, at most one decimal above 10: 1.5, 1.04, 12.3, 123, 1,234."""
    places = Decimal("0.01") if number < 10 else Decimal("0.1") if number < 100 else Decimal(1)
    text = f"{number.quantize(places, ROUND_HALF_UP):,}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def money(value, currency: str = "USD") -> str:
    """$1.5M from a million up, $300,000 from a hundred, cents below, two significant
    digits under a cent (so a per-request price stays readable)."""
    if value is None:
        return "—"
    amount = _decimal(value)
    sign = "-" if amount < 0 else ""
    amount = abs(amount)
    if amount >= Decimal("999.5e6"):  # rounds to at least 1,000M: say B
        body = _scaled(amount / Decimal("1e9")) + "B"
    elif amount >= Decimal("999999.5"):
        body = _scaled(amount / Decimal("1e6")) + "M"
    elif amount >= Decimal("99.995"):
        body = f"{amount.quantize(Decimal(1), ROUND_HALF_UP):,}"
    elif amount >= Decimal("0.01") or amount == 0:
        body = f"{amount.quantize(Decimal('0.01'), ROUND_HALF_UP)}"
        body = "0" if amount == 0 else body
    else:
        places = 1 - amount.adjusted()  # two significant digits: 0.0042, 0.000012
        body = f"{amount.quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP).normalize():f}"
    symbol = SYMBOLS.get(currency)
    return f"{sign}{symbol}{body}" if symbol else f"{sign}{currency} {body}"


def _symbol(body: str, sign: str, currency: str) -> str:
    symbol = SYMBOLS.get(currency)
    return f"{sign}{symbol}{body}" if symbol else f"{sign}{currency} {body}"


def price(value, currency: str = "USD") -> str:
    """A unit price exactly as given: $1.006, $0.0015, $62.50, $1,200 (inputs are not rounded)."""
    if value is None:
        return "—"
    amount = _decimal(value)
    sign, amount = ("-" if amount < 0 else ""), abs(amount)
    exact = amount.normalize()
    if exact == exact.to_integral_value():
        body = f"{int(exact):,}"
    elif exact.as_tuple().exponent >= -2:
        body = f"{amount.quantize(Decimal('0.01')):,}"
    else:
        body = f"{exact:,f}"
    return _symbol(body, sign, currency)


def unit_cost(value, currency: str = "USD") -> str:
    """A cost per 1,000 requests: three significant digits under a dollar ($0.0229), else money()."""
    if value is None:
        return "—"
    amount = _decimal(value)
    if amount == 0 or abs(amount) >= 1:
        return money(amount, currency)
    places = 2 - abs(amount).adjusted()
    body = f"{abs(amount).quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP).normalize():f}"
    decimals = len(body.partition(".")[2])
    body = body + "0" * (2 - decimals) if decimals < 2 else body  # $0.50, not $0.5
    body = body + ".00" if "." not in body else body
    return _symbol(body, "-" if amount < 0 else "", currency)


def cents(value) -> float:
    """A money amount for JSON: rounded to the cent."""
    return float(_decimal(value).quantize(Decimal("0.01"), ROUND_HALF_UP))
