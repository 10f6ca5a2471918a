"""What `json.dumps` cannot encode on its own, made encodable (its `default=`)."""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from pathlib import PurePath


def json_default(value):
    """Paths as text, arrays and numpy scalars as lists/numbers, dataclasses as dicts, the rest as str()."""
    if isinstance(value, PurePath):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return str(value)
