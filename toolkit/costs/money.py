"""Money, counts and months for people: $1.5M, $300,000, $0.0042, 8.2 months."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥"}


def _decimal(value) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _trim(text: str) -> str:
    return text[:-2] if text.endswith(".0") else text


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


def months(value) -> str:
    """8.2 months; 'never' for None."""
    if value is None:
        return "never"
    number = float(value)
    return "1 month" if abs(number - 1) < 0.05 else f"{number:.1f} months"


def count(value) -> str:
    """1,000,000 up to ten million, then 12.3M; fractions kept to two digits."""
    number = _decimal(value)
    if abs(number) >= 10_000_000:
        return _trim(f"{(number / Decimal('1e6')).quantize(Decimal('0.1'), ROUND_HALF_UP):,}") + "M"
    if number == number.to_integral_value():
        return f"{number.to_integral_value():,}"
    return f"{float(number):,.4g}" if abs(number) < 10 else f"{number.quantize(Decimal('0.01'), ROUND_HALF_UP):,}"


def percent(value) -> str:
    number = float(value) * 100
    if 0 < abs(number) < 0.1:
        return "<0.1%" if number > 0 else ">-0.1%"
    return f"{number:.0f}%" if number == round(number) else f"{number:.1f}%"


def cents(value) -> float:
    """A money amount for JSON: rounded to the cent."""
    return float(_decimal(value).quantize(Decimal("0.01"), ROUND_HALF_UP))
