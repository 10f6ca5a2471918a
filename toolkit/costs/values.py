"""Reading one scenario value: numbers, percentages and money with an optional currency.

A figure may be written as a number (`0.09`), a string (`"1e6"`, `"5%"`, `"95 EUR"`,
`"$0.01"`) or a mapping with its source (`{value: 0.09, currency: USD, source: ...}`),
so that a scenario can carry its sources the way the catalogue does.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

SYMBOL_CURRENCY = {"$": "USD", "€": "EUR", "£": "GBP", "¥": "JPY"}
_MONEY = re.compile(r"^(?P<pre>[A-Za-z]{3}|[$€£¥])?\s*(?P<num>[-+]?[0-9][0-9_,]*\.?[0-9]*(?:[eE][-+]?[0-9]+)?)"
                    r"\s*(?P<post>[A-Za-z]{3})?$")


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
        currency = raw.get("currency")
        raw = raw.get("value", raw.get("estimate"))
        if currency is not None:
            currency = str(currency).strip().upper()
    if isinstance(raw, bool) or raw is None:
        raise ValueProblem(f"must be a number (got {raw!r})")
    if isinstance(raw, int | float):
        number = Decimal(str(raw))
    elif isinstance(raw, str):
        number, text_currency = _parse_text(raw.strip(), percent=percent, money=money)
        if text_currency and currency and text_currency != currency:
            raise ValueProblem(f"says {text_currency} and currency {currency}")
        currency = currency or text_currency
    else:
        raise ValueProblem(f"must be a number (got {type(raw).__name__})")
    if not number.is_finite():
        raise ValueProblem(f"must be a finite number (got {raw!r})")
    return number, currency, source


def _parse_text(text: str, *, percent: bool, money: bool) -> tuple[Decimal, str | None]:
    if percent and text.endswith("%"):
        return _decimal(text[:-1].strip(), text) / 100, None
    match = _MONEY.match(text)
    if not match:
        raise ValueProblem(f"must be a number (got {text!r})")
    pre, post = match.group("pre"), match.group("post")
    if (pre or post) and not money:
        raise ValueProblem(f"must be a plain number (got {text!r})")
    if pre and post:
        raise ValueProblem(f"has two currencies (got {text!r})")
    code = SYMBOL_CURRENCY.get(pre, pre) if pre else post
    return _decimal(match.group("num"), text), code.upper() if code else None


def _decimal(text: str, original: str) -> Decimal:
    try:
        return Decimal(text.replace("_", "").replace(",", ""))
    except InvalidOperation:
        raise ValueProblem(f"must be a number (got {original!r})") from None
