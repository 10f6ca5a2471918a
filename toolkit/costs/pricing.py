"""The cloud price catalogue: one YAML file per offering in `device_profiles/cloud/`.

Every entry carries its `as_of` date and `source`, because cloud prices change (AWS cut
the H100 instance price by 45% in June 2025) and a report is only as good as the date
of its figures. A scenario names an entry (`cloud: {instance: aws-g4dn-xlarge}`) or
gives its own numbers; an unknown name gets the close matches in the error.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from toolkit.errors import BadInput

KINDS = ("instance", "api", "egress", "electricity")
PRICE_KEYS = {
    "instance": ("price_per_hour",),
    "api": ("price_per_request", "price_per_1m_input_tokens", "price_per_1m_output_tokens", "price_per_minute"),
    "egress": ("price_per_gb",),
    "electricity": ("price_per_kwh",),
}


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

    def cite(self) -> str:
        return f"catalogue {self.name} (as of {self.as_of}; {self.source})"


def catalogue_dir() -> Path:
    """$EDGEWARD_CLOUD_CATALOGUE, else `device_profiles/cloud` beside the package."""
    if os.environ.get("EDGEWARD_CLOUD_CATALOGUE"):
        return Path(os.environ["EDGEWARD_CLOUD_CATALOGUE"])
    from toolkit.paths import project_root

    return project_root() / "device_profiles" / "cloud"


def load_catalogue(folder: str | os.PathLike | None = None) -> dict[str, Entry]:
    """All entries by name. A malformed entry is an error naming the file and the field."""
    folder = Path(folder) if folder is not None else catalogue_dir()
    return dict(_load(str(folder.resolve()) if folder.exists() else str(folder)))


@lru_cache(maxsize=4)
def _load(folder: str) -> tuple[tuple[str, Entry], ...]:
    import yaml

    entries = []
    for path in sorted(Path(folder).glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            raise BadInput(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
        entries.append((path.stem, _entry(data, path)))
    return tuple(entries)


def _entry(data, path: Path) -> Entry:
    if not isinstance(data, dict):
        raise BadInput(f"{path}: a catalogue entry is a mapping")
    problems = [f"'{key}' is missing" for key in ("name", "kind", "currency", "as_of", "source") if not data.get(key)]
    kind = data.get("kind")
    if kind and kind not in KINDS:
        problems.append(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    prices = {key: str(data[key]) for key in PRICE_KEYS.get(kind, ()) if data.get(key) is not None}
    if kind in KINDS and not prices:
        problems.append(f"no price: give one of {', '.join(PRICE_KEYS[kind])}")
    if problems:
        raise BadInput(f"{path}: " + "; ".join(problems))
    return Entry(
        name=str(data["name"]),
        kind=kind,
        title=str(data.get("title") or data["name"]),
        currency=str(data["currency"]).upper(),
        prices=prices,
        as_of=str(data["as_of"]),
        source=str(data["source"]),
        path=path,
        aliases=tuple(str(alias) for alias in data.get("aliases") or ()),
        throughput=dict(data.get("throughput") or {}),
        notes=str(data.get("notes") or ""),
        accelerator=str(data.get("accelerator") or ""),
    )


def lookup(name: str, kind: str, catalogue: dict[str, Entry] | None = None) -> Entry:
    """The entry called `name` (or one of its aliases) of this kind, else BadInput with close matches."""
    catalogue = load_catalogue() if catalogue is None else catalogue
    wanted = str(name).strip().lower()
    of_kind = [entry for entry in catalogue.values() if entry.kind == kind]
    for entry in of_kind:
        if wanted == entry.name.lower() or wanted in (alias.lower() for alias in entry.aliases):
            return entry
    raise BadInput(f"unknown {kind} {name!r}{suggest(name, [entry.name for entry in of_kind])}")


def suggest(name: str, names: list[str]) -> str:
    """' (did you mean a, b?)' or a pointer to the list when nothing is close."""
    close = difflib.get_close_matches(str(name).lower(), [n.lower() for n in names], n=3, cutoff=0.5)
    lookup_case = {n.lower(): n for n in names}
    if close:
        return f" (did you mean {', '.join(lookup_case[c] for c in close)}?)"
    if names:
        shown = ", ".join(sorted(names)[:8])
        return f" (known: {shown}{', …' if len(names) > 8 else ''})"
    return ""


def table(catalogue: dict[str, Entry] | None = None) -> list[dict]:
    """Rows for a listing: name, kind, price, currency, as_of."""
    catalogue = load_catalogue() if catalogue is None else catalogue
    return [
        {"name": entry.name, "kind": entry.kind, "title": entry.title, "currency": entry.currency,
         "prices": entry.prices, "as_of": entry.as_of, "source": entry.source}
        for entry in sorted(catalogue.values(), key=lambda e: (e.kind, e.name))
    ]
