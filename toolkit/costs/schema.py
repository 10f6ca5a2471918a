"""The scenario's shape as pydantic models: unknown keys refused, every problem listed at once.

Each figure is read by `values.read_value` (numbers, "5%", "95 EUR", {value, source}) and
checked against its bounds here, so the resolver (`scenario.py`) only ever sees figures
that are numbers within range. Problems come back as one-line texts such as
"traffic.active_users must be more than 0 (got 0)".
"""

import re
from decimal import Decimal
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from toolkit.costs.currencies import is_currency
from toolkit.costs.values import ValueProblem, read_value


class Figure(NamedTuple):
    value: Decimal
    currency: str | None
    source: str | None


def _plain(bound) -> str:
    return f"{Decimal(bound).normalize():f}"


def _bounds_problem(value: Decimal, above, minimum, maximum, integer) -> str | None:
    if above is not None and value <= above:
        return f"must be more than {_plain(above)}"
    if minimum is not None and value < minimum:
        return "must be within [0, 1]" if maximum == 1 and minimum == 0 else f"must be at least {_plain(minimum)}"
    if maximum is not None and value > maximum:
        return "must be within [0, 1]" if maximum == 1 and minimum == 0 else f"must be at most {_plain(maximum)}"
    if integer and value != value.to_integral_value():
        return "must be a whole number"
    return None


def figure(*, above=None, minimum=None, maximum=None, percent=False, money=False, integer=False, required=False):
    """A field type: a Figure read from any accepted form and checked against its bounds."""

    def read(raw):
        if raw is None:
            if required:
                raise PydanticCustomError("required", "is required")
            return None
        try:
            value, currency, source = read_value(raw, percent=percent, money=money)
        except ValueProblem as problem:
            raise PydanticCustomError("figure", "{problem}", {"problem": str(problem)}) from None
        bad = _bounds_problem(value, above, minimum, maximum, integer)
        if bad:
            raise PydanticCustomError("figure", "{problem}", {"problem": f"{bad} (got {raw!r})"})
        return Figure(value, currency, source)

    return Annotated[Any, BeforeValidator(read)]


def flag(raw):
    if raw is None or isinstance(raw, bool):
        return raw
    raise PydanticCustomError("figure", "{problem}", {"problem": f"must be true or false (got {raw!r})"})


def text(raw):
    if raw is None or isinstance(raw, str):
        return raw
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return str(raw)
    raise PydanticCustomError("figure", "{problem}", {"problem": f"must be text (got {type(raw).__name__})"})


Flag = Annotated[Any, BeforeValidator(flag)]
Text = Annotated[Any, BeforeValidator(text)]
Count = figure(above=0, maximum=Decimal("1e11"))  # people, devices: more than ten times the world's population is a typo
Money = figure(minimum=0, money=True)
Share = figure(minimum=0, maximum=1, percent=True)

BIG_DAY = Decimal("1e7")  # requests a user makes a day: over a hundred a second is not a user
MAX_LATENCY_MS = Decimal("1e7")  # about three hours for one inference
MAX_POWER_W = Decimal("1e6")  # a megawatt per device


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, validate_default=True)


class Traffic(Section):
    active_users: figure(above=0, maximum=Decimal("1e11"), required=True) = None
    requests_per_user_per_day: figure(above=0, maximum=BIG_DAY, required=True) = None
    monthly_growth: figure(above=-1, maximum=10, percent=True) = None
    tokens_in_per_request: figure(minimum=0, maximum=Decimal("1e9")) = None
    tokens_out_per_request: figure(minimum=0, maximum=Decimal("1e9")) = None
    seconds_per_request: figure(minimum=0, maximum=Decimal("1e6")) = None
    peak_to_average: figure(minimum=1, maximum=Decimal(86400)) = None
    installs: Count = None
    hourly_load: list[figure(minimum=0, maximum=Decimal("1e15"), required=True)] | None = None

    @field_validator("hourly_load")
    @classmethod
    def _day(cls, value):
        if value is not None and (len(value) != 24 or not any(item.value for item in value)):
            raise PydanticCustomError("figure", "{problem}", {
                "problem": f"must list 24 hourly loads, not all zero (got {len(value)})"})
        return value


class SmallModel(Section):
    api: Text = None
    share: figure(minimum=0, maximum=1, percent=True, required=True) = None
    price_per_request: Money = None
    price_per_1k_requests: Money = None
    price_per_1m_input_tokens: Money = None
    price_per_1k_input_tokens: Money = None
    price_per_1m_output_tokens: Money = None
    price_per_1k_output_tokens: Money = None


class Cloud(Section):
    api: Text = None
    instance: Text = None
    workload: Text = None
    description: Text = None
    price_per_request: Money = None
    price_per_1k_requests: Money = None
    price_per_1k_input_tokens: Money = None
    price_per_1m_input_tokens: Money = None
    price_per_1k_output_tokens: Money = None
    price_per_1m_output_tokens: Money = None
    price_per_minute: Money = None
    price_per_hour: Money = None
    purchase: Literal["on-demand", "reserved", "spot"] | None = None
    scaling: Literal["peak", "autoscaled"] | None = None
    throughput_rps: figure(above=0, maximum=Decimal("1e12")) = None
    prefill_tokens_per_s: figure(above=0, maximum=Decimal("1e12")) = None
    utilisation: figure(above=0, maximum=1, percent=True) = None
    min_instances: figure(minimum=0, maximum=Decimal("1e6"), integer=True) = None
    small_model: SmallModel | None = None


def _devices(raw):
    if isinstance(raw, str) and raw.strip().lower() in ("traffic", "from traffic", "auto"):
        return "traffic"
    if raw is None:
        return None
    try:
        value, _, source = read_value(raw)
    except ValueProblem as problem:
        raise PydanticCustomError("figure", "{problem}", {
            "problem": f"{problem}; or 'traffic' to size the fleet from the peak load"}) from None
    bad = _bounds_problem(value, 0, None, Decimal("1e11"), False)
    if bad:
        raise PydanticCustomError("figure", "{problem}", {"problem": f"{bad} (got {raw!r})"})
    return Figure(value, None, source)


class Edge(Section):
    device: Text = None
    description: Text = None
    engineering_hours: figure(minimum=0, maximum=Decimal("1e9"), required=True) = None
    hourly_rate: figure(minimum=0, money=True, required=True) = None
    hardware_per_device: Money = None
    buy_hardware: Flag = None
    devices: Annotated[Any, BeforeValidator(_devices)] = None
    devices_grow_with_users: Flag = None
    concurrency: figure(minimum=1, maximum=Decimal(100_000), integer=True) = None
    lifetime_months: figure(minimum=1, maximum=600, integer=True) = None
    fee_per_device_per_month: Money = None
    model_size_mb: figure(minimum=0, maximum=Decimal("1e9")) = None
    updates_per_year: figure(minimum=0, maximum=Decimal(365 * 24)) = None
    egress_per_gb: Money = None
    egress: Text = None
    latency_ms: figure(above=0, maximum=MAX_LATENCY_MS) = None
    latency_p95_ms: figure(above=0, maximum=MAX_LATENCY_MS) = None
    latency_budget_ms: figure(above=0, maximum=MAX_LATENCY_MS) = None
    power_w: figure(minimum=0, maximum=MAX_POWER_W) = None
    electricity_per_kwh: Money = None
    electricity: Text = None
    energy_paid_by_user: Flag = None
    upkeep_per_month: Money = None


class Router(Section):
    on_device_share: figure(minimum=0, maximum=1, percent=True, required=True) = None


class ScenarioDoc(Section):
    name: Text = None
    description: Text = None
    currency: Any = None
    months: Any = None
    model: Any = None
    discount_rate: figure(minimum=0, maximum=1, percent=True) = None
    traffic: Traffic
    cloud: Cloud
    edge: Edge
    router: Router

    @field_validator("currency", mode="before")
    @classmethod
    def _currency(cls, raw):
        code = "USD" if raw is None else str(raw).strip()
        if not re.fullmatch(r"[A-Z]{3}", code) or not is_currency(code):
            raise PydanticCustomError("figure", "{problem}", {
                "problem": f"must be a three-letter ISO code such as USD or EUR (got {raw!r})"})
        return code

    @field_validator("months", mode="before")
    @classmethod
    def _months(cls, raw):
        if raw is None:
            return 36
        if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= 600:
            raise PydanticCustomError("figure", "{problem}", {
                "problem": f"must be a whole number between 1 and 600 (got {raw!r})"})
        return raw

    @field_validator("model", mode="before")
    @classmethod
    def _model(cls, raw):
        if raw is None:
            return None
        if isinstance(raw, str) and raw.strip():
            value = raw.strip()
            return {"sha256": value.lower()} if re.fullmatch(r"[0-9a-fA-F]{12,64}", value) else {"name": value}
        if isinstance(raw, dict) and (raw.get("name") or raw.get("sha256")):
            return {str(k): str(v) for k, v in raw.items() if k in ("name", "sha256", "path") and v}
        raise PydanticCustomError("figure", "{problem}", {
            "problem": "must be a name, a sha256, or a mapping with name and/or sha256"})


MISSING_SECTION = {
    "traffic": "traffic is required (active_users, requests_per_user_per_day)",
    "cloud": "cloud is required: name a catalogue entry (api: or instance:) or give prices",
    "edge": "edge is required (engineering_hours, hourly_rate, ...)",
    "router": "router.on_device_share is required",
}


def validate(data: dict) -> tuple[ScenarioDoc | None, list[str]]:
    """(the model, []) or (None, every problem as one line each)."""
    try:
        return ScenarioDoc.model_validate(data), []
    except ValidationError as error:
        return None, [problem_text(item, data) for item in error.errors(include_url=False)]


def _fields_at(loc: tuple) -> list[str]:
    model: type[BaseModel] = ScenarioDoc
    for part in loc[:-1]:
        annotation = model.model_fields.get(str(part))
        if annotation is None:
            return []
        inner = annotation.annotation
        candidates = getattr(inner, "__args__", (inner,))
        found = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if found is None:
            return []
        model = found
    return list(model.model_fields)


def problem_text(item: dict, data: dict) -> str:
    from toolkit.common.text import did_you_mean

    loc = tuple(item.get("loc") or ())
    where = ".".join(str(part) for part in loc)
    kind = item.get("type")
    if kind == "missing":
        return MISSING_SECTION.get(where, f"{where} is required")
    if kind == "extra_forbidden":
        if where == "on_device_share":
            return "on_device_share belongs under 'router:'"
        return f"unknown field '{where}'{did_you_mean(str(loc[-1]), _fields_at(loc))}"
    if kind in ("figure", "required"):
        return f"{where} {item.get('msg')}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        got = item.get("input")
        return f"'{where}' must be a mapping (got {type(got).__name__})"
    if kind == "literal_error":
        return f"{where} must be one of {item.get('ctx', {}).get('expected', '')} (got {item.get('input')!r})"
    if kind == "list_type":
        return f"{where} must be a list (got {type(item.get('input')).__name__})"
    return f"{where} {item.get('msg', 'is not valid').lower()}"
