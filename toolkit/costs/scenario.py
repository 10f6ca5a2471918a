"""Scenario YAML: read once, check everything, list every problem together.

A scenario is traffic + a cloud option + an edge option + a router share. Its shape is a
pydantic model (`schema.py`: unknown keys refused, every figure within its bounds); this
module resolves it: catalogue entries, the device profile, bench files and a caller's
measured figures fill what the scenario leaves out. The resolved `Scenario` remembers
where each number came from (`sources`), so the report can say so. See
`edgeward breakeven --example` for a commented scenario.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from toolkit.common.text import did_you_mean
from toolkit.costs.bench_input import BenchRecord, read_bench
from toolkit.costs.model import Inputs
from toolkit.costs.pricing import Entry, load_catalogue, lookup, tier_text
from toolkit.costs.schema import MAX_LATENCY_MS, MAX_POWER_W, Figure, ScenarioDoc, validate
from toolkit.costs.values import ValueProblem, read_value
from toolkit.errors import BadInput

TWO_SPELLINGS = (  # (the stored price, its other spelling, factor from the other to the stored)
    ("price_per_request", "price_per_1k_requests", Decimal("0.001")),
    ("price_per_1m_input_tokens", "price_per_1k_input_tokens", Decimal(1000)),
    ("price_per_1m_output_tokens", "price_per_1k_output_tokens", Decimal(1000)),
)
API_KEYS = ("price_per_request", "price_per_1k_requests", "price_per_1k_input_tokens", "price_per_1m_input_tokens",
            "price_per_1k_output_tokens", "price_per_1m_output_tokens", "price_per_minute")
FIGURE_BOUNDS = {  # a caller's figures: name -> (lowest, highest, lowest excluded)
    "on_device_share": (Decimal(0), Decimal(1), False),
    "latency_ms": (Decimal(0), MAX_LATENCY_MS, True),
    "latency_p95_ms": (Decimal(0), MAX_LATENCY_MS, True),
    "model_size_mb": (Decimal(0), Decimal("1e9"), False),
    "power_w": (Decimal(0), MAX_POWER_W, False),
}


@dataclass
class Scenario:
    name: str
    inputs: Inputs
    months: int
    sources: dict[str, str]
    model: dict | None = None
    cloud_label: str = ""
    edge_label: str = ""
    entries: list[Entry] = field(default_factory=list)
    benches: list[BenchRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    description: str = ""
    catalogues: list[str] = field(default_factory=list)  # the user's catalogue folders, in order


def read_scenario_file(path: str | os.PathLike) -> dict:
    """The YAML mapping in `path`, or BadInput naming the file."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"scenario {path}: file not found")
    return parse_scenario_text(path.read_text(errors="replace"), str(path))


def parse_scenario_text(text: str, label: str = "scenario") -> dict:
    """YAML with the safety limits, numbers read as YAML 1.2 does: `1:30` (a YAML 1.1 base-60
    number, 90), `0x10` and `0o10` stay text, so the checks refuse them instead of pricing 90."""
    from toolkit.safety.yaml import load_yaml

    data = load_yaml(text, what=label, strict_numbers=True)  # size, alias and syntax limits; one-line errors
    if not isinstance(data, dict):
        raise BadInput(f"{label}: a scenario is a YAML mapping (traffic, cloud, edge, router); "
                       "see `edgeward breakeven --example`")
    return data


def scenario_problems(data: dict, *, catalogue=()) -> list[str]:
    """Every problem in a scenario mapping (empty when it is usable). Never raises."""
    try:
        load_scenario(data, catalogue=catalogue)
        return []
    except BadInput as error:
        return [part for part in str(error).split("; ") if part] or [str(error)]


def load_scenario(data: dict | str | os.PathLike, *, bench=(), months: int | None = None, catalogue=(),
                  figures: dict | None = None) -> Scenario:
    """A checked, resolved Scenario. BadInput lists every problem on one line."""
    if not isinstance(data, dict):
        data = read_scenario_file(data)
    figures = dict(figures or {})
    if "on_device_share" in figures and not (isinstance(data.get("router"), dict)
                                             and data["router"].get("on_device_share") is not None):
        data = {**data, "router": {"on_device_share": 0}}  # the caller's figure replaces it below
    records = [read_bench(path) if not isinstance(path, BenchRecord) else path for path in bench]
    doc, problems = validate(data)
    if months is not None and not 1 <= int(months) <= 600:
        problems.append(f"--months must be between 1 and 600 (got {months})")
    if problems:
        raise BadInput("; ".join(problems))
    resolver = _Resolver(doc, records, catalogue, figures)
    scenario = resolver.resolve()
    if resolver.problems:
        raise BadInput("; ".join(resolver.problems))
    if months is not None:
        scenario.months = int(months)
    return scenario


class _Resolver:
    """Fills the Inputs from the checked document, collecting problems instead of stopping."""

    def __init__(self, doc: ScenarioDoc, benches: list[BenchRecord], catalogue, figures: dict):
        self.doc = doc
        self.benches = benches
        self.extra_catalogues = [catalogue] if isinstance(catalogue, str | os.PathLike) else list(catalogue or ())
        self.figures = figures
        self.problems: list[str] = []
        self.sources: dict[str, str] = {}
        self.values: dict = {}
        self.notes: list[str] = []
        self.entries: list[Entry] = []
        self.currency = doc.currency
        self.device_name: str | None = None
        self._cloud_entry: Entry | None = None
        self._catalogue = None

    # ------------------------------------------------------------ helpers

    def put(self, target: str, fig: Figure | None, where: str, factor=Decimal(1)) -> Decimal | None:
        if fig is None:
            return None
        if fig.currency and fig.currency != self.currency:
            self.problems.append(f"{where} is in {fig.currency} but the scenario's currency is {self.currency}")
            return None
        self.values[target] = fig.value * factor
        self.sources[target] = f"scenario {where}" + (f" ({fig.source})" if fig.source else "")
        return self.values[target]

    def catalogue(self) -> dict[str, Entry]:
        if self._catalogue is None:
            try:
                self._catalogue = load_catalogue(extra=self.extra_catalogues)
            except BadInput as error:
                self.problems.append(str(error))
                self._catalogue = {}
        return self._catalogue

    def entry(self, name, kind: str, where: str) -> Entry | None:
        catalogue = self.catalogue()
        if not catalogue:
            return None
        try:
            found = lookup(str(name), kind, catalogue)
        except BadInput as error:
            self.problems.append(f"{where}: {error}")
            return None
        if found.currency != self.currency:
            self.problems.append(f"{where} {found.name!r} is priced in {found.currency} but the scenario's "
                                 f"currency is {self.currency}: give your own prices in {self.currency}")
            return None
        if found not in self.entries:
            self.entries.append(found)
        return found

    def from_entry(self, entry: Entry, price_key: str, target: str) -> None:
        if target not in self.values and price_key in entry.prices:
            self.values[target] = Decimal(entry.prices[price_key])
            self.sources[target] = entry.cite()

    def prices(self, section, where: str, prefix: str = "") -> None:
        """The API prices of a section; two spellings of one price are refused."""
        for stored, other, factor in TWO_SPELLINGS:
            mine, theirs = getattr(section, stored), getattr(section, other)
            if mine is not None and theirs is not None:
                self.problems.append(f"{where}: {stored} and {other} are two prices for one thing: give one")
                continue
            self.put(prefix + stored, mine, f"{where}.{stored}")
            self.put(prefix + stored, theirs, f"{where}.{other}", factor)

    # ------------------------------------------------------------ sections

    def resolve(self) -> Scenario | None:
        doc = self.doc
        self._traffic()
        cloud_label = self._cloud()
        edge_label = self._edge()
        self.put("on_device_share", doc.router.on_device_share, "router.on_device_share")
        self.put("discount_rate", doc.discount_rate, "discount_rate")
        from toolkit.costs.apply_bench import apply_benches

        apply_benches(self, doc.model)
        self._figures()
        self._cross_checks()
        if self.problems:
            return None
        return Scenario(
            name=str(doc.name or "break-even"), description=str(doc.description or ""),
            inputs=Inputs(currency=self.currency, **self.values), months=doc.months, sources=self.sources,
            model=doc.model, cloud_label=cloud_label, edge_label=edge_label, entries=self.entries,
            benches=self.benches, notes=self.notes, catalogues=[str(folder) for folder in self.extra_catalogues],
        )

    def _traffic(self) -> None:
        traffic = self.doc.traffic
        for key in ("active_users", "requests_per_user_per_day", "monthly_growth", "tokens_in_per_request",
                    "tokens_out_per_request", "seconds_per_request", "peak_to_average", "installs"):
            self.put(key, getattr(traffic, key), f"traffic.{key}")
        if traffic.hourly_load:
            self.values["hourly_load"] = tuple(item.value for item in traffic.hourly_load)
            self.sources["hourly_load"] = "scenario traffic.hourly_load"
            if traffic.peak_to_average is None:
                loads = self.values["hourly_load"]
                self.values["peak_to_average"] = max(max(loads) / (sum(loads) / len(loads)), Decimal(1))
                self.sources["peak_to_average"] = "traffic.hourly_load: busiest hour ÷ the day's average"

    def _cloud(self) -> str:
        cloud = self.doc.cloud
        given = cloud.model_fields_set
        instance_mode = cloud.instance is not None or cloud.price_per_hour is not None
        api_given = cloud.api is not None or any(getattr(cloud, key) is not None for key in API_KEYS)
        if instance_mode and api_given:
            self.problems.append("cloud: give either an API (api: or per-request/token prices) or instances "
                                 "(instance: or price_per_hour), not both")
            return ""
        del given
        return self._instances(cloud) if instance_mode else self._api(cloud)

    def _api(self, cloud) -> str:
        self.values["cloud_mode"] = "api"
        self.sources["cloud_mode"] = "scenario cloud (an API, priced per use)"
        for key in ("throughput_rps", "utilisation", "min_instances", "workload", "purchase", "scaling",
                    "prefill_tokens_per_s"):
            if getattr(cloud, key) is not None:
                self.problems.append(f"cloud.{key} applies to self-hosted instances: give cloud.instance or "
                                     "cloud.price_per_hour, or remove it")
        self.prices(cloud, "cloud")
        self.put("price_per_minute", cloud.price_per_minute, "cloud.price_per_minute")
        label = "API (own prices)"
        if cloud.api is not None:
            entry = self.entry(cloud.api, "api", "cloud.api")
            if entry:
                self._api_entry(entry, "")
                label = f"API {entry.title}"
        elif not any(getattr(cloud, key) is not None for key in API_KEYS):
            self.problems.append("cloud needs a price: api: <catalogue entry>, price_per_request, "
                                 "price_per_1m_input_tokens/price_per_1m_output_tokens, price_per_minute, "
                                 "or instance:/price_per_hour for self-hosted")
        if cloud.small_model is not None:
            label += self._small_model(cloud.small_model)
        return label

    def _api_entry(self, entry: Entry, prefix: str) -> None:
        keys = ("price_per_request", "price_per_1m_input_tokens", "price_per_1m_output_tokens") + \
            (("price_per_minute",) if not prefix else ())
        for key in keys:
            self.from_entry(entry, key, prefix + key)
        if entry.tiers and prefix + "price_per_request" not in self.values:
            self.values[prefix + "api_tiers"] = entry.tiers
            self.sources[prefix + "api_tiers"] = f"{entry.cite()}; monthly tiers at the margin: {tier_text(entry.tiers)}"

    def _small_model(self, small) -> str:
        self.put("small_model_share", small.share, "cloud.small_model.share")
        self.prices(small, "cloud.small_model", prefix="small_")
        if small.api is not None:
            entry = self.entry(small.api, "api", "cloud.small_model.api")
            if entry:
                if entry.prices.get("price_per_minute"):
                    self.problems.append("cloud.small_model.api: a model priced per minute cannot be the router's "
                                         "small model")
                self._api_entry(entry, "small_")
                return f", {fmt_share(small.share.value)} routed to {entry.title}"
        elif not any(getattr(small, key) is not None for key in API_KEYS if key != "price_per_minute"):
            self.problems.append("cloud.small_model needs a price: api: <catalogue entry> or its own prices")
        return f", {fmt_share(small.share.value)} routed to a small model"

    def _instances(self, cloud) -> str:
        self.values["cloud_mode"] = "instances"
        self.sources["cloud_mode"] = "scenario cloud (self-hosted instances, priced per hour)"
        if cloud.small_model is not None:
            self.problems.append("cloud.small_model applies to APIs (a router between two priced models)")
        self.put("price_per_hour", cloud.price_per_hour, "cloud.price_per_hour")
        self.put("throughput_rps", cloud.throughput_rps, "cloud.throughput_rps")
        if cloud.utilisation is None:
            self.problems.append("cloud.utilisation is required")
        self.put("utilisation", cloud.utilisation, "cloud.utilisation")
        self.put("min_instances", cloud.min_instances, "cloud.min_instances")
        if cloud.scaling:
            self.values["scaling"] = cloud.scaling
            self.sources["scaling"] = "scenario cloud.scaling"
            if cloud.scaling == "autoscaled" and not self.doc.traffic.hourly_load:
                self.problems.append("cloud.scaling: autoscaled needs traffic.hourly_load (24 hourly loads)")
        purchase = cloud.purchase or "on-demand"
        label = f"self-hosted instances (own prices, {purchase})"
        entry = None
        if cloud.instance is not None:
            entry = self.entry(cloud.instance, "instance", "cloud.instance")
            if entry:
                key = {"on-demand": "price_per_hour", "reserved": "price_per_hour_reserved",
                       "spot": "price_per_hour_spot"}[purchase]
                if key not in entry.prices and "price_per_hour" not in self.values:
                    self.problems.append(f"cloud.purchase: catalogue {entry.name} has no {purchase} price; "
                                         f"give cloud.price_per_hour")
                self.from_entry(entry, key, "price_per_hour")
                label = f"self-hosted {entry.title}, {purchase}"
        self._cloud_entry = entry
        if cloud.workload is not None and "throughput_rps" not in self.values:
            self._workload(entry, str(cloud.workload), cloud.prefill_tokens_per_s)
        elif cloud.prefill_tokens_per_s is not None:
            self.notes.append("cloud.prefill_tokens_per_s is used only with a workload measured in output tokens/s")
        return label

    def _workload(self, entry: Entry | None, workload: str, prefill: Figure | None) -> None:
        if entry is None:
            if not any(p.startswith("cloud.instance") for p in self.problems):
                self.problems.append("cloud.workload needs cloud.instance naming a catalogue entry")
            return
        measured = entry.throughput.get(workload)
        if not isinstance(measured, dict):
            self.problems.append(f"cloud.workload: {entry.name} has no measured throughput for {workload!r}"
                                 f"{did_you_mean(workload, list(entry.throughput))}")
            return
        where = f"catalogue {entry.name} throughput.{workload} ({measured.get('source', entry.source)})"
        try:
            if measured.get("requests_per_s") is not None:
                self.values["throughput_rps"] = _positive(measured["requests_per_s"])
                self.sources["throughput_rps"] = where
            elif measured.get("output_tokens_per_s") is not None:
                self._token_throughput(measured, where, prefill)
            else:
                self.problems.append(f"cloud.workload: {entry.name} throughput.{workload} has no requests_per_s "
                                     "or output_tokens_per_s")
        except ValueProblem as problem:
            self.problems.append(f"catalogue {entry.name} throughput.{workload} {problem}")

    def _token_throughput(self, measured: dict, where: str, prefill: Figure | None) -> None:
        """Seconds per request on one instance = tokens out ÷ output tokens/s (measured with
        `input_tokens_per_request` tokens in) + the extra input tokens ÷ the prefill rate."""
        tokens_out = self.values.get("tokens_out_per_request")
        if not tokens_out:
            self.problems.append("traffic.tokens_out_per_request is required: throughput is in output tokens per "
                                 "second")
            return
        tokens_in = self.values.get("tokens_in_per_request", Decimal(0))
        measured_in = _positive(measured.get("input_tokens_per_request", 0), zero_ok=True)
        seconds = tokens_out / _positive(measured["output_tokens_per_s"])
        how = f"{where}, output tokens/s ÷ tokens_out_per_request"
        extra = tokens_in - measured_in
        if extra > 0:
            if prefill is None:
                measured_text = f"measured with {measured_in} input tokens per request" if measured_in else \
                    "measured without saying its input length"
                self.problems.append(f"cloud.prefill_tokens_per_s is required: the workload was {measured_text} "
                                     f"and the scenario sends {tokens_in}; the prompt's cost depends on it")
                return
            seconds += extra / prefill.value
            how += f" + {extra} more input tokens ÷ {prefill.value} prefill tokens/s (scenario)"
        self.values["throughput_rps"] = Decimal(1) / seconds
        self.sources["throughput_rps"] = how

    def _edge(self) -> str:
        edge = self.doc.edge
        for key in ("engineering_hours", "hourly_rate", "hardware_per_device", "concurrency", "lifetime_months",
                    "fee_per_device_per_month", "model_size_mb", "updates_per_year", "egress_per_gb", "latency_ms",
                    "latency_p95_ms", "latency_budget_ms", "power_w", "electricity_per_kwh", "upkeep_per_month"):
            self.put(key, getattr(edge, key), f"edge.{key}")
        if "latency_ms" in self.values:
            self.values["latency_kind"] = "stated"
        if edge.devices == "traffic":
            self.values["fleet"] = "traffic"
            self.sources["fleet"] = "scenario edge.devices: traffic (sized from the peak load and the latency)"
        elif edge.devices is not None:
            self.values["fleet"] = "fixed"
            self.put("devices", edge.devices, "edge.devices")
        if edge.devices_grow_with_users:
            if self.values.get("fleet") != "fixed":
                self.problems.append("edge.devices_grow_with_users needs edge.devices (a number)")
            self.values["devices_grow"] = True
        self.values["energy_paid_by_user"] = edge.energy_paid_by_user is True
        if edge.energy_paid_by_user is not None:
            self.sources["energy_paid_by_user"] = "scenario edge.energy_paid_by_user"
        for key, kind, price_key, target in (("egress", "egress", "price_per_gb", "egress_per_gb"),
                                             ("electricity", "electricity", "price_per_kwh", "electricity_per_kwh")):
            if getattr(edge, key) is not None:
                if target in self.values:
                    self.problems.append(f"edge: give {key} or {target}, not both")
                    continue
                entry = self.entry(getattr(edge, key), kind, f"edge.{key}")
                if entry:
                    self.from_entry(entry, price_key, target)
        if edge.device is not None:
            self._device(edge)
        elif edge.buy_hardware is True:
            self.problems.append("edge.buy_hardware needs edge.device (a device profile with a unit_price)")
        if edge.description:
            return str(edge.description)
        if self.device_name:
            return self.device_name
        own = not self.values.get("hardware_per_device")
        return "the users' own devices" if own and "fleet" not in self.values else "dedicated devices"

    def _device(self, edge) -> None:
        from toolkit.costs.device_figures import device_profile

        name = str(edge.device)
        try:
            profile = device_profile(name)
        except BadInput as error:
            self.problems.append(f"edge.device: {error}")
            return
        self.device_name = name
        if profile.power_w is not None and "power_w" not in self.values:
            self.values["power_w"] = profile.power_w
            self.sources["power_w"] = f"device profile {name} power_w.{profile.power_source}"
        if edge.buy_hardware is True and "hardware_per_device" not in self.values:
            if profile.unit_price is None:
                self.problems.append(f"edge.buy_hardware: device profile {name!r} has no unit_price; "
                                     "give edge.hardware_per_device")
            elif profile.currency != self.currency:
                self.problems.append(f"edge.device {name!r} unit_price is in {profile.currency} but the "
                                     f"scenario's currency is {self.currency}")
            else:
                self.values["hardware_per_device"] = profile.unit_price
                self.sources["hardware_per_device"] = f"device profile {name} unit_price ({profile.price_source})"

    def _figures(self) -> None:
        """A caller's measured figures (toolkit.plan) replace the scenario's, with their source."""
        for name, given in self.figures.items():
            if name not in FIGURE_BOUNDS:
                self.problems.append(f"figures: unknown figure {name!r}{did_you_mean(name, list(FIGURE_BOUNDS))}")
                continue
            value, source = given if isinstance(given, tuple) else (given, "given by the caller")
            try:
                number = read_value(value)[0]
            except ValueProblem as problem:
                self.problems.append(f"figures.{name} {problem}")
                continue
            low, high, exclusive = FIGURE_BOUNDS[name]
            if number > high or number < low or (exclusive and number == low):
                self.problems.append(f"figures.{name} must be within {'(' if exclusive else '['}{low}, {high}] "
                                     f"(got {value!r})")
                continue
            self.values[name] = number
            self.sources[name] = str(source)
            if name == "latency_ms":
                self.values["latency_kind"] = "estimate" if "estimat" in str(source).lower() else "measured"

    def _cross_checks(self) -> None:
        values = self.values
        mode = values.get("cloud_mode")
        if mode == "instances":
            if "price_per_hour" not in values and not any(p.startswith("cloud.") for p in self.problems):
                self.problems.append("cloud.price_per_hour is required (or cloud.instance naming a catalogue entry)")
            if "throughput_rps" not in values and not any("throughput" in p or "workload" in p or "prefill" in p
                                                          or "tokens_out" in p for p in self.problems):
                entry = self._cloud_entry
                known = f" (catalogue workloads: {', '.join(entry.throughput)})" if entry and entry.throughput else ""
                self.problems.append("cloud.throughput_rps is required for self-hosted instances: measured "
                                     f"requests/s per instance, cloud.workload, or a --bench on it{known}")
        if mode == "api":
            for prefix in ("", "small_"):
                for price, need, what in (("price_per_1m_input_tokens", "tokens_in_per_request", "input token"),
                                          ("price_per_1m_output_tokens", "tokens_out_per_request", "output token"),
                                          ("price_per_minute", "seconds_per_request", "minute")):
                    if values.get(prefix + price) and not values.get(need):
                        problem = f"traffic.{need} is required: the cloud is priced per {what}"
                        if problem not in self.problems:
                            self.problems.append(problem)
        if values.get("fleet") == "traffic" and not values.get("latency_ms"):
            self.problems.append("edge.devices: traffic sizes the fleet from the latency: give edge.latency_ms "
                                 "or --bench")
        if values.get("latency_budget_ms") and values.get("fleet") in ("fixed", "traffic"):
            self.notes.append("edge.latency_budget_ms applies to the users' own devices; a dedicated fleet is "
                              "sized to keep up instead")
        if values.get("latency_p95_ms") and values.get("latency_ms") and \
                values["latency_p95_ms"] < values["latency_ms"]:
            self.problems.append("edge.latency_p95_ms must be at least the p50 edge.latency_ms")
        if values.get("model_size_mb") and "egress_per_gb" not in values:
            self.notes.append("model downloads are not priced: give edge.egress_per_gb or edge.egress")
        elif values.get("model_size_mb") and "fleet" not in values and "installs" not in values:
            self.notes.append("model downloads are counted once per daily user: give traffic.installs to count "
                              "every install")
        if values.get("electricity_per_kwh") and not values.get("energy_paid_by_user"):
            if values.get("latency_ms") is None or values.get("power_w") is None:
                self.notes.append("energy is not priced: it needs edge.latency_ms (or --bench) and edge.power_w "
                                  "(or edge.device)")


def _positive(raw, zero_ok: bool = False) -> Decimal:
    value = read_value(raw)[0]
    if value < 0 or (value == 0 and not zero_ok):
        raise ValueProblem(f"must be more than 0 (got {raw!r})")
    return value


def fmt_share(value: Decimal) -> str:
    from toolkit.costs.money import percent

    return percent(value)
