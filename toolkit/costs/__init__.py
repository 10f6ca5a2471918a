"""Break-even: the one-off cost of running a model on the device against recurring cloud spend.

    from toolkit.costs import breakeven
    from toolkit.costs.report import write_reports

    result = breakeven("scenario.yaml", bench=["bench.json"])
    print(result.breakeven_month, result.savings[12])
    write_reports(result, "exported/breakeven")

`model.py` holds the arithmetic (pure functions, formulas in the docstrings),
`scenario.py` reads and checks a scenario (a pydantic model: unknown keys refused, every
problem listed at once), `pricing.py` the cloud price catalogue (volume tiers, free tiers,
on-demand / reserved / spot), `report.py` the Markdown / JSON / HTML (Jinja2) / PNG reports.

Interface for callers that price many variants (`toolkit.plan`):

    breakeven(scenario, *, bench=(), months=None, catalogue=None, figures=None) -> BreakevenResult

* `scenario`: a mapping or a YAML path; checked once (BadInput lists every problem).
* `bench`: `edgeward bench --json` files (or BenchRecord) for the edge device / cloud instance.
* `catalogue`: a folder (or list of folders) of the user's cloud entries, added to the builtin
  ones (the user's entry wins on a name clash; `result.scenario.entries[i].origin` says where
  each came from). `$EDGEWARD_CLOUD_CATALOGUE` (os.pathsep-separated) adds the same way.
* `figures`: measured or derived figures that replace the scenario's, each `name -> (value,
  source)`; `value` a number (Decimal, int, float or str). The names a planner sets:
  `on_device_share` (from the confidence curve: say so in the source), `latency_ms` (p50 on
  THE device priced; put "estimate" in the source when it is one), `latency_p95_ms`,
  `model_size_mb`, `power_w`. Checked with the same bounds as the scenario's own values.
* Result (`BreakevenResult`): `breakeven_month` (Decimal months or None), `per_1k`
  ("cloud", "edge", "on_device", "..._over_horizon": cost per 1,000 requests), `one_off`
  (item -> amount), `savings` (month -> amount, only months within the horizon),
  `rows` (months 1..horizon, never past it), `devices` (the fleet: count per month, how it
  was sized, measured or estimate), `effective_share` (the share actually served on device
  after the latency budget), `notes` and `warnings` (strings for the report).
  All money is Decimal in `result.currency`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from decimal import Decimal

from toolkit.costs.model import Inputs, Month, Outcome, Sensitivity

SAVINGS_AT = (12, 24, 36)
MAX_AMOUNT = Decimal("1e15")  # past a quadrillion a month the inputs are wrong (and cents lose precision)
MAX_REQUESTS = Decimal("1e18")  # requests a month: a billion a second


@dataclass
class BreakevenResult:
    scenario: object  # toolkit.costs.scenario.Scenario
    inputs: Inputs
    months: int
    rows: list[Month]  # months 1..horizon (`months`); nothing is reported past it
    one_off: dict[str, Decimal]
    outcome: Outcome
    savings: dict[int, Decimal]
    per_1k: dict[str, Decimal]
    capacity: dict
    sensitivity: list[Sensitivity]
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    devices: dict = field(default_factory=dict)
    effective_share: Decimal = Decimal(0)
    alternatives: dict[str, Decimal] = field(default_factory=dict)  # e.g. the autoscaled fleet's month 1

    @property
    def breakeven_month(self) -> Decimal | None:
        return self.outcome.month

    @property
    def reason(self) -> str:
        return self.outcome.reason

    @property
    def horizon(self) -> list[Month]:
        return self.rows[: self.months]

    @property
    def currency(self) -> str:
        return self.inputs.currency

    def to_dict(self) -> dict:
        from toolkit.costs.serialize import result_dict

        return result_dict(self)


def breakeven(scenario: dict | str | os.PathLike, *, bench=(), months: int | None = None, catalogue=(),
              figures: dict | None = None) -> BreakevenResult:
    """Price the scenario; `bench` are `edgeward bench --json` files that fill measured figures;
    `months` overrides the scenario's horizon (default 36); `catalogue` adds the user's cloud
    price folders; `figures` are a caller's measured figures (see the module docstring)."""
    from toolkit.costs import crossing, model
    from toolkit.costs.scenario import load_scenario
    from toolkit.costs.sensitivity import sensitivity as vary_each_input

    if isinstance(bench, str | os.PathLike):
        bench = [bench]
    resolved = load_scenario(scenario, bench=bench, months=months, catalogue=catalogue, figures=figures)
    inputs, horizon = resolved.inputs, resolved.months
    _check_inputs(inputs)
    rows = model.project(inputs, horizon)
    _check_magnitude(rows)
    outcome = crossing.find_breakeven(inputs, rows)
    notes = list(resolved.notes)
    capacity = model.capacity_check(inputs, horizon)
    if not capacity["checked"]:
        notes.append(f"device capacity not checked: {capacity['why']}")
    sensitivity = vary_each_input(inputs, horizon, outcome.month)
    savings = {month: crossing.savings_at(rows, month) for month in sorted({*SAVINGS_AT, horizon}) if month <= horizon}
    return BreakevenResult(
        scenario=resolved,
        inputs=inputs,
        months=horizon,
        rows=rows,
        one_off=model.edge_one_off(inputs),
        outcome=outcome,
        savings=savings,
        per_1k=crossing.per_thousand(inputs, rows),
        capacity=capacity,
        sensitivity=sensitivity,
        notes=notes,
        warnings=_warnings(resolved, rows),
        devices=_fleet(inputs, rows),
        effective_share=model.effective_share(inputs),
        alternatives=_alternatives(inputs, rows),
    )


def _check_inputs(inputs: Inputs) -> None:
    """A figure from a bench file or a profile gets the bounds a scenario's own figure gets."""
    from toolkit.errors import BadInput

    for name in inputs.__dataclass_fields__:
        value = getattr(inputs, name)
        if isinstance(value, Decimal) and (not value.is_finite() or abs(value) > MAX_AMOUNT):
            raise BadInput(f"{name} is {value:.3g}: too large to be real (at most 1e15); check the scenario, "
                           "the bench file and the device profile")


def _check_magnitude(rows) -> None:
    """Runaway inputs (a 400% monthly growth, 1e30 requests a day) are bad input, not a report."""
    from toolkit.errors import BadInput

    for row in rows:
        if row.requests > MAX_REQUESTS:
            raise BadInput(f"more than 1e18 requests in month {row.month}: check traffic (active_users, "
                           "requests_per_user_per_day, monthly_growth)")
        amounts = [row.cloud_only, row.edge_total, row.user_energy, row.cumulative_cloud, row.cumulative_edge,
                   row.devices]
        if max(abs(amount) for amount in amounts) > MAX_AMOUNT:
            raise BadInput(f"a month's cost passes 1e15 by month {row.month} ({float(row.requests):.3g} requests "
                           f"that month): check traffic (active_users, requests_per_user_per_day, "
                           f"monthly_growth) and the prices")


def _warnings(resolved, rows) -> list[str]:
    from toolkit.costs.pricing import STALE_MONTHS

    warnings = []
    past = [row.month for row in rows if row.past_last_tier]
    if past:
        tiered = [e for e in resolved.entries if e.tiers]
        last = tiered[0].tiers[-1] if tiered else None
        limit = f" ({last.up_to:,f} a month)" if last is not None and last.up_to is not None else ""
        warnings.append(f"traffic passes the catalogue's last price tier{limit} from month {past[0]}: priced at "
                        "the last tier's rate; the provider may quote less (ask them)")
    for entry in resolved.entries:
        if entry.stale:
            warnings.append(f"catalogue {entry.name} is priced as of {entry.as_of}, more than {STALE_MONTHS} "
                            "months ago: check the provider's current price")
    return warnings


def _fleet(inputs: Inputs, rows) -> dict:
    """How many devices, how the count was reached, and whether the latency behind it was measured."""
    how = {"users": "one per active user (their own devices)",
           "fixed": "the scenario's edge.devices" + (", growing with users" if inputs.devices_grow else ""),
           "traffic": "sized from the peak on-device requests/s and 1000 / p50 ms × concurrency per device"}
    return {"sized": inputs.fleet, "how": how[inputs.fleet], "latency": inputs.latency_kind,
            "first": rows[0].devices, "last": rows[-1].devices}


def _alternatives(inputs: Inputs, rows) -> dict[str, Decimal]:
    """Month 1 of the cloud-only option under the other way of sizing instances."""
    from toolkit.costs import model

    if inputs.cloud_mode != "instances" or not inputs.hourly_load:
        return {}
    other = "peak" if inputs.scaling == "autoscaled" else "autoscaled"
    return {f"cloud_only_{other}": model.cloud_bill(inputs, rows[0].requests, scaling=other).amount}
