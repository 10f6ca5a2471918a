"""The break-even arithmetic: pure functions over `Inputs`, in `Decimal`.

Money is kept in `Decimal` end to end so a report agrees with a hand calculation to the
cent; it is rounded only when shown. Conventions (they are the ones a reader checks):

* a month is 30 days (720 hours), as in the product brief's worked example;
* month m (1-based) has ``active_users × (1 + monthly_growth)^(m-1)`` users;
* costs accrue evenly through a month, one-off costs at time 0; with a discount rate r
  (a year) month m's costs count ``(1 + r)^(−m/12)`` (present value);
* 1 GB = 1000 MB; 1 kWh = 3.6e6 J.

Two options are compared. "Cloud" sends every request to the cloud. "Edge" serves
``on_device_share`` of the requests on the device (less those the device cannot serve
within the latency budget) and routes the rest to the same cloud, and pays the edge's
one-off and running costs. The fleet is the users' own devices (one per active user),
a fixed count the scenario declares, or as many devices as the peak traffic needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal

from toolkit.costs.pricing import Tier, tiered_cost

ZERO = Decimal(0)
ONE = Decimal(1)
DAYS_PER_MONTH = Decimal(30)
HOURS_PER_MONTH = Decimal(720)
SECONDS_PER_DAY = Decimal(86400)
SECONDS_PER_MONTH = DAYS_PER_MONTH * SECONDS_PER_DAY
JOULES_PER_KWH = Decimal(3_600_000)
MB_PER_GB = Decimal(1000)
MILLION = Decimal(1_000_000)
EXTRAPOLATE_MONTHS = 600  # how far past the horizon "never" looks before it says "over 50 years"
FLEETS = ("users", "fixed", "traffic")


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
    installs: Decimal | None = None  # app installs in month 1 (downloads); None: one per device
    hourly_load: tuple[Decimal, ...] = ()  # 24 relative loads, for an autoscaled fleet
    # cloud: "api" (per request / token / minute) or "instances" (per hour, self-hosted)
    cloud_mode: str = "api"
    price_per_request: Decimal = ZERO
    price_per_1m_input_tokens: Decimal = ZERO
    price_per_1m_output_tokens: Decimal = ZERO
    price_per_minute: Decimal = ZERO
    api_tiers: tuple[Tier, ...] = ()  # replaces price_per_request when given
    small_model_share: Decimal = ZERO  # the model router: this share goes to the small model
    small_price_per_request: Decimal = ZERO
    small_price_per_1m_input_tokens: Decimal = ZERO
    small_price_per_1m_output_tokens: Decimal = ZERO
    small_api_tiers: tuple[Tier, ...] = ()
    price_per_hour: Decimal = ZERO
    throughput_rps: Decimal = ZERO
    utilisation: Decimal = ONE
    min_instances: Decimal = ONE
    scaling: str = "peak"  # "peak": sized for the busiest second all month; "autoscaled": per hour
    # edge
    engineering_hours: Decimal = ZERO
    hourly_rate: Decimal = ZERO
    hardware_per_device: Decimal = ZERO
    fleet: str = "users"  # users (their own devices), fixed (edge.devices), traffic (sized from peak)
    devices: Decimal | None = None
    devices_grow: bool = False  # a fixed fleet grows with users only when the scenario says so
    concurrency: Decimal = ONE  # inferences one device runs at once
    lifetime_months: Decimal | None = None  # devices bought are bought again after this
    fee_per_device_per_month: Decimal = ZERO
    model_size_mb: Decimal = ZERO
    updates_per_year: Decimal = ZERO
    egress_per_gb: Decimal = ZERO
    latency_ms: Decimal | None = None
    latency_p95_ms: Decimal | None = None
    latency_kind: str = "stated"  # measured, estimate or stated
    latency_budget_ms: Decimal | None = None
    power_w: Decimal | None = None
    electricity_per_kwh: Decimal = ZERO
    energy_paid_by_user: bool = False
    upkeep_per_month: Decimal = ZERO
    # router and money
    on_device_share: Decimal = ZERO
    discount_rate: Decimal = ZERO  # a year
    currency: str = "USD"


@dataclass
class CloudBill:
    amount: Decimal
    instances: int | None = None
    past_last_tier: bool = False


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
    devices: Decimal = ZERO
    discount: Decimal = ONE
    past_last_tier: bool = False
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


def growth_factor(inputs: Inputs, month: int) -> Decimal:
    return (ONE + inputs.monthly_growth) ** (month - 1)


def users_in_month(inputs: Inputs, month: int) -> Decimal:
    """users_m = active_users × (1 + monthly_growth)^(m − 1)."""
    return inputs.active_users * growth_factor(inputs, month)


def requests_per_day(inputs: Inputs, month: int = 1) -> Decimal:
    """requests/day = users_m × requests_per_user_per_day."""
    return users_in_month(inputs, month) * inputs.requests_per_user_per_day


def requests_in_month(inputs: Inputs, month: int) -> Decimal:
    """requests_m = users_m × requests_per_user_per_day × 30."""
    return requests_per_day(inputs, month) * DAYS_PER_MONTH


def peak_rps(inputs: Inputs, month: int, share: Decimal = ONE) -> Decimal:
    """Peak requests/s = requests/day_m × share ÷ 86400 × peak_to_average."""
    return requests_per_day(inputs, month) * share / SECONDS_PER_DAY * inputs.peak_to_average


# ---------------------------------------------------------------- the fleet


def device_rps(inputs: Inputs) -> Decimal | None:
    """Requests/s one device serves: 1000 / p50 latency_ms × concurrency (None: no latency)."""
    if not inputs.latency_ms:
        return None
    return Decimal(1000) / inputs.latency_ms * inputs.concurrency


def within_budget(inputs: Inputs) -> Decimal:
    """Share of on-device requests the device answers within the latency budget; the rest go to
    the cloud. From the latency distribution's known points, (p50, 50%) and (p95, 95%),
    linearly between them; under p50 none is counted (conservative); at or past the slowest
    known percentile the tail is taken to fit (with only p50: all or nothing)."""
    budget, p50, p95 = inputs.latency_budget_ms, inputs.latency_ms, inputs.latency_p95_ms
    if budget is None or p50 is None:
        return ONE
    if p95 is None or p95 <= p50:
        return ONE if p50 <= budget else ZERO
    if budget < p50:
        return ZERO
    if budget >= p95:
        return ONE
    return Decimal("0.5") + Decimal("0.45") * (budget - p50) / (p95 - p50)


def effective_share(inputs: Inputs) -> Decimal:
    """on_device_share × within_budget: the share actually served on the device."""
    return inputs.on_device_share * within_budget(inputs)


def devices_in_month(inputs: Inputs, month: int) -> Decimal:
    """users: one per active user (their own); fixed: `devices` (× growth only when the
    scenario says the fleet grows); traffic: ceil(peak on-device requests/s ÷ device_rps)."""
    if month < 1:
        return ZERO
    if inputs.fleet == "users" or (inputs.fleet == "fixed" and inputs.devices is None):
        return users_in_month(inputs, month)
    if inputs.fleet == "fixed":
        return inputs.devices * (growth_factor(inputs, month) if inputs.devices_grow else ONE)
    per_device = device_rps(inputs)
    peak = peak_rps(inputs, month, effective_share(inputs))
    if not per_device or peak <= 0:
        return ONE if per_device else ZERO
    return max(ONE, (peak / per_device).to_integral_value(ROUND_CEILING))


def installs_in_month(inputs: Inputs, month: int) -> Decimal:
    """Installs that download the model: `installs` × growth when given, else one per device."""
    if month < 1:
        return ZERO
    if inputs.installs is not None:
        return inputs.installs * growth_factor(inputs, month)
    return devices_in_month(inputs, month)


def purchases(inputs: Inputs, month: int) -> Decimal:
    """Devices bought at the start of month m (month 1: the first fleet, paid as a one-off):
    new devices, plus those bought `lifetime_months` earlier, worn out and replaced."""
    if month < 1:
        return ZERO
    if month == 1:
        return devices_in_month(inputs, 1)
    new = max(devices_in_month(inputs, month) - devices_in_month(inputs, month - 1), ZERO)
    return new + replaced(inputs, month)


def replaced(inputs: Inputs, month: int) -> Decimal:
    if not inputs.lifetime_months:
        return ZERO
    return purchases(inputs, month - int(inputs.lifetime_months))


# ---------------------------------------------------------------- cloud


def api_unit_cost(inputs: Inputs, small: bool = False) -> Decimal:
    """Per request, the parts that are linear: tokens in × price in / 1e6 + tokens out × price
    out / 1e6 + seconds / 60 × price per minute (+ price_per_request when not tiered)."""
    if small:
        per_request = ZERO if inputs.small_api_tiers else inputs.small_price_per_request
        return (per_request + inputs.tokens_in_per_request * inputs.small_price_per_1m_input_tokens / MILLION
                + inputs.tokens_out_per_request * inputs.small_price_per_1m_output_tokens / MILLION)
    per_request = ZERO if inputs.api_tiers else inputs.price_per_request
    return (per_request + inputs.tokens_in_per_request * inputs.price_per_1m_input_tokens / MILLION
            + inputs.tokens_out_per_request * inputs.price_per_1m_output_tokens / MILLION
            + inputs.seconds_per_request / Decimal(60) * inputs.price_per_minute)


def api_cost_per_request(inputs: Inputs) -> Decimal:
    """The marginal price of one more request at the first tier (for display)."""
    tier = inputs.api_tiers[0].price_per_request if inputs.api_tiers else ZERO
    return api_unit_cost(inputs) + tier


def api_bill(inputs: Inputs, requests: Decimal) -> CloudBill:
    """A month's API bill. With the model router, `small_model_share` of the requests go to the
    small model and the rest to the large one; tiered prices are charged at the margin on
    each model's own monthly volume."""
    small_requests = requests * inputs.small_model_share
    large_requests = requests - small_requests
    amount, passed = large_requests * api_unit_cost(inputs), False
    if inputs.api_tiers:
        tiered, passed = tiered_cost(inputs.api_tiers, large_requests)
        amount += tiered
    if small_requests:
        amount += small_requests * api_unit_cost(inputs, small=True)
        if inputs.small_api_tiers:
            tiered, small_passed = tiered_cost(inputs.small_api_tiers, small_requests)
            amount, passed = amount + tiered, passed or small_passed
    return CloudBill(amount, None, passed)


def instances_for(inputs: Inputs, rps: Decimal) -> int:
    """max(min_instances, ceil(rps / (throughput_rps × utilisation))); no traffic, no instance."""
    if rps <= 0:
        return 0
    needed = (rps / (inputs.throughput_rps * inputs.utilisation)).to_integral_value(ROUND_CEILING)
    return int(max(inputs.min_instances.to_integral_value(ROUND_CEILING), needed))


def instances_needed(inputs: Inputs, requests: Decimal) -> int:
    """instances = max(min_instances, ceil(peak_rps / (throughput_rps × utilisation))), where
    peak_rps = requests / (30 × 86400 s) × peak_to_average. Zero requests need no instance.

    The minimum is paid even when idle: that is why a small router share rarely pays off
    against a self-hosted fleet."""
    return instances_for(inputs, requests / SECONDS_PER_MONTH * inputs.peak_to_average)


def hourly_weights(inputs: Inputs) -> list[Decimal]:
    """The 24 hourly loads scaled so their mean is 1."""
    loads = list(inputs.hourly_load)
    mean = sum(loads, ZERO) / len(loads)
    return [load / mean for load in loads]


def autoscaled_bill(inputs: Inputs, requests: Decimal) -> CloudBill:
    """Instances follow the hourly load: each hour h runs instances_for(average rps × w_h),
    paid by the hour, 30 days a month. Reports the busiest hour's count."""
    if requests <= 0:
        return CloudBill(ZERO, 0)
    average = requests / SECONDS_PER_MONTH
    counts = [instances_for(inputs, average * weight) for weight in hourly_weights(inputs)]
    return CloudBill(sum(counts) * inputs.price_per_hour * DAYS_PER_MONTH, max(counts))


def cloud_bill(inputs: Inputs, requests: Decimal, scaling: str | None = None) -> CloudBill:
    """API: api_bill. Instances sized for peak: instances × price_per_hour × 720 h;
    autoscaled: autoscaled_bill."""
    if inputs.cloud_mode != "instances":
        return api_bill(inputs, requests)
    if (scaling or inputs.scaling) == "autoscaled" and inputs.hourly_load:
        return autoscaled_bill(inputs, requests)
    count = instances_needed(inputs, requests)
    return CloudBill(count * inputs.price_per_hour * HOURS_PER_MONTH, count)


def cloud_cost(inputs: Inputs, requests: Decimal) -> tuple[Decimal, int | None]:
    bill = cloud_bill(inputs, requests)
    return bill.amount, bill.instances


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
    first install = installs_1 × model_size_gb × egress_per_gb."""
    return {
        "engineering": inputs.engineering_hours * inputs.hourly_rate,
        "hardware": devices_in_month(inputs, 1) * inputs.hardware_per_device,
        "first_download": installs_in_month(inputs, 1) * model_download_gb(inputs) * inputs.egress_per_gb,
    }


def discount_factor(inputs: Inputs, month: int) -> Decimal:
    """(1 + r)^(−m/12): what month m's money is worth today (1 without a rate)."""
    if not inputs.discount_rate:
        return ONE
    return (ONE + inputs.discount_rate) ** (Decimal(-month) / Decimal(12))


def month_costs(inputs: Inputs, month: int) -> Month:
    """Both options' costs in month m (1-based).

    cloud-only = cloud_bill(requests_m)
    edge       = cloud_bill(requests_m × (1 − effective share))           routed to the cloud
               + device_requests × kWh/inference × electricity              unless paid by users
               + installs_m × model_gb × updates_per_year / 12 × egress     model updates
               + (installs_m − installs_{m−1}) × model_gb × egress          new installs
               + (devices_m − devices_{m−1}) × hardware                     new devices
               + devices bought lifetime_months ago × hardware              replacement
               + devices_m × fee_per_device_per_month + upkeep_per_month
    """
    requests = requests_in_month(inputs, month)
    device_requests = requests * effective_share(inputs)
    cloud_only = cloud_bill(inputs, requests)
    routed = cloud_bill(inputs, requests - device_requests)
    energy = device_requests * energy_per_inference_kwh(inputs) * inputs.electricity_per_kwh
    devices = devices_in_month(inputs, month)
    gb_price = model_download_gb(inputs) * inputs.egress_per_gb
    new_devices = max(devices - devices_in_month(inputs, month - 1), ZERO) if month > 1 else ZERO
    new_installs = max(installs_in_month(inputs, month) - installs_in_month(inputs, month - 1), ZERO) \
        if month > 1 else ZERO
    edge = {
        "cloud": routed.amount,
        "energy": ZERO if inputs.energy_paid_by_user else energy,
        "updates": installs_in_month(inputs, month) * gb_price * inputs.updates_per_year / Decimal(12),
        "new_devices": new_devices * inputs.hardware_per_device + new_installs * gb_price,
        "replacement": replaced(inputs, month) * inputs.hardware_per_device,
        "fees": devices * inputs.fee_per_device_per_month,
        "upkeep": inputs.upkeep_per_month,
    }
    return Month(
        month=month,
        active_users=users_in_month(inputs, month),
        requests=requests,
        device_requests=device_requests,
        cloud_only=cloud_only.amount,
        cloud_only_instances=cloud_only.instances,
        edge=edge,
        edge_instances=routed.instances,
        user_energy=energy if inputs.energy_paid_by_user else ZERO,
        devices=devices,
        discount=discount_factor(inputs, month),
        past_last_tier=cloud_only.past_last_tier or routed.past_last_tier,
    )


def project(inputs: Inputs, months: int) -> list[Month]:
    """Months 1..N with running totals (present values with a discount rate); the edge's
    total starts at its one-off cost."""
    cumulative_cloud = ZERO
    cumulative_edge = sum(edge_one_off(inputs).values(), ZERO)
    rows = []
    for month in range(1, months + 1):
        row = month_costs(inputs, month)
        cumulative_cloud += row.cloud_only * row.discount
        cumulative_edge += row.edge_total * row.discount
        row.cumulative_cloud, row.cumulative_edge = cumulative_cloud, cumulative_edge
        rows.append(row)
    return rows


# ---------------------------------------------------------------- capacity


def capacity_check(inputs: Inputs, months: int = 1) -> dict:
    """Can one device serve its requests in the busiest month of the horizon? per-device peak
    rps = requests/day × share / devices / 86400 × peak_to_average, against device_rps."""
    if effective_share(inputs) == 0:
        why = "no request is served on the device"
        if inputs.on_device_share and within_budget(inputs) == 0:
            why = (f"the device's p50 {inputs.latency_ms} ms is over the latency budget "
                   f"{inputs.latency_budget_ms} ms: every request goes to the cloud")
        return {"checked": False, "ok": True, "why": why}
    if inputs.latency_ms is None:
        return {"checked": False, "ok": True, "why": "no latency given or measured (edge.latency_ms or --bench)"}
    month = months if inputs.monthly_growth > 0 else 1
    devices = devices_in_month(inputs, month)
    per_device_day = requests_per_day(inputs, month) * effective_share(inputs) / devices
    peak = per_device_day / SECONDS_PER_DAY * inputs.peak_to_average
    max_rps = device_rps(inputs)
    busy = peak / max_rps
    return {
        "checked": True,
        "ok": busy <= 1,
        "month": month,
        "devices": devices,
        "requests_per_device_per_day": per_device_day,
        "peak_requests_per_s": peak,
        "max_requests_per_s": max_rps,
        "peak_busy_fraction": busy,
        "latency_ms": inputs.latency_ms,
        "latency_kind": inputs.latency_kind,
    }
