"""Files shipped inside wheels the setup installs (third-party models used as they come)."""

import importlib.util
from pathlib import Path

import pytest


def package_file(package: str, *parts: str) -> Path:
    """PARTS under the installed PACKAGE, or a skip naming what is missing."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        pytest.skip(f"the {package} wheel is not installed (scripts/setup installs it with --no-deps)")
    path = Path(spec.origin).parent.joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"{path} is missing from the installed {package} wheel")
    return path
