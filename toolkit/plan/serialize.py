"""plan.json: every option with its figures, money rounded to the cent, marked measured/estimate."""

from __future__ import annotations

from decimal import Decimal


def _money(value) -> float | None:
    if value is None:
        return None
    from toolkit.costs.money import cents

    return cents(value)


def _number(value) -> float | None:
    return float(value) if isinstance(value, Decimal | int | float) and not isinstance(value, bool) else None


def option_dict(option, rank: int) -> dict:
    variant, measured = option.variant, option.measured
    return {
        "rank": rank,
        "variant": variant.name,
        "device": option.device,
        "model": {"path": str(variant.model_path), "format": variant.format, "mode": variant.mode,
                  "size_bytes": variant.size_bytes},
        "accuracy_on_device": variant.accuracy,
        "system_accuracy": option.system_accuracy,
        "on_device_share": option.share.to_dict(),
        "latency_ms": {"p50": option.p50_ms, "p95": option.p95_ms,
                       "how": measured.how if measured else None, "source": measured.source if measured else None},
        "fit": option.fit.to_dict(),
        "within_latency_budget": option.within_budget,
        "currency": option.currency,
        "cost_per_1k_requests": _number(option.cost_per_1k),
        "cost_per_1k_requests_running": _number(option.per_1k.get("edge")),
        "cloud_only_per_1k_requests": _number(option.cloud_per_1k),
        "one_off": _money(option.one_off),
        "breakeven_month": _number(option.breakeven_month),
        "horizon_months": option.horizon,
        "saving_over_horizon": _money(option.saving),
        "recommendable": not option.blockers(),
        "blockers": option.blockers(),
        "error": option.error,
    }


def plan_dict(plan) -> dict:
    pareto = {id(option) for option in plan.pareto}
    options = []
    for rank, option in enumerate(plan.options, 1):
        row = option_dict(option, rank)
        row["pareto"] = id(option) in pareto
        options.append(row)
    recommended = plan.recommended
    return {
        "scenario": plan.scenario_name,
        "accuracy_floor": plan.floor,
        "accuracy_floor_source": plan.floor_source,
        "cloud_accuracy": plan.cloud_accuracy,
        "latency_budget_ms": plan.latency_budget_ms,
        "on_device_share_fixed": plan.fixed_share,
        "recommended": {"variant": recommended.variant.name, "device": recommended.device} if recommended else None,
        "recommendation": plan.recommendation,
        "options": options,
        "notes": plan.notes,
    }
