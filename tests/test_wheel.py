"""The wheel is self-contained: installed alone, it finds its device profiles, its cloud
prices and its demo recipe, with nothing of the checkout importable."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow

SOURCES = ("toolkit", "device_profiles", "pyproject.toml", "setup.py", "README.md")
# Where toolkit could come from if the test were wrong: the checkout, through the editable
# install's finder or the current folder.
WHERE_TOOLKIT_IS = """
import importlib.machinery, json, sys
print(json.dumps({
    "paths": [p for p in sys.path if importlib.machinery.PathFinder.find_spec("toolkit", [p or "."])],
    "finders": [type(f).__module__ for f in sys.meta_path if "editable" in type(f).__module__],
}))
"""


def build_wheel(out: Path, scratch: Path) -> Path:
    """Build from a copy of the sources: a stale build/ in the checkout could add removed modules."""
    source = scratch / "source"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(out), str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = out.glob("edgeward-*.whl")
    return wheel


def fresh_venv(folder: Path, wheel: Path) -> Path:
    """A venv holding only the wheel; the light third-party dependencies are borrowed from
    this interpreter's site-packages through a .pth, which adds a folder to sys.path but
    runs none of that folder's own .pth files (so the editable install's finder stays out)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    python = folder / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    "--no-index", str(wheel)], check=True, capture_output=True, timeout=300)
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    borrowed = Path(sysconfig.get_paths()["purelib"])
    assert not (borrowed / "toolkit").exists()  # the checkout is installed editable, not copied there
    (site / "zz-borrowed-dependencies.pth").write_text(f"{borrowed}\n")
    return python


def test_the_wheel_ships_profiles_prices_and_the_demo_recipe(tmp_path):
    wheel = build_wheel(tmp_path / "dist", tmp_path)
    python = fresh_venv(tmp_path / "venv", wheel)
    elsewhere = tmp_path / "elsewhere"  # outside the checkout, as a user's folder would be
    elsewhere.mkdir()
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PYTHON", "EDGEWARD_", "VIRTUAL_ENV"))}
    env.update(PYTHONNOUSERSITE="1", EDGEWARD_CONFIG=str(tmp_path / "config"), EDGEWARD_CACHE=str(tmp_path / "cache"))

    def run(*argv: str) -> subprocess.CompletedProcess:
        result = subprocess.run(argv, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        return result

    where = json.loads(run(str(python), "-c", WHERE_TOOLKIT_IS).stdout)
    site = str(tmp_path / "venv" / "lib")
    assert len(where["paths"]) == 1 and where["paths"][0].startswith(site), where
    assert where["finders"] == []
    located = run(str(python), "-c", "import toolkit; from toolkit.devices.profiles import builtin_dir; "
                                     "print(toolkit.__file__); print(builtin_dir())").stdout.split()
    assert all(path.startswith(site) for path in located), located

    edgeward = str(tmp_path / "venv" / "bin" / "edgeward")
    shipped = sorted(path.stem for path in (ROOT / "device_profiles").glob("*.yaml"))
    assert len(shipped) >= 10
    table = run(edgeward, "devices", "list").stdout
    assert [line.split()[0] for line in table.splitlines() if line.strip()] == shipped
    devices = json.loads(run(edgeward, "--json", "devices", "list").stdout)["devices"]
    assert [device["name"] for device in devices] == shipped
    assert all(device["file"].startswith(site) for device in devices)

    prices = run(edgeward, "--json", "breakeven", "--prices").stdout
    catalogue = {entry["name"]: entry for entry in json.loads(prices)}
    assert set(catalogue) == {path.stem for path in (ROOT / "device_profiles" / "cloud").glob("*.yaml")}
    assert all(entry["origin"] == "builtin" and entry["source"] for entry in catalogue.values())

    example = run(edgeward, "breakeven", "--example").stdout
    assert "traffic:" in example and "active_users:" in example
    recipe = run(edgeward, "demo", "--show-recipe").stdout
    assert recipe == (ROOT / "toolkit" / "pipeline" / "demo.yaml").read_text()
