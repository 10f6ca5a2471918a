"""Break-even: the one-off cost of running a model on the device against recurring cloud spend.

    from toolkit.costs import breakeven
    from toolkit.costs.report import write_reports

    result = breakeven("scenario.yaml", bench=["bench.json"])
    print(result.breakeven_month, result.savings[12])
    write_reports(result, "exported/breakeven")

`model.py` holds the arithmetic (pure functions, formulas in the docstrings),
`scenario.py` reads and checks a scenario, `pricing.py` the cloud price catalogue,
`report.py` the Markdown / JSON / HTML / PNG reports.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from decimal import Decimal

from toolkit.costs.model import Inputs, Month, Outcome, Sensitivity

SAVINGS_AT = (12, 24, 36)
MAX_AMOUNT = Decimal("1e15")  # past a quadrillion a month the inputs are wrong (and cents lose precision)


@dataclass
class BreakevenResult:
    scenario: object  # toolkit.costs.scenario.Scenario
    inputs: Inputs
    months: int
    rows: list[Month]  # months 1..max(horizon, 36); the horizon is `months`
    one_off: dict[str, Decimal]
    outcome: Outcome
    savings: dict[int, Decimal]
    per_1k: dict[str, Decimal]
    capacity: dict
    sensitivity: list[Sensitivity]
    notes: list[str] = field(default_factory=list)

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


def breakeven(scenario: dict | str | os.PathLike, *, bench=(), months: int | None = None) -> BreakevenResult:
    """Price the scenario; `bench` are `edgeward bench --json` files that fill measured figures;
    `months` overrides the scenario's horizon (default 36)."""
    from toolkit.costs import model
    from toolkit.costs.scenario import load_scenario

    if isinstance(bench, str | os.PathLike):
        bench = [bench]
    resolved = load_scenario(scenario, bench=bench, months=months)
    inputs, horizon = resolved.inputs, resolved.months
    rows = model.project(inputs, max(horizon, max(SAVINGS_AT)))
    _check_magnitude(rows)
    outcome = model.find_breakeven(inputs, rows[:horizon])
    notes = list(resolved.notes)
    capacity = model.capacity_check(inputs)
    if not capacity["checked"]:
        notes.append(f"device capacity not checked: {capacity['why']}")
    return BreakevenResult(
        scenario=resolved,
        inputs=inputs,
        months=horizon,
        rows=rows,
        one_off=model.edge_one_off(inputs),
        outcome=outcome,
        savings={month: model.savings_at(rows, month) for month in SAVINGS_AT},
        per_1k=model.per_thousand(inputs, rows[:horizon]),
        capacity=capacity,
        sensitivity=model.sensitivity(inputs, horizon, outcome.month),
        notes=notes,
    )


def _check_magnitude(rows) -> None:
    """Runaway inputs (a 400% monthly growth, 1e30 requests a day) are bad input, not a report."""
    from toolkit.errors import BadInput

    for row in rows:
        if max(abs(row.cloud_only), abs(row.edge_total)) > MAX_AMOUNT:
            raise BadInput(f"a month's cost passes 1e15 by month {row.month} ({float(row.requests):.3g} requests "
                           f"that month): check traffic (active_users, requests_per_user_per_day, "
                           f"monthly_growth) and the prices")
