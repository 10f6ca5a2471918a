"""The break-even arithmetic: pure functions over `Inputs`, in `Decimal`.

Money is kept in `Decimal` end to end so a report agrees with a hand calculation to the
cent; it is rounded only when shown. Conventions (they are the ones a reader checks):

* a month is 30 days (720 hours), as in the product brief's worked example;
* month m (1-based) has ``active_users × (1 + monthly_growth)^(m-1)`` users;
* costs accrue evenly through a month, one-off costs at time 0;
* 1 GB = 1000 MB; 1 kWh = 3.6e6 J.

Two options are compared. "Cloud" sends every request to the cloud. "Edge" serves
``on_device_share`` of the requests on the device and routes the rest to the same
cloud (a mixture of models), and pays the edge's one-off and running costs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal, localcontext

ZERO = Decimal(0)
ONE = Decimal(1)
DAYS_PER_MONTH = Decimal(30)
HOURS_PER_MONTH = Decimal(720)
SECONDS_PER_DAY = Decimal(86400)
SECONDS_PER_MONTH = DAYS_PER_MONTH * SECONDS_PER_DAY
JOULES_PER_KWH = Decimal(3_600_000)
MB_PER_GB = Decimal(1000)
EXTRAPOLATE_MONTHS = 600  # how far past the horizon "never" looks before it says "over 50 years"


@dataclass(frozen=True)
class Inputs:
    """Every figure the model uses, resolved (catalogue, bench and profile already applied)."""

    # traffic
    active_users: Decimal
    requests_per_user_per_day: Decimal
    monthly_growth: Decimal = ZERO
    tokens_in_per_request: Decimal = ZERO
    tokens_out_per_request: Decimal = ZERO
    seconds_per_request: Decimal = ZERO
    peak_to_average: Decimal = Decimal(2)
    # cloud: "api" (per request / token / minute) or "instances" (per hour, self-hosted)
    cloud_mode: str = "api"
    price_per_request: Decimal = ZERO
    price_per_1m_input_tokens: Decimal = ZERO
    price_per_1m_output_tokens: Decimal = ZERO
    price_per_minute: Decimal = ZERO
    price_per_hour: Decimal = ZERO
    throughput_rps: Decimal = ZERO
    utilisation: Decimal = ONE
    min_instances: Decimal = ONE
    # edge
    engineering_hours: Decimal = ZERO
    hourly_rate: Decimal = ZERO
    hardware_per_device: Decimal = ZERO
    devices: Decimal | None = None  # None: one device per active user (phones users own)
    model_size_mb: Decimal = ZERO
    updates_per_year: Decimal = ZERO
    egress_per_gb: Decimal = ZERO
    latency_ms: Decimal | None = None
    power_w: Decimal | None = None
    electricity_per_kwh: Decimal = ZERO
    energy_paid_by_user: bool = False
    upkeep_per_month: Decimal = ZERO
    # router
    on_device_share: Decimal = ZERO
    currency: str = "USD"


@dataclass
class Month:
    """One month of both options. `edge` maps cost item -> amount; `total` is its sum."""

    month: int
    active_users: Decimal
    requests: Decimal
    device_requests: Decimal
    cloud_only: Decimal
    cloud_only_instances: int | None
    edge: dict[str, Decimal]
    edge_instances: int | None
    user_energy: Decimal
    cumulative_cloud: Decimal = ZERO
    cumulative_edge: Decimal = ZERO

    @property
    def edge_total(self) -> Decimal:
        return sum(self.edge.values(), ZERO)


@dataclass
class Outcome:
    """Break-even month (fractional, None for never) and the reason in words."""

    month: Decimal | None
    reason: str
    extrapolated: bool = False


@dataclass
class Sensitivity:
    """The break-even month with one input at -50% and +50% (None: never within the horizon)."""

    name: str
    base_value: Decimal
    low_value: Decimal
    high_value: Decimal
    low_month: Decimal | None
    high_month: Decimal | None
    swing: Decimal = ZERO
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- traffic


def users_in_month(inputs: Inputs, month: int) -> Decimal:
    """users_m = active_users × (1 + monthly_growth)^(m − 1)."""
    return inputs.active_users * (ONE + inputs.monthly_growth) ** (month - 1)


def requests_per_day(inputs: Inputs, month: int = 1) -> Decimal:
    """requests/day = users_m × requests_per_user_per_day."""
    return users_in_month(inputs, month) * inputs.requests_per_user_per_day


def requests_in_month(inputs: Inputs, month: int) -> Decimal:
    """requests_m = users_m × requests_per_user_per_day × 30."""
    return requests_per_day(inputs, month) * DAYS_PER_MONTH


def devices_in_month(inputs: Inputs, month: int) -> Decimal:
    """devices_m = devices × users_m / users_1 (one per user when `devices` is not given)."""
    if inputs.devices is None:
        return users_in_month(inputs, month)
    return inputs.devices * (ONE + inputs.monthly_growth) ** (month - 1)


# ---------------------------------------------------------------- cloud


def api_cost_per_request(inputs: Inputs) -> Decimal:
    """price_per_request + tokens_in × price_in/1e6 + tokens_out × price_out/1e6
    + seconds_per_request / 60 × price_per_minute."""
    million = Decimal(1_000_000)
    return (
        inputs.price_per_request
        + inputs.tokens_in_per_request * inputs.price_per_1m_input_tokens / million
        + inputs.tokens_out_per_request * inputs.price_per_1m_output_tokens / million
        + inputs.seconds_per_request / Decimal(60) * inputs.price_per_minute
    )


def instances_needed(inputs: Inputs, requests: Decimal) -> int:
    """instances = max(min_instances, ceil(peak_rps / (throughput_rps × utilisation))), where
    peak_rps = requests / (30 × 86400 s) × peak_to_average. Zero requests need no instance.

    The minimum is paid even when idle: that is why a small router share rarely pays off
    against a self-hosted fleet."""
    if requests <= 0:
        return 0
    peak_rps = requests / SECONDS_PER_MONTH * inputs.peak_to_average
    needed = (peak_rps / (inputs.throughput_rps * inputs.utilisation)).to_integral_value(ROUND_CEILING)
    return int(max(inputs.min_instances.to_integral_value(ROUND_CEILING), needed))


def cloud_cost(inputs: Inputs, requests: Decimal) -> tuple[Decimal, int | None]:
    """The cloud's bill for `requests` in one month, and the instance count (None for an API).

    API: requests × api_cost_per_request. Instances: instances × price_per_hour × 720 h."""
    if inputs.cloud_mode == "instances":
        count = instances_needed(inputs, requests)
        return count * inputs.price_per_hour * HOURS_PER_MONTH, count
    return requests * api_cost_per_request(inputs), None


# ---------------------------------------------------------------- edge


def model_download_gb(inputs: Inputs) -> Decimal:
    return inputs.model_size_mb / MB_PER_GB


def energy_per_inference_kwh(inputs: Inputs) -> Decimal:
    """kWh per inference = latency_ms / 1000 × power_w / 3.6e6 (0 when either is unknown)."""
    if inputs.latency_ms is None or inputs.power_w is None:
        return ZERO
    return inputs.latency_ms / Decimal(1000) * inputs.power_w / JOULES_PER_KWH


def edge_one_off(inputs: Inputs) -> dict[str, Decimal]:
    """Paid at time 0: engineering = hours × rate; hardware = devices_1 × hardware_per_device;
    first install = devices_1 × model_size_gb × egress_per_gb."""
    devices = devices_in_month(inputs, 1)
    return {
        "engineering": inputs.engineering_hours * inputs.hourly_rate,
        "hardware": devices * inputs.hardware_per_device,
        "first_download": devices * model_download_gb(inputs) * inputs.egress_per_gb,
    }


def month_costs(inputs: Inputs, month: int) -> Month:
    """Both options' costs in month m (1-based).

    cloud-only = cloud_cost(requests_m)
    edge       = cloud_cost(requests_m × (1 − share))                  routed to the cloud
               + device_requests × kWh/inference × electricity          unless paid by users
               + devices_m × model_gb × updates_per_year / 12 × egress  model updates
               + (devices_m − devices_{m−1}) × (hardware + model_gb × egress)   new devices
               + upkeep_per_month
    """
    requests = requests_in_month(inputs, month)
    device_requests = requests * inputs.on_device_share
    cloud_only, cloud_only_instances = cloud_cost(inputs, requests)
    routed, edge_instances = cloud_cost(inputs, requests - device_requests)
    energy = device_requests * energy_per_inference_kwh(inputs) * inputs.electricity_per_kwh
    devices = devices_in_month(inputs, month)
    new_devices = devices - devices_in_month(inputs, month - 1) if month > 1 else ZERO
    new_devices = max(new_devices, ZERO)  # a shrinking fleet sells nothing back
    per_new_device = inputs.hardware_per_device + model_download_gb(inputs) * inputs.egress_per_gb
    edge = {
        "cloud": routed,
        "energy": ZERO if inputs.energy_paid_by_user else energy,
        "updates": devices * model_download_gb(inputs) * inputs.updates_per_year / Decimal(12) * inputs.egress_per_gb,
        "new_devices": new_devices * per_new_device,
        "upkeep": inputs.upkeep_per_month,
    }
    return Month(
        month=month,
        active_users=users_in_month(inputs, month),
        requests=requests,
        device_requests=device_requests,
        cloud_only=cloud_only,
        cloud_only_instances=cloud_only_instances,
        edge=edge,
        edge_instances=edge_instances,
        user_energy=energy if inputs.energy_paid_by_user else ZERO,
    )


def project(inputs: Inputs, months: int) -> list[Month]:
    """Months 1..N with running totals; the edge's total starts at its one-off cost."""
    cumulative_cloud = ZERO
    cumulative_edge = sum(edge_one_off(inputs).values(), ZERO)
    rows = []
    for month in range(1, months + 1):
        row = month_costs(inputs, month)
        cumulative_cloud += row.cloud_only
        cumulative_edge += row.edge_total
        row.cumulative_cloud, row.cumulative_edge = cumulative_cloud, cumulative_edge
        rows.append(row)
    return rows


# ---------------------------------------------------------------- capacity


def capacity_check(inputs: Inputs) -> dict:
    """Can one device serve its requests? per-device peak rps = requests/day × share / devices
    / 86400 × peak_to_average, against 1000 / latency_ms inferences per second."""
    if inputs.on_device_share == 0:
        return {"checked": False, "ok": True, "why": "no request is served on the device"}
    if inputs.latency_ms is None:
        return {"checked": False, "ok": True, "why": "no latency given or measured (edge.latency_ms or --bench)"}
    per_device_day = requests_per_day(inputs) * inputs.on_device_share / devices_in_month(inputs, 1)
    peak_rps = per_device_day / SECONDS_PER_DAY * inputs.peak_to_average
    max_rps = Decimal(1000) / inputs.latency_ms
    busy = peak_rps / max_rps
    return {
        "checked": True,
        "ok": busy <= 1,
        "requests_per_device_per_day": per_device_day,
        "peak_requests_per_s": peak_rps,
        "max_requests_per_s": max_rps,
        "peak_busy_fraction": busy,
        "latency_ms": inputs.latency_ms,
    }


# ---------------------------------------------------------------- break-even


def _gap(row: Month) -> Decimal:
    return row.cumulative_edge - row.cumulative_cloud


def find_breakeven(inputs: Inputs, rows: list[Month], explain: bool = True) -> Outcome:
    """First time t (months, fractional) at which the edge's cumulative cost is at or below
    the cloud's. Within month m costs accrue linearly, so with gap(t) = edge(t) − cloud(t):
    t = (m − 1) + gap(m−1) / (gap(m−1) − gap(m)). Past the horizon the months are
    extrapolated (up to 50 years) only to say how far away it is."""
    capacity = capacity_check(inputs)
    if not capacity["ok"]:
        return Outcome(None, _capacity_reason(capacity))
    one_off = sum(edge_one_off(inputs).values(), ZERO)
    if one_off <= 0 and (not rows or rows[0].edge_total <= rows[0].cloud_only):
        return Outcome(ZERO, "no one-off cost to recover and the edge costs no more from the first month")
    previous_gap, month_found = one_off, None
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
    if last.edge_total >= last.cloud_only and inputs.monthly_growth <= 0:
        return Outcome(None, (
            f"the edge option costs {money(last.edge_total, currency)} a month against the cloud's "
            f"{money(last.cloud_only, currency)}, so its one-off {money(one_off, currency)} is never recovered"))
    gap = _gap(last) if rows else one_off
    cumulative_edge, cumulative_cloud = (last.cumulative_edge, last.cumulative_cloud) if rows else (one_off, ZERO)
    with localcontext() as context:
        context.prec = 40
        for month in range(horizon + 1, horizon + EXTRAPOLATE_MONTHS + 1):
            row = month_costs(inputs, month)
            cumulative_edge += row.edge_total
            cumulative_cloud += row.cloud_only
            new_gap = cumulative_edge - cumulative_cloud
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
    total_requests = sum((row.requests for row in rows), ZERO)
    device_part = first.edge_total - first.edge["cloud"]
    return {
        "cloud": first.cloud_only / first.requests * thousand,
        "edge": first.edge_total / first.requests * thousand,
        "on_device": (device_part / first.device_requests * thousand) if first.device_requests else ZERO,
        "cloud_over_horizon": rows[-1].cumulative_cloud / total_requests * thousand,
        "edge_over_horizon": rows[-1].cumulative_edge / total_requests * thousand,
    }


# ---------------------------------------------------------------- sensitivity

BOUNDED = {"on_device_share": (ZERO, ONE), "utilisation": (Decimal("0.01"), ONE)}
INTEGER = {"min_instances"}
API_ONLY = {"price_per_request", "price_per_1m_input_tokens", "price_per_1m_output_tokens", "price_per_minute",
            "tokens_in_per_request", "tokens_out_per_request", "seconds_per_request"}
INSTANCE_ONLY = {"price_per_hour", "throughput_rps", "utilisation", "min_instances", "peak_to_average"}
SKIPPED = {"cloud_mode", "currency", "energy_paid_by_user"}


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
    if not operator_energy:
        unused |= {"power_w", "electricity_per_kwh"}
    if inputs.on_device_share == 0:
        unused |= {"latency_ms", "power_w"}
    return [name for name in Inputs.__dataclass_fields__
            if name not in unused and getattr(inputs, name) not in (None, 0)]


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
