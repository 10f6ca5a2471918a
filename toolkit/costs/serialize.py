"""A BreakevenResult as plain JSON-ready data: money to the cent, months to 4 decimals."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from toolkit.costs import money as fmt
from toolkit.costs.model import DAYS_PER_MONTH
from toolkit.costs.pricing import Tier


def number(value, places: str = "0.000001"):
    if value is None:
        return None
    if isinstance(value, bool | str | int):
        return value
    if isinstance(value, tuple):
        return [number(item, places) for item in value]
    if isinstance(value, Tier):
        return {"up_to": number(value.up_to), "price_per_request": number(value.price_per_request, "0.000000001")}
    try:
        return float(Decimal(value).quantize(Decimal(places), ROUND_HALF_UP))
    except InvalidOperation:  # more digits than the context holds: a float keeps the magnitude
        return float(value)


def money(value):
    return None if value is None else fmt.cents(value)


def month(value):
    return None if value is None else number(value, "0.0001")


def result_dict(result) -> dict:
    scenario = result.scenario
    inputs = result.inputs
    first = result.rows[0]
    return {
        "scenario": {
            "name": scenario.name,
            "description": scenario.description,
            "currency": inputs.currency,
            "months": result.months,
            "model": scenario.model,
            "cloud": scenario.cloud_label,
            "edge": scenario.edge_label,
            "discount_rate": number(inputs.discount_rate),
        },
        "breakeven_month": month(result.breakeven_month),
        "breakeven": fmt.months(result.breakeven_month),
        "reason": result.reason,
        "savings": {str(m): money(v) for m, v in result.savings.items()},
        "one_off": {**{k: money(v) for k, v in result.one_off.items()},
                    "total": money(sum(result.one_off.values(), Decimal(0)))},
        "cost_per_1k_requests": {k: number(v) for k, v in result.per_1k.items()},
        "first_month": {
            "requests_per_day": number(first.requests / DAYS_PER_MONTH, "0.01"),
            "cloud_per_day": money(first.cloud_only / DAYS_PER_MONTH),
            "cloud": money(first.cloud_only),
            "edge": money(first.edge_total),
            "saving": money(first.cloud_only - first.edge_total),
        },
        "on_device_share": {"planned": number(inputs.on_device_share), "served": number(result.effective_share)},
        "devices": {key: number(value) for key, value in result.devices.items()},
        "alternatives": {key: money(value) for key, value in result.alternatives.items()},
        "inputs": {name: number(getattr(inputs, name)) for name in inputs.__dataclass_fields__},
        "sources": dict(scenario.sources),
        "catalogue": [{"name": e.name, "title": e.title, "as_of": e.as_of, "stale": e.stale, "source": e.source,
                       "origin": e.origin} for e in scenario.entries],
        "benches": [{"path": b.path, "model": b.model_label(), "device": b.device,
                     "latency_ms_p50": number(b.latency_ms), "estimate": b.estimate} for b in scenario.benches],
        "capacity": {k: number(v) for k, v in result.capacity.items()},
        "months": [_row(row) for row in result.rows],
        "sensitivity": [
            {"input": s.name, "base": number(s.base_value), "low": number(s.low_value), "high": number(s.high_value),
             "low_month": month(s.low_month), "high_month": month(s.high_month), "notes": s.notes}
            for s in result.sensitivity
        ],
        "notes": list(result.notes),
        "warnings": list(result.warnings),
    }


def _row(row) -> dict:
    return {
        "month": row.month,
        "active_users": number(row.active_users, "0.01"),
        "requests": number(row.requests, "0.01"),
        "device_requests": number(row.device_requests, "0.01"),
        "devices": number(row.devices, "0.01"),
        "cloud": money(row.cloud_only),
        "cloud_instances": row.cloud_only_instances,
        "edge": money(row.edge_total),
        "edge_items": {k: money(v) for k, v in row.edge.items()},
        "edge_instances": row.edge_instances,
        "user_energy": money(row.user_energy),
        "cumulative_cloud": money(row.cumulative_cloud),
        "cumulative_edge": money(row.cumulative_edge),
        "past_last_tier": row.past_last_tier,
    }
