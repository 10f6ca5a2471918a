"""One ranking: every variant × device, cheapest first among those that can be recommended.

An option can be recommended when it was priced, fits the device, keeps the system at or
above the accuracy floor and (with a budget) answers within the latency budget. The rest
follow, each with what stops it. The Pareto front is over (cost, system accuracy): no other
option is both cheaper and at least as accurate.
"""

from __future__ import annotations

from decimal import Decimal

from toolkit.common.units import human_months, human_percent
from toolkit.plan.price import Option

CLOSE = Decimal("1.01")  # options within 1% of the cheapest are named as close


def cost_key(option: Option):
    cost = option.cost_per_1k
    return (cost is None, cost if cost is not None else 0, -(option.system_accuracy or 0), option.name)


def rank(options: list[Option]) -> list[Option]:
    """Recommendable options by cost (then accuracy), then the others by cost."""
    return sorted(options, key=lambda option: (bool(option.blockers()), *cost_key(option)))


def pareto_front(options: list[Option]) -> list[Option]:
    """Priced options that no other priced option beats on both cost and system accuracy."""
    priced = [o for o in options if o.cost_per_1k is not None and o.system_accuracy is not None]
    front = []
    for option in priced:
        dominated = any(
            other.cost_per_1k <= option.cost_per_1k and other.system_accuracy >= option.system_accuracy
            and (other.cost_per_1k < option.cost_per_1k or other.system_accuracy > option.system_accuracy)
            for other in priced)
        if not dominated:
            front.append(option)
    return front


def recommendation(ranked: list[Option], floor: float, latency_budget_ms: float | None) -> str:
    """ONE sentence a budget holder can read: which option, and why it is the one."""
    from toolkit.costs.money import money, unit_cost

    budget = f" and answer within {latency_budget_ms:g} ms" if latency_budget_ms is not None else ""
    eligible = [option for option in ranked if not option.blockers()]
    if not eligible:
        closest = ranked[0] if ranked else None
        reasons = "; ".join(closest.blockers()) if closest else "nothing was priced"
        return (f"No option fits its device, keeps the system at or above {human_percent(floor, 2)} accuracy{budget}, "
                f"so none is recommended (the cheapest, {closest.name if closest else '—'}, is {reasons}).")
    best = eligible[0]
    currency = best.currency
    horizon = best.horizon
    payback = best.breakeven_month
    payback_text = ("it costs no more than the cloud from the start" if payback == 0 else
                    f"its {money(best.one_off, currency)} one-off cost is paid back in {human_months(payback)}"
                    if payback is not None else f"it does not pay back its {money(best.one_off, currency)} "
                                                f"one-off cost within {horizon} months")
    others = len(eligible) - 1
    among = f"the cheapest of the {len(eligible)} options that" if others else "the only option that"
    close = sum(1 for option in eligible[1:] if option.cost_per_1k <= best.cost_per_1k * CLOSE)
    close_text = f" ({close} other{'s' if close > 1 else ''} within 1% of it)" if close else ""
    return (f"Choose {best.variant.name} on {best.device}: it is {among} fit the device and keep the whole system at "
            f"or above {human_percent(floor, 2)} accuracy{budget}, answering {human_percent(best.share.share)} of "
            f"requests on the device for {unit_cost(best.cost_per_1k, currency)} per 1,000 requests over {horizon} "
            f"months{close_text} against {unit_cost(best.cloud_per_1k, currency)} for the cloud alone, and "
            f"{payback_text}.")
