"""The two figures the cost model takes from a device profile: power and unit price.

Device profiles belong to the devices stage (`toolkit.devices.profiles`: `power_w:
{idle, typical, max}` and `unit_price_usd`, each `{value, source|estimate}`). This
reads only those, and also accepts `power: {typical_w}` / `unit_price` spellings, so a
profile written by hand for costs alone still works.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass
class DeviceFigures:
    name: str
    power_w: Decimal | None
    power_source: str
    unit_price: Decimal | None
    currency: str
    price_source: str
    kind: str | None


def device_profile(name: str) -> DeviceFigures:
    """Power (typical) and unit price of the device profile `name`; BadInput (with close
    matches) when there is no such profile."""
    from toolkit.devices.profiles import get_profile

    profile = get_profile(name)
    return figures_of(name, profile.data)


def figures_of(name: str, data: dict) -> DeviceFigures:
    power, power_source = profile_power(data)
    price, currency, price_source = _price(data)
    return DeviceFigures(name, power, power_source, price, currency, price_source, data.get("kind"))


def _figure(node) -> tuple[Decimal | None, str]:
    """(value, 'source' or 'estimate: how') from {value, source|estimate} or a bare number."""
    source = "profile"
    if isinstance(node, dict):
        if node.get("source"):
            source = str(node["source"])
        elif node.get("estimate"):
            source = f"estimate: {node['estimate']}"
        node = node.get("value")
    if isinstance(node, bool) or not isinstance(node, int | float | str):
        return None, source
    try:
        number = Decimal(str(node))
    except ArithmeticError:
        return None, source
    return (number, source) if number.is_finite() else (None, source)


def profile_power(data: dict) -> tuple[Decimal | None, str]:
    """A device's typical (else max) power draw in watts and its source, from a profile's figures."""
    for holder, keys in ((data.get("power_w"), ("typical", "max")), (data.get("power"), ("typical_w", "max_w"))):
        if isinstance(holder, dict):
            for key in keys:
                value, source = _figure(holder.get(key))
                if value is not None:
                    return value, f"{key}: {source}"
    return None, ""


def _price(data: dict) -> tuple[Decimal | None, str, str]:
    if data.get("unit_price_usd") is not None:
        value, source = _figure(data["unit_price_usd"])
        return value, "USD", source
    node = data.get("unit_price")
    currency = str((node.get("currency") if isinstance(node, dict) else None) or data.get("currency") or "USD")
    value, source = _figure(node)
    return value, currency.upper(), source
