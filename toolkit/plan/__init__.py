"""The decision: every variant × device × one scenario → one ranked list of ways to deploy.

    from toolkit.plan import build_plan, load_variants
    from toolkit.plan.report import write_plan

    variants = load_variants(["exported/digits-int8", "exported/digits-fp16"])
    result = build_plan(variants, ["raspberry-pi-5"], "scenario.yaml", min_accuracy=0.98)
    print(result.recommendation)
    write_plan(result, "exported/plan")

Each option's money comes from its measurements: the on-device share from the model's own
confidence on validation data (`share.py`), fit from its size and memory on that device
(`fit.py`), latency measured on that device or estimated for it (`price.py`), all priced by
`toolkit.costs`. `rank.py` orders them and says in one sentence which to choose.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection
from dataclasses import dataclass, field

from toolkit.errors import BadInput
from toolkit.plan.price import AUTO_SHARE, Option, build_option, price_option, scenario_share
from toolkit.plan.rank import pareto_front, rank, recommendation
from toolkit.plan.variants import Variant, load_variants, variant_from_files

__all__ = ["Plan", "build_plan", "load_variants", "variant_from_files", "parse_accuracy", "read_scenario", "scenario_problems"]

logger = logging.getLogger(__name__)


@dataclass
class Plan:
    scenario_name: str
    options: list[Option]  # ranked: the recommended one first
    floor: float
    floor_source: str
    cloud_accuracy: float | None
    latency_budget_ms: float | None
    fixed_share: float | None
    recommendation: str
    pareto: list[Option] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def recommended(self) -> Option | None:
        first = self.options[0] if self.options else None
        return first if first is not None and not first.blockers() else None

    def to_dict(self) -> dict:
        from toolkit.plan.serialize import plan_dict

        return plan_dict(self)


def parse_accuracy(value, what: str) -> float | None:
    """0.98, "98%" or 98 (points) → 0.98; BadInput for anything outside [0, 1]."""
    if value is None:
        return None
    text = str(value).strip()
    try:
        number = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise BadInput(f"{what} {value!r}: give a fraction (0.98) or a percentage (98%)") from None
    if 1 < number <= 100 and not text.endswith("%"):
        number /= 100
    if not 0 <= number <= 1:
        raise BadInput(f"{what} {value!r}: give an accuracy between 0 and 1 (or 0% and 100%)")
    return number


def scenario_problems(data: dict, *, catalogue=()) -> list[str]:
    """Every problem in a scenario a plan will price: as toolkit.costs checks it, except that
    router.on_device_share may be left out (or say `confidence`) for the plan to set. Never raises."""
    from toolkit.costs.scenario import scenario_problems as cost_problems

    if isinstance(data, dict):
        router = data.get("router") if isinstance(data.get("router"), dict) else {}
        share = router.get("on_device_share")
        if share is None or (isinstance(share, str) and share.strip().lower() in AUTO_SHARE):
            data = {**data, "router": {**router, "on_device_share": 0}}  # a placeholder: the plan sets it
    return cost_problems(data, catalogue=catalogue)


def read_scenario(scenario) -> dict:
    from toolkit.costs.scenario import read_scenario_file

    if isinstance(scenario, dict):
        return scenario
    return read_scenario_file(scenario)


def build_plan(variants: list[Variant], devices, scenario: dict | str | os.PathLike, *, min_accuracy=None,
               cloud_accuracy=None, latency_budget_ms: float | None = None, catalogue=None,
               profiles_dir=None, skip: Collection[tuple[str, str]] = ()) -> Plan:
    """Price every variant on every device and rank them.

    `skip`: (variant name, device) pairs left out of the ranking (a sweep's exclusions).
    `min_accuracy`: the floor for the whole system (device + cloud); default the cloud
    model's accuracy (the reference's on the validation data, or `cloud_accuracy`).
    `latency_budget_ms`: the p95 (p50 where only that is known) an option must answer within.
    """
    from toolkit.devices.profiles import get_profile

    if not variants:
        raise BadInput("no variants to plan")
    devices = [d.strip() for d in (devices.split(",") if isinstance(devices, str) else devices) if d and d.strip()]
    if not devices:
        raise BadInput("--devices: name at least one device profile (edgeward devices list)")
    profiles = {device: get_profile(device, profiles_dir) for device in devices}  # unknown names: BadInput
    cloud = parse_accuracy(cloud_accuracy, "--cloud-accuracy")
    data = read_scenario(scenario)
    latency_budget_ms = latency_budget(latency_budget_ms, data)
    fixed = scenario_share(data)
    floor, floor_source = accuracy_floor(variants, parse_accuracy(min_accuracy, "--min-accuracy"), cloud)
    options = []
    for variant in variants:
        if variant.accuracy is None:
            raise BadInput(f"{variant.name}: its validation has no accuracy or agreement figure")
        for device in devices:
            if (variant.name, device) in skip:
                continue
            option = build_option(variant, device, profiles[device], fixed_share=fixed, floor=floor,
                                  cloud_accuracy=cloud, latency_budget_ms=latency_budget_ms, profiles_dir=profiles_dir)
            options.append(price_option(option, data, catalogue=catalogue, latency_budget_ms=latency_budget_ms))
    if not options:
        raise BadInput("every variant × device combination is excluded: nothing to plan")
    if all(option.error for option in options):
        raise BadInput(f"the scenario cannot be priced: {options[0].error}")
    ranked = rank(options)
    notes = []
    for option in ranked:  # the cost model's warnings (a price tier passed, an old price), once each
        for warning in getattr(option.result, "warnings", None) or ():
            if warning not in notes:
                notes.append(warning)
    notes += [note for variant in variants for note in variant.skipped]
    if fixed is not None:
        notes.append(f"the on-device share is fixed by the scenario at {fixed:.1%}, not set from each model's "
                     "confidence: remove router.on_device_share to let the measurements decide")
    return Plan(scenario_name=str(data.get("name") or "scenario"), options=ranked, floor=floor,
                floor_source=floor_source, cloud_accuracy=cloud, latency_budget_ms=latency_budget_ms,
                fixed_share=fixed, recommendation=recommendation(ranked, floor, latency_budget_ms),
                pareto=pareto_front(ranked), notes=notes)


def latency_budget(given, scenario: dict) -> float | None:
    """--latency-budget-ms, else the scenario's edge.latency_budget_ms; BadInput unless positive."""
    edge = scenario.get("edge") if isinstance(scenario.get("edge"), dict) else {}
    value, what = (given, "--latency-budget-ms") if given is not None else (edge.get("latency_budget_ms"),
                                                                            "edge.latency_budget_ms")
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BadInput(f"{what} {value!r}: give a number of milliseconds") from None
    if not 0 < number < float("inf"):
        raise BadInput(f"{what} {value!r}: give a positive number of milliseconds")
    return number


def accuracy_floor(variants: list[Variant], min_accuracy: float | None, cloud: float | None) -> tuple[float, str]:
    if min_accuracy is not None:
        return min_accuracy, "given"
    if cloud is not None:
        return cloud, "the cloud model's stated accuracy: the system answers as well as the cloud alone"
    references = [v.validation.get("reference_accuracy") for v in variants if v.validation.get("reference_accuracy")]
    if not references:
        raise BadInput("no reference accuracy in the validations: give --min-accuracy")
    return max(references), "the cloud model's accuracy on the validation data: the system answers as well as " \
                            "the cloud alone"
