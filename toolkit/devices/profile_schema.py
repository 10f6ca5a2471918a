"""The fields of a device profile, as pydantic models, and their problems in plain words.

`DeviceSpec` is every key a profile may hold once `extends:` is applied: strict (no "4"
read as 4), closed (an unknown key is an error, with the closest known names), and every
figure stated with its `source:`, an `estimate:` or `unknown:`. `parse_profile` turns
pydantic's errors into the one-line phrases `edgeward devices` has always shown
("missing field 'ram_mb'", "'power_w.idle' is negative (-2.7)").
"""

from __future__ import annotations

import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SkipValidation,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

KINDS = ("phone", "car", "board", "mcu", "host")
TRANSPORTS = ("local", "ssh", "adb", "none")
PRECISIONS = ("fp32", "fp16", "bf16", "int8", "int4")


class ProfileModel(BaseModel):
    """Strict (no "4" read as 4, no true read as 1) and closed (an unknown key is an error)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _date_as_text(value):
    # YAML reads an unquoted 2024-01-15 as a date
    return value.isoformat() if isinstance(value, datetime.date) else value


class Figure(ProfileModel):
    """A stated figure: its value and how it is known (`source`, `estimate` or `unknown`)."""

    value: SkipValidation[Any] = None  # checked together with its source, in `problems()`
    source: str | None = None
    estimate: str | None = None
    unknown: str | None = None  # why no figure exists
    as_of: Annotated[str | None, BeforeValidator(_date_as_text)] = None
    auto: str | None = None  # `value: auto` is read from this host when the profile loads

    @model_validator(mode="after")
    def _stated_and_valued(self):
        phrases = self.problems()
        if phrases:
            raise PydanticCustomError("figure", "{phrases}", {"phrases": phrases})
        return self

    def problems(self) -> list[str]:
        phrases = []
        if not any((text or "").strip() for text in (self.source, self.estimate, self.unknown)):
            phrases.append("needs a 'source:' or an 'estimate:' saying how it was worked out")
        if self.value is None and not (self.unknown or "").strip():
            phrases.append("has no value (write 'unknown: why' when no figure exists)")
        return phrases


class NumberFigure(Figure):
    value: SkipValidation[float | None] = None

    def problems(self) -> list[str]:
        phrases = super().problems()
        if self.value is not None and not _is_number(self.value):
            phrases.append(f"must be a number (found {self.value!r})")
        elif _is_number(self.value) and self.value < 0:
            phrases.append(f"is negative ({self.value})")
        return phrases


class TextFigure(Figure):
    value: SkipValidation[str | None] = None

    def problems(self) -> list[str]:
        phrases = super().problems()
        if self.value is not None and not isinstance(self.value, str):
            phrases.append(f"must be text (found {self.value!r})")
        return phrases


class InstructionsFigure(Figure):
    """CPU instruction-set extensions, named as Linux's /proc/cpuinfo names them (`asimddp`, `i8mm`,
    `avx512_vnni`, ...); an empty list states that the CPU has none of those asked about."""

    value: SkipValidation[list[str] | None] = None

    def problems(self) -> list[str]:
        phrases = super().problems()
        if self.value is not None and not (isinstance(self.value, list) and all(isinstance(v, str) for v in self.value)):
            phrases.append(f"must be a list of instruction names (found {self.value!r})")
        return phrases


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class Accelerator(ProfileModel):
    name: str = Field(min_length=1)
    type: str | None = None
    note: str | None = None
    peak_gops: dict[Literal["fp32", "fp16", "bf16", "int8", "int4"], NumberFigure] = Field(min_length=1)


class PowerDraw(ProfileModel):
    idle: NumberFigure
    typical: NumberFigure
    max: NumberFigure


def _positive_whole(value):
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise PydanticCustomError("positive_whole", "must be a positive whole number (found {found})", {"found": repr(value)})


PositiveWhole = Annotated[int, BeforeValidator(_positive_whole)]


class LocalTransport(ProfileModel):
    type: Literal["local"]
    python: str | None = None  # default: the Python running edgeward
    note: str | None = None


class SshTransport(ProfileModel):
    type: Literal["ssh"]
    host: str
    user: str | None = None
    port: PositiveWhole | None = None
    connect_timeout: PositiveWhole | None = None
    identity_file: str | None = None
    known_hosts: str | None = None
    python: str | None = None  # default: python3 on the device
    note: str | None = None

    @field_validator("host")
    @classmethod
    def _not_an_option(cls, host: str) -> str:
        if host.startswith("-"):
            raise PydanticCustomError("ssh_option", "{host} begins with '-' (it would be read as an ssh option)",
                                      {"host": repr(host)})
        if not host:
            raise PydanticCustomError("missing", "Field required")
        return host

    @field_validator("user")
    @classmethod
    def _a_user_name(cls, user: str | None) -> str | None:
        if user is not None and (not user or user.startswith("-")):
            raise PydanticCustomError("user_name", "{user} is not a user name", {"user": repr(user)})
        return user


class AdbTransport(ProfileModel):
    type: Literal["adb"]
    serial: str | None = None
    benchmark_binary: str | None = None  # LiteRT's benchmark_model on the phone
    python: str | None = None  # a Python with numpy and a runtime on the phone (Termux): lets validate run there
    note: str | None = None


class NoTransport(ProfileModel):
    type: Literal["none"]
    note: str | None = None  # how the device is reached instead (flashing, ...)


Transport = Annotated[LocalTransport | SshTransport | AdbTransport | NoTransport, Field(discriminator="type")]


class DeviceSpec(ProfileModel):
    """Every field a device profile may hold (after `extends:` is applied)."""

    kind: Literal["phone", "car", "board", "mcu", "host"]
    description: str = ""
    soc: TextFigure
    cpu: TextFigure
    cpu_cores: NumberFigure | None = None
    # int8 dot-product extensions (what makes int8 faster than float): asimddp, i8mm, avx512_vnni, avx_vnni, amx_int8
    cpu_int8_instructions: InstructionsFigure | None = None
    ram_mb: NumberFigure
    storage_gb: NumberFigure | None = None  # decimal GB
    flash_mb: NumberFigure | None = None  # microcontrollers: flash instead of storage
    accelerators: list[Accelerator] = Field(min_length=1)
    memory_bandwidth_gbps: NumberFigure
    power_w: PowerDraw
    unit_price_usd: NumberFigure
    runtimes: list[str]
    delegates: list[str] = []
    transport: Transport
    emulated: bool = False  # an emulator stands in for the device (scripts/arm64-testbed): numerics, not timings
    cpu_family: str | None = None  # the emulated CPU model (QEMU_CPU)


def check_profile(data: dict) -> list[str]:
    """Every problem with a profile's fields, as short phrases naming the field."""
    return parse_profile(data)[1]


def parse_profile(data: dict) -> tuple[DeviceSpec | None, list[str]]:
    """The typed fields of a profile, or None and every problem with them."""
    problems = []
    if data.get("storage_gb") is None and data.get("flash_mb") is None:
        problems.append("missing field 'storage_gb' (or 'flash_mb' for a microcontroller)")
    try:
        spec = DeviceSpec.model_validate(data)
    except ValidationError as error:
        return None, [phrase for item in error.errors() for phrase in _phrases(item)] + problems
    return (None, problems) if problems else (spec, [])


def _phrases(error: dict) -> list[str]:
    """A pydantic error in the words this module has always used: the field first, then what is wrong."""
    loc, kind, found = error["loc"], error["type"], error.get("input")
    if loc and loc[0] == "transport" and len(loc) > 2:
        loc = (loc[0],) + loc[2:]  # drop the transport type pydantic puts in the path
    where = _dotted(loc)
    if kind == "figure":
        return [f"'{where}' {phrase}" for phrase in error["ctx"]["phrases"]]
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        found = found.get("type") if isinstance(found, dict) else None
        return [f"'transport.type' must be one of {', '.join(TRANSPORTS)} (found {found!r})"]
    if kind == "extra_forbidden":
        return [f"unknown field '{where}'{_did_you_mean(loc)}"]
    whole = _whole_field_phrase(loc, kind)
    if whole:
        return [whole]
    if kind == "missing":
        return [f"missing field '{where}'"]
    if kind == "literal_error" and loc == ("kind",):
        return [f"'kind' must be one of {', '.join(KINDS)} (found {found!r})"]
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return [f"'{where}' must be a mapping (found {repr(found)[:60]})"]
    if kind == "string_type":
        return [f"'{where}' must be text (found {repr(found)[:60]})"]
    if kind in ("ssh_option", "user_name", "positive_whole"):  # raised here, already in these words
        return [f"'{where}' {error['msg']}"]
    return [f"'{where}': {error['msg'][:1].lower()}{error['msg'][1:]}"]


def _whole_field_phrase(loc: tuple, kind: str) -> str | None:
    """Fields whose every problem has one message (pydantic's words are generic)."""
    top = loc[0] if loc else ""
    if loc == ("runtimes",) and kind == "missing":
        return "missing field 'runtimes'"
    if top in ("runtimes", "delegates"):
        return f"'{top}' must be a list of names"
    if loc == ("transport",):
        return f"missing field 'transport' (type: {', '.join(TRANSPORTS[:-1])} or {TRANSPORTS[-1]})"
    if top != "accelerators":
        return None
    if len(loc) == 1:
        return "'accelerators' must list at least the CPU with its peak throughput"
    item = _dotted(loc[:2])
    if len(loc) == 2 or loc[2] == "name":
        return f"'{item}' needs a 'name'"
    if loc[2] != "peak_gops":
        return None
    if len(loc) == 3:
        return f"'{item}.peak_gops' must give the peak per precision ({', '.join(PRECISIONS)})"
    if loc[-1] == "[key]":
        return f"'{item}.peak_gops.{loc[3]}' is not a precision ({', '.join(PRECISIONS)})"
    if len(loc) == 4:
        return f"'{item}.peak_gops.{loc[3]}' must be a figure {{value, source|estimate}}"
    return None


def _did_you_mean(loc: tuple) -> str:
    """' (did you mean ...?)' naming the fields close to an unknown key, at its place in the profile."""
    from toolkit.common.text import close_matches

    models = [DeviceSpec]
    for part in loc[:-1]:
        if not isinstance(part, int) and part not in PRECISIONS:  # not a list item or a precision's figure
            models = [found for model in models if part in model.model_fields
                      for found in _models_in(model.model_fields[part].annotation)]
    close = close_matches(loc[-1], sorted({name for model in models for name in model.model_fields}))
    return f" (did you mean {', '.join(close)}?)" if close else ""


def _models_in(annotation) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in getattr(annotation, "__args__", ()) for model in _models_in(arg)]


def _dotted(loc: tuple) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
