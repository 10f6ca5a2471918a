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


def builtin_profiles_dir() -> Path:
    """The builtin device profiles; their `cloud/` subfolder is the price catalogue.

    The repository keeps them in `device_profiles/` at its top level; setup.py ships
    that folder as the package `toolkit.device_profiles`, in the wheel and in an editable
    install alike, so importlib.resources finds it in both.
    """
    from importlib import resources

    try:
        folder = resources.files("toolkit.device_profiles")
    except ModuleNotFoundError:  # a source checkout on PYTHONPATH, never installed
        return project_root() / "device_profiles"
    return folder if isinstance(folder, Path) else Path(str(folder))
