"""The cloud price catalogue: one YAML file per offering in `device_profiles/cloud/`.

Every entry carries its `as_of` date and `source`, because cloud prices change (AWS cut
the H100 instance price by 45% in June 2025) and a report is only as good as the date
of its figures; an entry older than 18 months is flagged. A scenario names an entry
(`cloud: {instance: aws-g4dn-xlarge}`) or gives its own numbers; an unknown name gets the
close matches in the error.

Users add entries with `--catalogue DIR` (or `$EDGEWARD_CLOUD_CATALOGUE`, folders joined by
os.pathsep): they are added to the builtin ones, and the user's entry wins on a name clash.

An API entry may be priced in volume tiers, each at the margin (the first 1,000 units free,
the next at one price, the rest at a lower one), per calendar month:

    tiers:
      - {up_to: 1000, price_per_1k_requests: 0}
      - {up_to: 5000000, price_per_1k_requests: 1.50}
      - {up_to: 20000000, price_per_1k_requests: 1.00}

Past the last tier's `up_to` the last rate is used and the report warns.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

from toolkit.common.text import did_you_mean
from toolkit.costs.currencies import is_currency
from toolkit.costs.values import ValueProblem, read_value
from toolkit.errors import BadInput

KINDS = ("instance", "api", "egress", "electricity")
PRICE_KEYS = {
    "instance": ("price_per_hour", "price_per_hour_reserved", "price_per_hour_spot"),
    "api": ("price_per_request", "price_per_1m_input_tokens", "price_per_1m_output_tokens", "price_per_minute"),
    "egress": ("price_per_gb",),
    "electricity": ("price_per_kwh",),
}
SAME_PRICE = {  # another spelling -> (the key it is stored under, factor)
    "price_per_1k_requests": ("price_per_request", Decimal("0.001")),
    "price_per_1k_input_tokens": ("price_per_1m_input_tokens", Decimal(1000)),
    "price_per_1k_output_tokens": ("price_per_1m_output_tokens", Decimal(1000)),
}
ENTRY_KEYS = {"name", "kind", "title", "provider", "currency", "as_of", "source", "notes", "aliases", "throughput",
              "accelerator", "region", "tiers", *SAME_PRICE, *(k for keys in PRICE_KEYS.values() for k in keys)}
STALE_MONTHS = 18
BUILTIN = "builtin"


@dataclass(frozen=True)
class Tier:
    """Requests up to `up_to` in a month (None: no limit) cost `price_per_request` each."""

    up_to: Decimal | None
    price_per_request: Decimal


@dataclass(frozen=True)
class Entry:
    """One priced offering. `prices` maps a PRICE_KEYS name to its value (a string, exact)."""

    name: str
    kind: str
    title: str
    currency: str
    prices: dict[str, str]
    as_of: str
    source: str
    path: Path
    aliases: tuple[str, ...] = ()
    throughput: dict[str, dict] = field(default_factory=dict)
    notes: str = ""
    accelerator: str = ""
    tiers: tuple[Tier, ...] = ()
    origin: str = BUILTIN  # "builtin", or the user's folder it came from

    def cite(self) -> str:
        where = "" if self.origin == BUILTIN else f", from {self.origin}"
        return f"catalogue {self.name} (as of {self.as_of}; {self.source}{where})"

    def age_months(self, today: datetime.date | None = None) -> int | None:
        return months_since(self.as_of, today)

    @property
    def stale(self) -> bool:
        age = self.age_months()
        return age is not None and age > STALE_MONTHS


def months_since(as_of: str, today: datetime.date | None = None) -> int | None:
    """Whole months from `as_of` (YYYY, YYYY-MM or YYYY-MM-DD; a bare year counts from its
    end, the kindest reading) to today; None when it is not a date."""
    today = today or datetime.date.today()
    parts = str(as_of).split("-")
    try:
        year = int(parts[0])
        month = int(parts[1]) if len(parts) > 1 else 12
    except ValueError:
        return None
    if not (1900 <= year <= 9999 and 1 <= month <= 12):
        return None
    return (today.year - year) * 12 + today.month - month


def builtin_dir() -> Path:
    from toolkit.paths import builtin_profiles_dir

    return builtin_profiles_dir() / "cloud"


def catalogue_dirs(extra=()) -> list[tuple[Path, str]]:
    """(folder, origin) in the order they are read; a later folder's entry wins."""
    if isinstance(extra, str | os.PathLike):
        extra = [extra]
    folders = [(builtin_dir(), BUILTIN)]
    env = os.environ.get("EDGEWARD_CLOUD_CATALOGUE", "")
    for text in [part for part in env.split(os.pathsep) if part.strip()]:
        folders.append((Path(text), f"$EDGEWARD_CLOUD_CATALOGUE {text}"))
    for folder in extra or ():
        folders.append((Path(folder), str(folder)))
    for folder, origin in folders[1:]:
        if not folder.is_dir():
            raise BadInput(f"cloud catalogue {origin}: folder not found"
                           if not folder.exists() else f"cloud catalogue {origin}: not a folder")
    return folders


def catalogue_dir() -> Path:
    """The builtin folder (kept for callers that list it)."""
    return builtin_dir()


def load_catalogue(folder: str | os.PathLike | None = None, *, extra=()) -> dict[str, Entry]:
    """All entries by name: the builtin ones, then $EDGEWARD_CLOUD_CATALOGUE's, then `extra`
    folders' (the user's win). `folder` alone reads just that folder. A malformed entry is
    an error naming the file and the field."""
    if folder is not None:
        return dict(_load(str(Path(folder).resolve()), str(folder)))
    entries: dict[str, Entry] = {}
    for path, origin in catalogue_dirs(extra):
        entries.update(_load(str(path.resolve()), origin))
    return entries


@lru_cache(maxsize=16)
def _load(folder: str, origin: str) -> tuple[tuple[str, Entry], ...]:
    from toolkit.safety.yaml import load_yaml

    entries = []
    for path in sorted(Path(folder).glob("*.yaml")):
        data = load_yaml(path)
        entry = parse_entry(data, path, origin)
        entries.append((entry.name, entry))  # keyed by name: a user's entry of the same name replaces ours
    return tuple(entries)


def parse_entry(data, path: Path, origin: str = BUILTIN) -> Entry:
    """A checked Entry; BadInput naming the file and every problem."""
    if not isinstance(data, dict):
        raise BadInput(f"{path}: a catalogue entry is a mapping")
    problems = [f"'{key}' is missing" for key in ("name", "kind", "currency", "as_of", "source") if not data.get(key)]
    problems += [f"unknown field '{key}'{did_you_mean(key, sorted(ENTRY_KEYS))}" for key in data
                 if key not in ENTRY_KEYS]
    kind = data.get("kind")
    if kind and (not isinstance(kind, str) or kind not in KINDS):
        problems.append(f"kind {kind!r} is not one of {', '.join(KINDS)}")
        kind = None
    currency = str(data.get("currency") or "").strip().upper()
    if data.get("currency") and not is_currency(currency):
        problems.append(f"currency {data['currency']!r} is not an ISO 4217 code (USD, EUR, ...)")
    prices = _prices(data, kind, currency, problems)
    tiers = _tiers(data.get("tiers"), currency, problems) if kind == "api" and "tiers" in data else ()
    if "tiers" in data and kind != "api":
        problems.append("tiers apply to an api entry")
    if kind in KINDS and not prices and not tiers:
        problems.append(f"no price: give one of {', '.join(PRICE_KEYS[kind])}")
    if tiers and "price_per_request" in prices:
        problems.append("give tiers or price_per_request, not both")
    if data.get("as_of") and months_since(str(data["as_of"])) is None:
        problems.append(f"as_of {data['as_of']!r} is not a date (YYYY-MM-DD, YYYY-MM or YYYY)")
    for key in ("aliases",):
        if data.get(key) is not None and not isinstance(data[key], list):
            problems.append(f"{key} must be a list")
    if data.get("throughput") is not None and not isinstance(data["throughput"], dict):
        problems.append("throughput must be a mapping of workload -> figures")
    if problems:
        raise BadInput(f"{path}: " + "; ".join(problems))
    return Entry(
        name=str(data["name"]),
        kind=kind,
        title=str(data.get("title") or data["name"]),
        currency=currency,
        prices=prices,
        as_of=str(data["as_of"]),
        source=str(data["source"]),
        path=path,
        aliases=tuple(str(alias) for alias in data.get("aliases") or ()),
        throughput=dict(data.get("throughput") or {}),
        notes=str(data.get("notes") or ""),
        accelerator=str(data.get("accelerator") or ""),
        tiers=tiers,
        origin=origin,
    )


def _prices(data: dict, kind, currency: str, problems: list[str]) -> dict[str, str]:
    prices: dict[str, str] = {}
    keys = list(PRICE_KEYS.get(kind, ())) + ([k for k in SAME_PRICE if kind == "api"])
    for key in keys:
        if data.get(key) is None:
            continue
        target, factor = SAME_PRICE.get(key, (key, Decimal(1)))
        if target in prices:
            problems.append(f"{key} and {target} are two prices for one thing: give one")
            continue
        try:
            value, unit, _ = read_value(data[key], money=True)
        except ValueProblem as problem:
            problems.append(f"{key} {problem}")
            continue
        if unit and unit != currency:
            problems.append(f"{key} is in {unit} but the entry's currency is {currency}")
        if value < 0:
            problems.append(f"{key} must be at least 0 (got {data[key]!r})")
            continue
        prices[target] = str(value * factor)
    return prices


def _tiers(raw, currency: str, problems: list[str]) -> tuple[Tier, ...]:
    if not isinstance(raw, list) or not raw:
        problems.append("tiers must be a list of {up_to, price_per_1k_requests | price_per_request}")
        return ()
    tiers, previous = [], Decimal(0)
    for index, item in enumerate(raw):
        where = f"tiers[{index}]"
        if not isinstance(item, dict) or set(item) - {"up_to", "price_per_request", "price_per_1k_requests"}:
            problems.append(f"{where} must be a mapping of up_to and price_per_1k_requests or price_per_request")
            return ()
        if ("price_per_request" in item) == ("price_per_1k_requests" in item):
            problems.append(f"{where}: give one of price_per_request and price_per_1k_requests")
            return ()
        key = "price_per_request" if "price_per_request" in item else "price_per_1k_requests"
        try:
            price, unit, _ = read_value(item[key], money=True)
            up_to = None if item.get("up_to") is None else read_value(item["up_to"])[0]
        except ValueProblem as problem:
            problems.append(f"{where} {problem}")
            return ()
        if unit and unit != currency:
            problems.append(f"{where} is in {unit} but the entry's currency is {currency}")
        if price < 0:
            problems.append(f"{where} price must be at least 0")
            return ()
        if up_to is not None and up_to <= previous:
            problems.append(f"{where}.up_to must be larger than the tier before it")
            return ()
        if up_to is None and index != len(raw) - 1:
            problems.append(f"{where}: only the last tier may leave out up_to")
            return ()
        tiers.append(Tier(up_to, price * (Decimal("0.001") if key == "price_per_1k_requests" else Decimal(1))))
        previous = up_to if up_to is not None else previous
    return tuple(tiers)


def lookup(name: str, kind: str, catalogue: dict[str, Entry] | None = None) -> Entry:
    """The entry called `name` (or one of its aliases) of this kind, else BadInput with close matches."""
    catalogue = load_catalogue() if catalogue is None else catalogue
    wanted = str(name).strip().lower()
    of_kind = [entry for entry in catalogue.values() if entry.kind == kind]
    for entry in of_kind:
        if wanted == entry.name.lower():
            return entry
    for entry in of_kind:
        if wanted in (alias.lower() for alias in entry.aliases):
            return entry
    raise BadInput(f"unknown {kind} {name!r}{did_you_mean(name, sorted(entry.name for entry in of_kind))}")


def table(catalogue: dict[str, Entry] | None = None) -> list[dict]:
    """Rows for a listing: name, kind, price, currency, as_of, where it came from."""
    catalogue = load_catalogue() if catalogue is None else catalogue
    return [
        {"name": entry.name, "kind": entry.kind, "title": entry.title, "currency": entry.currency,
         "prices": {**entry.prices, **({"tiers": tier_text(entry.tiers)} if entry.tiers else {})},
         "as_of": entry.as_of, "stale": entry.stale, "source": entry.source, "origin": entry.origin}
        for entry in sorted(catalogue.values(), key=lambda e: (e.kind, e.name))
    ]


def tier_text(tiers: tuple[Tier, ...]) -> str:
    """'first 1,000 free; to 5M 1.5/1k; to 20M 1/1k' (per month, at the margin)."""
    from toolkit.costs.money import count

    parts = []
    for tier in tiers:
        rate = "free" if tier.price_per_request == 0 else f"{(tier.price_per_request * 1000).normalize():f}/1k"
        parts.append(f"to {count(tier.up_to)} {rate}" if tier.up_to is not None else f"beyond {rate}")
    return "; ".join(parts)


def tiered_cost(tiers: tuple[Tier, ...], units: Decimal) -> tuple[Decimal, bool]:
    """The month's bill for `units` requests priced at the margin, and whether `units` passed
    the last tier (then priced at the last tier's rate)."""
    cost, start = Decimal(0), Decimal(0)
    for tier in tiers:
        end = units if tier.up_to is None else min(units, tier.up_to)
        if end > start:
            cost += (end - start) * tier.price_per_request
        if tier.up_to is None or units <= tier.up_to:
            return cost, False
        start = tier.up_to
    last = tiers[-1]
    return cost + (units - start) * last.price_per_request, True
