"""Price one variant on one device: its share, its latency there, its size, through toolkit.costs.

The scenario is the user's; the plan replaces only what it measured (the figures): the
on-device share (from the confidence curve, unless the scenario fixes it), the p50 and p95
on THE device priced (measured there, or estimated for it and marked so), and the model
size. The scenario's edge.device becomes the device priced, so its profile's power is used.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from decimal import Decimal

from toolkit.errors import BadInput
from toolkit.plan.fit import Fit, fit_of
from toolkit.plan.share import ShareChoice, choose_share, share_at
from toolkit.plan.variants import Measurement, Variant, measurement

logger = logging.getLogger(__name__)

AUTO_SHARE = ("confidence", "auto")  # router.on_device_share values that ask the plan to choose


@dataclass
class Option:
    """One variant on one device, priced."""

    variant: Variant = field(repr=False)
    device: str
    measured: Measurement | None = field(repr=False)
    fit: Fit
    share: ShareChoice
    within_budget: bool | None  # None: no latency budget
    currency: str = "USD"
    result: object | None = field(default=None, repr=False)  # toolkit.costs.BreakevenResult
    error: str | None = None  # the cost model refused this option's figures

    @property
    def name(self) -> str:
        return f"{self.variant.name} @ {self.device}"

    @property
    def p50_ms(self) -> float | None:
        return self.measured.p50_ms if self.measured else None

    @property
    def p95_ms(self) -> float | None:
        return self.measured.p95_ms if self.measured else None

    @property
    def tail_ms(self) -> float | None:
        """What the latency budget is held against: p95 when known, else p50."""
        return self.p95_ms or self.p50_ms

    @property
    def effective_share(self) -> float | None:
        """The share the device answers after the latency budget (the cost model's figure)."""
        value = getattr(self.result, "effective_share", None)
        return float(value) if value is not None else None

    @property
    def system_accuracy(self) -> float | None:
        return self.share.system_accuracy

    @property
    def per_1k(self) -> dict:
        return getattr(self.result, "per_1k", None) or {}

    @property
    def one_off(self) -> Decimal | None:
        return sum(self.result.one_off.values(), Decimal(0)) if self.result is not None else None

    @property
    def breakeven_month(self):
        return self.result.breakeven_month if self.result is not None else None

    @property
    def horizon(self) -> int | None:
        return self.result.months if self.result is not None else None

    @property
    def saving(self) -> Decimal | None:
        """Cumulative cloud-only cost minus the option's cumulative cost at the horizon."""
        if self.result is None:
            return None
        row = self.result.rows[min(self.result.months, len(self.result.rows)) - 1]
        return row.cumulative_cloud - row.cumulative_edge

    @property
    def total_cost(self) -> Decimal | None:
        if self.result is None:
            return None
        row = self.result.rows[min(self.result.months, len(self.result.rows)) - 1]
        return row.cumulative_edge

    @property
    def cost_per_1k(self) -> Decimal | None:
        """Per 1,000 requests over the horizon, one-off included: what the ranking compares."""
        return self.per_1k.get("edge_over_horizon")

    @property
    def cloud_per_1k(self) -> Decimal | None:
        return self.per_1k.get("cloud_over_horizon")

    def blockers(self) -> list[str]:
        """Why this option cannot be recommended (empty: it can)."""
        reasons = []
        if self.error:
            reasons.append(f"not priced: {self.error}")
        if not self.fit.fits:
            reasons.append(f"does not fit: {self.fit.why}")
        if not self.share.meets_floor:
            reasons.append("below the accuracy floor")
        if self.within_budget is False:
            reasons.append("over the latency budget")
        return reasons


def scenario_share(scenario: dict) -> float | None:
    """The share the scenario fixes by hand, or None when the confidence curve should set it."""
    router = scenario.get("router") if isinstance(scenario.get("router"), dict) else {}
    value = router.get("on_device_share")
    if value is None or (isinstance(value, str) and value.strip().lower() in AUTO_SHARE):
        return None
    from toolkit.costs.values import ValueProblem, read_value

    try:
        share, _currency, _source = read_value(value, percent=True)
    except ValueProblem as problem:
        raise BadInput(f"router.on_device_share {problem}") from None
    if not 0 <= share <= 1:
        raise BadInput(f"router.on_device_share must be within [0, 1] (got {value!r})")
    return float(share)


def device_measurement(variant: Variant, device: str, profiles_dir=None) -> Measurement:
    """The variant's bench on `device`, else an estimate for it made now (marked estimate)."""
    if device in variant.benches:
        return variant.benches[device]
    from toolkit.bench import bench

    record = bench(variant.model_path, device=device, estimate=True, profiles_dir=profiles_dir)
    found = measurement(record, f"estimate for {device} (made by plan)")
    variant.benches[device] = found
    return found


def decide_share(variant: Variant, fixed: float | None, floor: float, cloud_accuracy: float | None) -> ShareChoice:
    if fixed is not None:
        return share_at(variant.curve, fixed, floor, cloud_accuracy)
    if variant.curve is None:
        raise BadInput(f"{variant.name}: its validation has no confidence record (validated by an older edgeward?): "
                       "validate it again, or fix router.on_device_share in the scenario")
    return choose_share(variant.curve, floor, cloud_accuracy)


def priced_scenario(scenario: dict, device: str, share: float, latency_budget_ms: float | None = None) -> dict:
    """The scenario with the device priced, the share and the latency budget; the measured
    figures go in separately."""
    priced = copy.deepcopy(scenario)
    edge = priced.setdefault("edge", {})
    if isinstance(edge, dict):
        edge["device"] = device
        if latency_budget_ms is not None:
            edge["latency_budget_ms"] = latency_budget_ms
    router = priced.get("router") if isinstance(priced.get("router"), dict) else {}
    router["on_device_share"] = share
    priced["router"] = router
    return priced


def figures_for(option: Option) -> dict:
    """name -> (value, source) for toolkit.costs.breakeven(figures=...)."""
    measured, variant = option.measured, option.variant
    how = measured.how
    figures = {
        "on_device_share": (option.share.share, f"plan: {option.share.why}" if option.share.how == "confidence"
                            else f"scenario router.on_device_share ({option.share.why})"),
        "model_size_mb": (variant.size_bytes / 1_000_000, f"{variant.name}: model file size"),
        "latency_ms": (measured.p50_ms, f"{variant.name}: p50 {how} on {option.device} ({measured.source})"),
    }
    if measured.p95_ms is not None:
        figures["latency_p95_ms"] = (measured.p95_ms, f"{variant.name}: p95 {how} on {option.device}")
    return figures


def price_option(option: Option, scenario: dict, *, catalogue=None, latency_budget_ms: float | None = None) -> Option:
    """Run the cost model for one option; a figure the cost model refuses becomes option.error."""
    from toolkit.costs import breakeven

    priced = priced_scenario(scenario, option.device, option.share.share, latency_budget_ms)
    try:
        option.result = breakeven(priced, figures=figures_for(option), catalogue=catalogue or ())
    except BadInput as error:
        option.error = str(error)
        logger.warning("%s: not priced: %s", option.name, error)
        return option
    option.currency = option.result.currency
    return option


def build_option(variant: Variant, device: str, profile, *, fixed_share, floor, cloud_accuracy, latency_budget_ms,
                 profiles_dir=None) -> Option:
    measured = device_measurement(variant, device, profiles_dir)
    share = decide_share(variant, fixed_share, floor, cloud_accuracy)
    within = None if latency_budget_ms is None else (measured.p95_ms or measured.p50_ms) <= latency_budget_ms
    return Option(variant=variant, device=device, measured=measured, fit=fit_of(variant, measured, profile),
                  share=share, within_budget=within)

