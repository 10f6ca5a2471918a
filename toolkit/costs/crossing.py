"""When the edge pays for itself: the crossing month of the projected costs, the reason in
words when there is none within the horizon, and the savings and costs per request that the
report quotes beside it (over `toolkit.costs.model`'s monthly projection)."""

from __future__ import annotations

from decimal import Decimal, localcontext

from toolkit.costs.model import (
    EXTRAPOLATE_MONTHS,
    ZERO,
    Inputs,
    Month,
    Outcome,
    capacity_check,
    edge_one_off,
    month_costs,
)


def _gap(row: Month) -> Decimal:
    return row.cumulative_edge - row.cumulative_cloud


def find_breakeven(inputs: Inputs, rows: list[Month], explain: bool = True) -> Outcome:
    """First time t (months, fractional) at which the edge's cumulative cost is at or below
    the cloud's. Within month m costs accrue linearly, so with gap(t) = edge(t) − cloud(t):
    t = (m − 1) + gap(m−1) / (gap(m−1) − gap(m)). Past the horizon the months are
    extrapolated (up to 50 years) only to say how far away it is."""
    capacity = capacity_check(inputs, len(rows) or 1)
    if not capacity["ok"]:
        return Outcome(None, _capacity_reason(capacity))
    one_off = sum(edge_one_off(inputs).values(), ZERO)
    if one_off <= 0 and (not rows or rows[0].edge_total <= rows[0].cloud_only):
        return Outcome(ZERO, "no one-off cost to recover and the edge costs no more from the first month")
    previous_gap = one_off
    for row in rows:
        gap = _gap(row)
        if gap <= 0:
            month_found = Decimal(row.month - 1) + previous_gap / (previous_gap - gap)
            return Outcome(month_found, _crossing_reason(rows, row.month))
        previous_gap = gap
    return _never(inputs, rows, one_off) if explain else Outcome(None, "not within the horizon")


def _crossing_reason(rows: list[Month], month: int) -> str:
    later = [row.month for row in rows if row.month > month and _gap(row) > 0]
    if later:
        return f"the edge catches up in month {month} but falls behind again in month {later[0]}"
    return "the monthly saving recovers the one-off cost"


def _never(inputs: Inputs, rows: list[Month], one_off: Decimal) -> Outcome:
    from toolkit.costs.money import money

    horizon = len(rows)
    last = rows[-1] if rows else month_costs(inputs, 1)
    currency = inputs.currency
    growing = inputs.monthly_growth > 0 or inputs.lifetime_months
    if last.edge_total >= last.cloud_only and not growing:
        return Outcome(None, (
            f"the edge option costs {money(last.edge_total, currency)} a month against the cloud's "
            f"{money(last.cloud_only, currency)}, so its one-off {money(one_off, currency)} is never recovered"))
    gap = _gap(last) if rows else one_off
    cumulative_edge, cumulative_cloud = (last.cumulative_edge, last.cumulative_cloud) if rows else (one_off, ZERO)
    with localcontext() as context:
        context.prec = 40
        for month in range(horizon + 1, horizon + EXTRAPOLATE_MONTHS + 1):
            row = month_costs(inputs, month)
            cumulative_edge += row.edge_total * row.discount
            cumulative_cloud += row.cloud_only * row.discount
            new_gap = cumulative_edge - cumulative_cloud
            if abs(new_gap) > Decimal("1e18"):
                break  # runaway growth: the answer below holds
            if new_gap <= 0:
                at = Decimal(month - 1) + gap / (gap - new_gap)
                return Outcome(None, (
                    f"not within {horizon} months: the edge is still {money(_gap(last), currency)} behind "
                    f"then, and would break even in month {at.quantize(Decimal('0.1'))}"), extrapolated=True)
            gap = new_gap
    if last.edge_total >= last.cloud_only:
        return Outcome(None, (
            f"the edge option costs {money(last.edge_total, currency)} a month against the cloud's "
            f"{money(last.cloud_only, currency)} in month {last.month}, so its one-off "
            f"{money(one_off, currency)} is never recovered"))
    return Outcome(None, (
        f"the monthly saving ({money(last.cloud_only - last.edge_total, currency)} in month {last.month}) "
        f"does not recover the one-off {money(one_off, currency)} within {EXTRAPOLATE_MONTHS // 12} years"))


def _capacity_reason(capacity: dict) -> str:
    return (
        f"a device cannot keep up: it must serve {float(capacity['peak_requests_per_s']):.3g} requests/s at peak "
        f"but one inference takes {float(capacity['latency_ms']):g} ms "
        f"({float(capacity['max_requests_per_s']):.3g}/s)")


def savings_at(rows: list[Month], month: int) -> Decimal | None:
    """Cumulative cloud − cumulative edge at the end of `month` (positive: the edge saves)."""
    if month < 1 or month > len(rows):
        return None
    row = rows[month - 1]
    return row.cumulative_cloud - row.cumulative_edge


def per_thousand(inputs: Inputs, rows: list[Month]) -> dict[str, Decimal]:
    """Cost per 1,000 requests: month 1's running cost each way, the on-device part alone,
    and each option over the whole horizon with its one-off cost included."""
    first = rows[0]
    thousand = Decimal(1000)
    total_requests = sum((row.requests * row.discount for row in rows), ZERO)
    device_part = first.edge_total - first.edge["cloud"]
    return {
        "cloud": first.cloud_only / first.requests * thousand,
        "edge": first.edge_total / first.requests * thousand,
        "on_device": (device_part / first.device_requests * thousand) if first.device_requests else ZERO,
        "cloud_over_horizon": rows[-1].cumulative_cloud / total_requests * thousand,
        "edge_over_horizon": rows[-1].cumulative_edge / total_requests * thousand,
    }
