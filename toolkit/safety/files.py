"""Generic checks on a file before any parser sees it: it exists, and reads stay bounded."""

from __future__ import annotations

import json
from pathlib import Path

from toolkit.common.text import first_line
from toolkit.errors import BadInput

JSON_CONFIG_MAX_BYTES = 10 * 1024 * 1024


def check_exists(path: Path) -> None:
    path = Path(path)
    if not path.exists():
        raise BadInput(f"{path}: no such file")
    if not path.is_file():
        raise BadInput(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise BadInput(f"{path}: the file is empty")


def read_limited(path: Path, limit: int = JSON_CONFIG_MAX_BYTES) -> bytes:
    """The whole file, refused when it is larger than `limit` bytes."""
    if path.stat().st_size > limit:
        raise BadInput(f"{path}: larger than {limit // 2**20} MB")
    return path.read_bytes()


def parse_json_limited(data: bytes, what: str):
    """json.loads with a size limit; errors (deep nesting included) are one line."""
    if len(data) > JSON_CONFIG_MAX_BYTES:
        raise BadInput(f"{what}: the JSON is larger than {JSON_CONFIG_MAX_BYTES // 2**20} MB")
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as error:
        raise BadInput(f"{what}: not valid JSON ({first_line(error)})") from None
