"""Reading one scenario value: numbers, percentages and money with an optional currency.

A figure may be written as a number (`0.09`), a string (`"1e6"`, `"5%"`, `"95 EUR"`,
`"$0.01"`) or a mapping with its source (`{value: 0.09, currency: USD, source: ...}`),
so that a scenario can carry its sources the way the catalogue does.

Nothing is guessed: `"0,01"` could be a decimal comma (0.01) or a thousands separator
(1), and `"1,000.5"` depends on the writer's locale, so a comma in a number is refused
with a line that says how to write it; so is a figure too large or too small to be a
price or a count (it would overflow the arithmetic long after it was read).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from toolkit.costs.currencies import is_currency

SYMBOL_CURRENCY = {"$": "USD", "€": "EUR", "£": "GBP", "¥": "JPY"}
_MONEY = re.compile(r"^(?P<pre>[A-Za-z]{3}|[$€£¥])?\s*(?P<num>[-+]?(?:[0-9][0-9_,]*)?\.?[0-9]*(?:[eE][-+]?[0-9]+)?)"
                    r"\s*(?P<post>[A-Za-z]{3})?$")
LARGEST = Decimal("1e15")  # no figure in a scenario is larger (a quadrillion users, dollars or watts is a typo)
SMALLEST = Decimal("1e-12")  # nor is any non-zero figure smaller (a picodollar)


class ValueProblem(ValueError):
    """Why a value could not be read (without the field name, which the caller adds)."""


def read_value(raw, *, percent: bool = False, money: bool = False) -> tuple[Decimal, str | None, str | None]:
    """(value, currency or None, source or None) from any accepted form."""
    source = None
    currency = None
    if isinstance(raw, dict):
        unknown = set(raw) - {"value", "currency", "source", "estimate", "note", "as_of"}
        if unknown:
            raise ValueProblem(f"has unknown keys {sorted(map(str, unknown))} (value, currency, source)")
        if "value" not in raw and "estimate" not in raw:
            raise ValueProblem("is a mapping without 'value'")
        source = raw.get("source") or ("estimate" if "estimate" in raw and "value" not in raw else None)
        source = None if source is None else str(source)
        currency = raw.get("currency")
        raw = raw.get("value", raw.get("estimate"))
        if currency is not None:
            currency = str(currency).strip().upper()
            if not is_currency(currency):
                raise ValueProblem(f"has currency {currency!r}, which is not an ISO 4217 code (USD, EUR, ...)")
    if isinstance(raw, bool) or raw is None:
        raise ValueProblem(f"must be a number (got {raw!r})")
    if isinstance(raw, int | float):
        try:
            number = Decimal(str(raw))
        except (InvalidOperation, ValueError):
            raise ValueProblem(f"must be a number (got {raw!r})") from None
    elif isinstance(raw, str):
        number, text_currency = _parse_text(raw.strip(), percent=percent, money=money)
        if text_currency and currency and text_currency != currency:
            raise ValueProblem(f"says {text_currency} and currency {currency}")
        currency = currency or text_currency
    else:
        raise ValueProblem(f"must be a number (got {type(raw).__name__})")
    if not number.is_finite():
        raise ValueProblem(f"must be a finite number (got {raw!r})")
    if abs(number) > LARGEST:
        raise ValueProblem(f"is too large to be real (got {raw!r}; at most 1e15)")
    if number and abs(number) < SMALLEST:
        raise ValueProblem(f"is too small to be real (got {raw!r}; 0, or at least 1e-12)")
    return number, currency, source


def _parse_text(text: str, *, percent: bool, money: bool) -> tuple[Decimal, str | None]:
    if "," in text:
        raise ValueProblem(f"has a comma (got {text!r}): write numbers with a decimal point and no thousands "
                           "separator, e.g. 0.01 or 1000000")
    if percent and text.endswith("%"):
        return _decimal(text[:-1].strip(), text) / 100, None
    match = _MONEY.match(text)
    if not match or not any(ch.isdigit() for ch in match.group("num")):
        raise ValueProblem(f"must be a number (got {text!r})")
    pre, post = match.group("pre"), match.group("post")
    if (pre or post) and not money:
        raise ValueProblem(f"must be a plain number (got {text!r})")
    if pre and post:
        raise ValueProblem(f"has two currencies (got {text!r})")
    code = SYMBOL_CURRENCY.get(pre, pre) if pre else post
    code = code.upper() if code else None
    if code and not is_currency(code):
        raise ValueProblem(f"names currency {code!r}, which is not an ISO 4217 code (USD, EUR, ...)")
    return _decimal(match.group("num"), text), code


def _decimal(text: str, original: str) -> Decimal:
    try:
        return Decimal(text.replace("_", ""))
    except InvalidOperation:
        raise ValueProblem(f"must be a number (got {original!r})") from None
