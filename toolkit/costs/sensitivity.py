"""Which inputs move the break-even month: each varied by -50% and +50%, the rest unchanged."""

from __future__ import annotations

from dataclasses import replace
from decimal import ROUND_HALF_UP, Decimal

from toolkit.costs.crossing import find_breakeven
from toolkit.costs.model import ONE, ZERO, Inputs, Sensitivity, project

BOUNDED = {"on_device_share": (ZERO, ONE), "utilisation": (Decimal("0.01"), ONE),
           "small_model_share": (ZERO, ONE)}
INTEGER = {"min_instances", "lifetime_months"}
API_ONLY = {"price_per_request", "price_per_1m_input_tokens", "price_per_1m_output_tokens", "price_per_minute",
            "tokens_in_per_request", "tokens_out_per_request", "seconds_per_request", "small_model_share",
            "small_price_per_request", "small_price_per_1m_input_tokens", "small_price_per_1m_output_tokens"}
INSTANCE_ONLY = {"price_per_hour", "throughput_rps", "utilisation", "min_instances", "peak_to_average"}
SKIPPED = {"discount_rate"}


def knobs(inputs: Inputs) -> list[str]:
    """The inputs worth varying: numeric, non-zero, and able to move the result in this scenario."""
    operator_energy = inputs.electricity_per_kwh > 0 and not inputs.energy_paid_by_user
    unused = set(SKIPPED)
    if inputs.cloud_mode == "instances":
        unused |= API_ONLY
    else:
        unused |= INSTANCE_ONLY - {"peak_to_average"}
        if inputs.latency_ms is None:
            unused.add("peak_to_average")  # only the device capacity check reads it
    if inputs.latency_ms is None:
        unused |= {"concurrency", "latency_p95_ms", "latency_budget_ms"}
    if not operator_energy:
        unused |= {"power_w", "electricity_per_kwh"}
    if inputs.on_device_share == 0:
        unused |= {"latency_ms", "power_w", "latency_p95_ms", "latency_budget_ms"}
    return [name for name in Inputs.__dataclass_fields__
            if name not in unused and isinstance(getattr(inputs, name), Decimal) and getattr(inputs, name) != 0]


def _scaled(name: str, value: Decimal, factor: Decimal) -> Decimal:
    scaled = value * factor
    if name in BOUNDED:
        low, high = BOUNDED[name]
        scaled = min(max(scaled, low), high)
    if name in INTEGER:
        scaled = max(ONE, scaled.to_integral_value(ROUND_HALF_UP))
    return scaled


def sensitivity(inputs: Inputs, months: int, base: Decimal | None) -> list[Sensitivity]:
    """Break-even month with each input at ×0.5 and ×1.5 (the rest unchanged), largest swing first.
    'never' counts as the horizon for ordering."""
    rows = []
    horizon = Decimal(months)
    for name in knobs(inputs):
        value = getattr(inputs, name)
        low, high = _scaled(name, value, Decimal("0.5")), _scaled(name, value, Decimal("1.5"))
        results = []
        for changed in (low, high):
            trial = replace(inputs, **{name: changed})
            results.append(find_breakeven(trial, project(trial, months), explain=False).month)
        low_month, high_month = results
        as_number = [horizon if m is None else m for m in (low_month, high_month, base)]
        swing = max(abs(as_number[0] - as_number[2]), abs(as_number[1] - as_number[2]))
        notes = []
        if name in BOUNDED and (low != value * Decimal("0.5") or high != value * Decimal("1.5")):
            notes.append("clamped to its valid range")
        rows.append(Sensitivity(name, value, low, high, low_month, high_month, swing, notes))
    rows.sort(key=lambda row: (-row.swing, row.name))
    return rows
