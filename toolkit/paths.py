"""Where Edgeward keeps its cache and user configuration."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$EDGEWARD_CACHE, else $XDG_CACHE_HOME/edgeward, else ~/.cache/edgeward."""
    if os.environ.get("EDGEWARD_CACHE"):
        base = Path(os.environ["EDGEWARD_CACHE"])
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgeward"
    base.mkdir(parents=True, exist_ok=True)
    return base


def config_dir() -> Path:
    """$EDGEWARD_CONFIG, else $XDG_CONFIG_HOME/edgeward, else ~/.config/edgeward."""
    if os.environ.get("EDGEWARD_CONFIG"):
        return Path(os.environ["EDGEWARD_CONFIG"])
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "edgeward"


def project_root() -> Path:
    return Path(__file__).resolve().parent.parent
