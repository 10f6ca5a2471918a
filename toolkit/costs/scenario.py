"""Scenario YAML: read once, check everything, list every problem together.

A scenario is traffic + a cloud option + an edge option + a router share. Each figure
is the scenario's own, a catalogue entry's, a device profile's or a bench file's; the
resolved `Scenario` remembers which (`sources`), so the report can say where each
number came from. See `edgeward breakeven --example` for a commented scenario.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from toolkit.costs.bench_input import BenchRecord, read_bench
from toolkit.costs.model import Inputs
from toolkit.costs.pricing import Entry, load_catalogue, lookup, suggest
from toolkit.costs.values import ValueProblem, read_value
from toolkit.errors import BadInput

SECTIONS = {
    "": ("name", "description", "currency", "months", "model", "traffic", "cloud", "edge", "router"),
    "traffic": ("active_users", "requests_per_user_per_day", "monthly_growth", "tokens_in_per_request",
                "tokens_out_per_request", "seconds_per_request", "peak_to_average"),
    "cloud": ("api", "instance", "workload", "description", "price_per_request", "price_per_1k_requests",
              "price_per_1k_input_tokens", "price_per_1m_input_tokens", "price_per_1k_output_tokens",
              "price_per_1m_output_tokens", "price_per_minute", "price_per_hour", "throughput_rps",
              "utilisation", "min_instances"),
    "edge": ("device", "description", "engineering_hours", "hourly_rate", "hardware_per_device", "buy_hardware",
             "devices", "model_size_mb", "updates_per_year", "egress_per_gb", "egress", "latency_ms", "power_w",
             "electricity_per_kwh", "electricity", "energy_paid_by_user", "upkeep_per_month"),
    "router": ("on_device_share",),
}
API_PRICES = {  # scenario key -> (Inputs field, factor to the field's unit)
    "price_per_request": ("price_per_request", Decimal(1)),
    "price_per_1k_requests": ("price_per_request", Decimal("0.001")),
    "price_per_1m_input_tokens": ("price_per_1m_input_tokens", Decimal(1)),
    "price_per_1k_input_tokens": ("price_per_1m_input_tokens", Decimal(1000)),
    "price_per_1m_output_tokens": ("price_per_1m_output_tokens", Decimal(1)),
    "price_per_1k_output_tokens": ("price_per_1m_output_tokens", Decimal(1000)),
    "price_per_minute": ("price_per_minute", Decimal(1)),
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


def read_scenario_file(path: str | os.PathLike) -> dict:
    """The YAML mapping in `path` (safe_load), or BadInput naming the file."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"scenario {path}: file not found")
    return parse_scenario_text(path.read_text(errors="replace"), str(path))


def parse_scenario_text(text: str, label: str = "scenario") -> dict:
    from toolkit.safety import load_yaml

    data = load_yaml(text, what=label)  # safe_load with size and alias limits; errors are one line
    if not isinstance(data, dict):
        raise BadInput(f"{label}: a scenario is a YAML mapping (traffic, cloud, edge, router); "
                       "see `edgeward breakeven --example`")
    return data


def scenario_problems(data: dict) -> list[str]:
    """Every problem in a scenario mapping (empty when it is usable). Never raises."""
    try:
        parser = _Parser(data, ())
        parser.parse()
        return parser.problems
    except BadInput as error:
        return [str(error)]


def load_scenario(data: dict | str | os.PathLike, *, bench=(), months: int | None = None) -> Scenario:
    """A checked, resolved Scenario. BadInput lists every problem on one line."""
    if not isinstance(data, dict):
        data = read_scenario_file(data)
    records = [read_bench(path) if not isinstance(path, BenchRecord) else path for path in bench]
    parser = _Parser(data, records)
    scenario = parser.parse()
    if months is not None:
        if not 1 <= int(months) <= 600:
            parser.problems.append(f"--months must be between 1 and 600 (got {months})")
        elif scenario is not None:
            scenario.months = int(months)
    if parser.problems:
        raise BadInput("; ".join(parser.problems))
    return scenario


class _Parser:
    """Walks the mapping once, collecting problems instead of stopping at the first."""

    def __init__(self, data: dict, benches: list[BenchRecord]):
        self.data = data if isinstance(data, dict) else {}
        self.benches = benches
        self.problems: list[str] = []
        self.sources: dict[str, str] = {}
        self.values: dict = {}
        self.notes: list[str] = []
        self.entries: list[Entry] = []
        self.currency = "USD"
        self.device_name: str | None = None  # edge.device, once its profile is read
        self._cloud_entry: Entry | None = None  # cloud.instance's catalogue entry
        self._catalogue = None

    # ------------------------------------------------------------ helpers

    def section(self, name: str) -> dict:
        value = self.data.get(name)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problems.append(f"'{name}' must be a mapping (got {type(value).__name__})")
            return {}
        return value

    def unknown_keys(self, name: str, section: dict) -> None:
        for key in section:
            if key not in SECTIONS[name]:
                where = f"{name}.{key}" if name else str(key)
                self.problems.append(f"unknown field '{where}'{suggest(str(key), list(SECTIONS[name]))}")

    def number(self, section: dict, where: str, key: str, *, target: str | None = None, required=False,
               minimum=None, above=None, maximum=None, percent=False, money=False, integer=False,
               factor=Decimal(1)) -> Decimal | None:
        field_name = f"{where}.{key}"
        if section.get(key) is None:
            if required:
                self.problems.append(f"{field_name} is required")
            return None
        try:
            value, currency, source = read_value(section[key], percent=percent, money=money)
        except ValueProblem as problem:
            self.problems.append(f"{field_name} {problem}")
            return None
        if currency and currency != self.currency:
            self.problems.append(f"{field_name} is in {currency} but the scenario's currency is {self.currency}")
            return None
        bad = None
        if above is not None and value <= above:
            bad = f"must be more than {above}"
        elif minimum is not None and value < minimum:
            bad = f"must be at least {minimum}"
        elif maximum is not None and value > maximum:
            bad = f"must be at most {maximum}"
        elif integer and value != value.to_integral_value():
            bad = "must be a whole number"
        if bad:
            bad = "must be within [0, 1]" if maximum == 1 and minimum == 0 else bad
            self.problems.append(f"{field_name} {bad} (got {section[key]!r})")
            return None
        value *= factor
        self.values[target or key] = value
        self.sources[target or key] = f"scenario {field_name}" + (f" ({source})" if source else "")
        return value

    def catalogue(self) -> dict[str, Entry]:
        if self._catalogue is None:
            self._catalogue = load_catalogue()
        return self._catalogue

    def entry(self, name, kind: str, where: str) -> Entry | None:
        try:
            found = lookup(str(name), kind, self.catalogue())
        except BadInput as error:
            self.problems.append(f"{where}: {error}")
            return None
        if found.currency != self.currency:
            self.problems.append(f"{where} {found.name!r} is priced in {found.currency} but the scenario's "
                                 f"currency is {self.currency}: give your own prices in {self.currency}")
            return None
        self.entries.append(found)
        return found

    def from_entry(self, entry: Entry, price_key: str, target: str) -> None:
        if target not in self.values and price_key in entry.prices:
            self.values[target] = Decimal(entry.prices[price_key])
            self.sources[target] = entry.cite()

    # ------------------------------------------------------------ sections

    def parse(self) -> Scenario | None:
        if not isinstance(self.data, dict):
            self.problems.append("a scenario is a mapping")
            return None
        self.unknown_keys("", self.data)
        currency = str(self.data.get("currency") or "USD").strip()
        if not re.fullmatch(r"[A-Z]{3}", currency):
            self.problems.append(f"currency must be a three-letter ISO code such as USD or EUR (got {currency!r})")
        self.currency = currency.upper()
        months = self.data.get("months", 36)
        if isinstance(months, bool) or not isinstance(months, int) or not 1 <= months <= 600:
            self.problems.append(f"months must be a whole number between 1 and 600 (got {months!r})")
            months = 36
        model = self._model()
        self._traffic()
        cloud_label = self._cloud()
        edge_label = self._edge()
        router = self.section("router")
        self.unknown_keys("router", router)
        if not router and "on_device_share" in self.data:
            self.problems.append("on_device_share belongs under 'router:'")
        self.number(router, "router", "on_device_share", required=True, minimum=0, maximum=1, percent=True)
        self._apply_benches(model)
        self._cross_checks()
        if self.problems:
            return None
        inputs = Inputs(currency=self.currency, **self.values)
        return Scenario(
            name=str(self.data.get("name") or "break-even"),
            description=str(self.data.get("description") or ""),
            inputs=inputs, months=months, sources=self.sources, model=model, cloud_label=cloud_label,
            edge_label=edge_label, entries=self.entries, benches=self.benches, notes=self.notes,
        )

    def _model(self) -> dict | None:
        model = self.data.get("model")
        if model is None:
            return None
        if isinstance(model, str) and model.strip():
            text = model.strip()
            return {"sha256": text.lower()} if re.fullmatch(r"[0-9a-fA-F]{12,64}", text) else {"name": text}
        if isinstance(model, dict) and (model.get("name") or model.get("sha256")):
            return {k: str(v) for k, v in model.items() if k in ("name", "sha256", "path") and v}
        self.problems.append("model must be a name, a sha256, or a mapping with name and/or sha256")
        return None

    def _traffic(self) -> None:
        traffic = self.section("traffic")
        if "traffic" not in self.data:
            self.problems.append("traffic is required (active_users, requests_per_user_per_day)")
        self.unknown_keys("traffic", traffic)
        required = "traffic" in self.data
        self.number(traffic, "traffic", "active_users", required=required, above=0)
        self.number(traffic, "traffic", "requests_per_user_per_day", required=required, above=0)
        self.number(traffic, "traffic", "monthly_growth", above=-1, percent=True)
        for key in ("tokens_in_per_request", "tokens_out_per_request", "seconds_per_request"):
            self.number(traffic, "traffic", key, minimum=0)
        self.number(traffic, "traffic", "peak_to_average", minimum=1)

    def _cloud(self) -> str:
        cloud = self.section("cloud")
        if "cloud" not in self.data:
            self.problems.append("cloud is required: name a catalogue entry (api: or instance:) or give prices")
            return ""
        self.unknown_keys("cloud", cloud)
        instance_mode = "instance" in cloud or "price_per_hour" in cloud
        if instance_mode and ("api" in cloud or any(key in cloud for key in API_PRICES)):
            self.problems.append("cloud: give either an API (api: or per-request/token prices) or instances "
                                 "(instance: or price_per_hour), not both")
            return ""
        return self._instances(cloud) if instance_mode else self._api(cloud)

    def _api(self, cloud: dict) -> str:
        self.values["cloud_mode"] = "api"
        self.sources["cloud_mode"] = "scenario cloud (an API, priced per use)"
        for key in ("throughput_rps", "utilisation", "min_instances", "workload"):
            if key in cloud:
                self.problems.append(f"cloud.{key} applies to self-hosted instances: give cloud.instance or "
                                     "cloud.price_per_hour, or remove it")
        for key, (target, factor) in API_PRICES.items():
            self.number(cloud, "cloud", key, target=target, minimum=0, money=True, factor=factor)
        label = "API (own prices)"
        if cloud.get("api") is not None:
            entry = self.entry(cloud["api"], "api", "cloud.api")
            if entry:
                for key in ("price_per_request", "price_per_1m_input_tokens", "price_per_1m_output_tokens",
                            "price_per_minute"):
                    self.from_entry(entry, key, key)
                label = f"API {entry.title}"
        elif not any(key in cloud for key in API_PRICES):
            self.problems.append("cloud needs a price: api: <catalogue entry>, price_per_request, "
                                 "price_per_1m_input_tokens/price_per_1m_output_tokens, price_per_minute, "
                                 "or instance:/price_per_hour for self-hosted")
        return label

    def _instances(self, cloud: dict) -> str:
        self.values["cloud_mode"] = "instances"
        self.sources["cloud_mode"] = "scenario cloud (self-hosted instances, priced per hour)"
        self.number(cloud, "cloud", "price_per_hour", minimum=0, money=True)
        self.number(cloud, "cloud", "throughput_rps", above=0)
        self.number(cloud, "cloud", "utilisation", required=True, above=0, maximum=1, percent=True)
        self.number(cloud, "cloud", "min_instances", minimum=0, integer=True)
        label = "self-hosted instances (own prices)"
        entry = None
        if cloud.get("instance") is not None:
            entry = self.entry(cloud["instance"], "instance", "cloud.instance")
            if entry:
                self.from_entry(entry, "price_per_hour", "price_per_hour")
                label = f"self-hosted {entry.title}"
        self._cloud_entry = entry
        if cloud.get("workload") is not None and "throughput_rps" not in self.values:
            self._workload(entry, str(cloud["workload"]))
        return label

    def _workload(self, entry: Entry | None, workload: str) -> None:
        if entry is None:
            self.problems.append("cloud.workload needs cloud.instance naming a catalogue entry")
            return
        measured = entry.throughput.get(workload)
        if measured is None:
            self.problems.append(f"cloud.workload: {entry.name} has no measured throughput for {workload!r}"
                                 f"{suggest(workload, list(entry.throughput))}")
            return
        where = f"catalogue {entry.name} throughput.{workload} ({measured.get('source', entry.source)})"
        if measured.get("requests_per_s") is not None:
            self.values["throughput_rps"] = Decimal(str(measured["requests_per_s"]))
            self.sources["throughput_rps"] = where
        elif measured.get("output_tokens_per_s") is not None:
            tokens = self.values.get("tokens_out_per_request")
            if not tokens:
                self.problems.append(f"traffic.tokens_out_per_request is required: throughput for {workload!r} "
                                     "is in output tokens per second")
                return
            self.values["throughput_rps"] = Decimal(str(measured["output_tokens_per_s"])) / tokens
            self.sources["throughput_rps"] = f"{where}, output tokens/s ÷ tokens_out_per_request"

    def _edge(self) -> str:
        edge = self.section("edge")
        if "edge" not in self.data:
            self.problems.append("edge is required (engineering_hours, hourly_rate, ...)")
            return ""
        self.unknown_keys("edge", edge)
        self.number(edge, "edge", "engineering_hours", required=True, minimum=0)
        self.number(edge, "edge", "hourly_rate", required=True, minimum=0, money=True)
        self.number(edge, "edge", "hardware_per_device", minimum=0, money=True)
        self.number(edge, "edge", "devices", above=0)
        self.number(edge, "edge", "model_size_mb", minimum=0)
        self.number(edge, "edge", "updates_per_year", minimum=0)
        self.number(edge, "edge", "egress_per_gb", minimum=0, money=True)
        self.number(edge, "edge", "latency_ms", above=0)
        self.number(edge, "edge", "power_w", minimum=0)
        self.number(edge, "edge", "electricity_per_kwh", minimum=0, money=True)
        self.number(edge, "edge", "upkeep_per_month", minimum=0, money=True)
        for key in ("energy_paid_by_user", "buy_hardware"):
            if key in edge and not isinstance(edge[key], bool):
                self.problems.append(f"edge.{key} must be true or false (got {edge[key]!r})")
        self.values["energy_paid_by_user"] = edge.get("energy_paid_by_user") is True
        if "energy_paid_by_user" in edge:
            self.sources["energy_paid_by_user"] = "scenario edge.energy_paid_by_user"
        for key, kind, price_key, target in (("egress", "egress", "price_per_gb", "egress_per_gb"),
                                             ("electricity", "electricity", "price_per_kwh", "electricity_per_kwh")):
            if edge.get(key) is not None:
                if target in self.values:
                    self.problems.append(f"edge: give {key} or {target}, not both")
                    continue
                entry = self.entry(edge[key], kind, f"edge.{key}")
                if entry:
                    self.from_entry(entry, price_key, target)
        if edge.get("device") is not None:
            self._device(edge)
        elif edge.get("buy_hardware") is True:
            self.problems.append("edge.buy_hardware needs edge.device (a device profile with a unit_price)")
        if edge.get("description"):
            return str(edge["description"])
        if self.device_name:
            return self.device_name
        own = "hardware_per_device" not in self.values or not self.values["hardware_per_device"]
        return "the users' own devices" if own and "devices" not in self.values else "dedicated devices"

    def _device(self, edge: dict) -> None:
        from toolkit.costs.device_figures import device_profile

        name = str(edge["device"])
        try:
            profile = device_profile(name)
        except BadInput as error:
            self.problems.append(f"edge.device: {error}")
            return
        self.device_name = name
        if profile.power_w is not None and "power_w" not in self.values:
            self.values["power_w"] = profile.power_w
            self.sources["power_w"] = f"device profile {name} power_w.{profile.power_source}"
        if edge.get("buy_hardware") is True and "hardware_per_device" not in self.values:
            if profile.unit_price is None:
                self.problems.append(f"edge.buy_hardware: device profile {name!r} has no unit_price; "
                                     "give edge.hardware_per_device")
            elif profile.currency != self.currency:
                self.problems.append(f"edge.device {name!r} unit_price is in {profile.currency} but the "
                                     f"scenario's currency is {self.currency}")
            else:
                self.values["hardware_per_device"] = profile.unit_price
                self.sources["hardware_per_device"] = f"device profile {name} unit_price ({profile.price_source})"

    def _apply_benches(self, model: dict | None) -> None:
        from toolkit.costs.apply_bench import apply_benches

        apply_benches(self, model)

    def _cross_checks(self) -> None:
        values = self.values
        mode = values.get("cloud_mode")
        if mode == "instances":
            if "price_per_hour" not in values and not any(p.startswith("cloud.") for p in self.problems):
                self.problems.append("cloud.price_per_hour is required (or cloud.instance naming a catalogue entry)")
            if "throughput_rps" not in values and not any("throughput" in p or "workload" in p
                                                          for p in self.problems):
                entry = self._cloud_entry
                known = f" (catalogue workloads: {', '.join(entry.throughput)})" if entry and entry.throughput else ""
                self.problems.append("cloud.throughput_rps is required for self-hosted instances: measured "
                                     f"requests/s per instance, cloud.workload, or a --bench on it{known}")
        if mode == "api":
            for price, need, what in (("price_per_1m_input_tokens", "tokens_in_per_request", "input token"),
                                      ("price_per_1m_output_tokens", "tokens_out_per_request", "output token"),
                                      ("price_per_minute", "seconds_per_request", "minute")):
                if values.get(price) and not values.get(need):
                    self.problems.append(f"traffic.{need} is required: the cloud is priced per {what}")
        if values.get("model_size_mb") and "egress_per_gb" not in values:
            self.notes.append("model downloads are not priced: give edge.egress_per_gb or edge.egress")
        if values.get("electricity_per_kwh") and not values.get("energy_paid_by_user"):
            if values.get("latency_ms") is None or values.get("power_w") is None:
                self.notes.append("energy is not priced: it needs edge.latency_ms (or --bench) and edge.power_w "
                                  "(or edge.device)")
