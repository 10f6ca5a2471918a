"""Device profiles: one YAML file per device, a typed model, every figure with its source.

A profile's name is its file name (`raspberry-pi-5.yaml` → `--device raspberry-pi-5`).
Profiles are looked up, first match wins, in: the `profiles_dir` argument (`--profiles DIR`),
the folders in $EDGEWARD_PROFILES (os.pathsep-separated), `config_dir()/profiles`, and
the catalogue shipped in `device_profiles/` (its `cloud/` subfolder holds cloud prices,
not devices). A profile may say `extends: OTHER` to start from another profile.

A *figure* is a mapping `{value: ..., source: "where it was read"}` or
`{value: ..., estimate: "how it was worked out"}` (or `unknown: why` when no figure
exists): nothing is stated without one of them. The fields are the pydantic model
`DeviceSpec` (toolkit.devices.profile_schema): unknown keys are refused, and every problem
is reported together in one line that names the file.

Memory and storage, for "does the model fit" checks (None when the profile has no figure):
`profile.ram_bytes` (from `ram_mb`, MiB), `profile.storage_bytes` (from `flash_mb`, MiB,
on microcontrollers, else `storage_gb`, decimal GB) and `profile.storage_is_flash`.
`profile.emulated` says an emulator stands in for the device (its timings mean nothing).
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.devices.profile_schema import DeviceSpec, NumberFigure, check_profile, parse_profile
from toolkit.errors import BadInput

__all__ = ["Profile", "DeviceSpec", "get_profile", "list_profiles", "load_profile", "profile_files", "check_profile",
           "parse_profile"]

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
SHOWN_PROBLEMS = 6  # a longer list ends with "and N more"


@dataclass
class Profile:
    name: str
    path: Path
    data: dict = field(repr=False)  # the fields as written (after extends and `auto`), for show and reports
    spec: DeviceSpec = field(repr=False)  # the same, typed

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def description(self) -> str:
        return self.spec.description

    @property
    def transport(self) -> dict:
        return self.data["transport"]

    @property
    def ram_bytes(self) -> int | None:
        """RAM from `ram_mb` (MiB), or None when the profile does not know it."""
        return _bytes(self.spec.ram_mb, 2**20)

    @property
    def storage_bytes(self) -> int | None:
        """Where the model file is kept: flash (`flash_mb`, MiB) on a microcontroller, else
        storage (`storage_gb`, decimal GB); None when the profile does not know it."""
        if self.spec.flash_mb is not None:
            return _bytes(self.spec.flash_mb, 2**20)
        return _bytes(self.spec.storage_gb, 10**9)

    @property
    def storage_is_flash(self) -> bool:
        return self.spec.flash_mb is not None

    @property
    def emulated(self) -> bool:
        """An emulator stands in for this device: its numerics count, its timings do not."""
        return self.spec.emulated

    @property
    def cpu_family(self) -> str | None:
        """The CPU model an emulated board stands for (QEMU_CPU: cortex-a76 ...), else None."""
        return self.spec.cpu_family

    def value(self, dotted: str, default=None):
        """The value of a figure (`power_w.typical`), or `default` when the profile omits it."""
        node = self.data
        for key in dotted.split("."):
            if not isinstance(node, dict) or key not in node:
                return default
            node = node[key]
        return node.get("value", default) if isinstance(node, dict) else node

    def figure(self, dotted: str) -> dict | None:
        node = self.data
        for key in dotted.split("."):
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return node if isinstance(node, dict) and "value" in node else None

    def accelerators(self) -> list[dict]:
        return list(self.data.get("accelerators") or [])

    def power_w(self) -> dict:
        """idle/typical/max with value and source or estimate, as break-even needs them."""
        return {key: self.figure(f"power_w.{key}") for key in ("idle", "typical", "max")}

    def as_dict(self) -> dict:
        return {"name": self.name, "file": str(self.path), **self.data}


def _bytes(figure: NumberFigure | None, unit: int) -> int | None:
    return None if figure is None or figure.value is None else int(figure.value * unit)


# ------------------------------------------------------------------ where profiles live


def builtin_dir() -> Path:
    from toolkit.paths import builtin_profiles_dir

    return builtin_profiles_dir()


def search_dirs(profiles_dir: str | os.PathLike | None = None) -> list[Path]:
    from toolkit.paths import config_dir

    dirs: list[Path] = []
    if profiles_dir:
        folder = Path(profiles_dir)
        if not folder.is_dir():
            raise BadInput(f"--profiles {folder}: not a folder")
        dirs.append(folder)
    for entry in filter(None, os.environ.get("EDGEWARD_PROFILES", "").split(os.pathsep)):
        dirs.append(Path(entry))
    dirs += [config_dir() / "profiles", builtin_dir()]
    return dirs


def profile_files(profiles_dir=None) -> dict[str, Path]:
    """name -> file, first folder wins (so a user profile can replace a builtin one)."""
    found: dict[str, Path] = {}
    for folder in search_dirs(profiles_dir):
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.y*ml")):
            if path.suffix in (".yaml", ".yml") and path.is_file():
                found.setdefault(path.stem, path)
    return found


def get_profile(name: str, profiles_dir=None) -> Profile:
    """The validated profile `name`; an unknown name lists the closest known ones."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise BadInput(f"device name {name!r} is not valid (letters, digits, '.', '_' and '-')")
    files = profile_files(profiles_dir)
    if name not in files:
        close = difflib.get_close_matches(name, list(files), n=4, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise BadInput(f"unknown device {name!r}{hint} (edgeward devices list shows them all)")
    return load_profile(files[name], files)


def list_profiles(profiles_dir=None) -> tuple[list[Profile], list[str]]:
    """Every valid profile, and one line per profile that failed validation."""
    files = profile_files(profiles_dir)
    profiles, problems = [], []
    for name in sorted(files):
        try:
            profiles.append(load_profile(files[name], files))
        except BadInput as error:
            problems.append(str(error))
    return profiles, problems


# ------------------------------------------------------------------ loading and checking


def load_profile(path: Path, files: dict[str, Path] | None = None, _seen: tuple = ()) -> Profile:
    data = _read_yaml(path)
    base_name = data.pop("extends", None)
    if base_name is not None:
        files = files if files is not None else profile_files()
        if base_name in _seen or base_name == path.stem and path == files.get(base_name):
            raise BadInput(f"profile {path}: 'extends: {base_name}' is circular")
        if base_name not in files:
            raise BadInput(f"profile {path}: 'extends: {base_name}' names no known profile")
        base_path = files[base_name]
        if base_path == path:
            raise BadInput(f"profile {path}: 'extends: {base_name}' names itself")
        base = _read_yaml(base_path)
        base.pop("extends", None)
        data = _merge(base, data)
    _resolve_auto(data)
    spec, problems = parse_profile(data)
    if problems:
        shown = "; ".join(problems[:SHOWN_PROBLEMS])
        if len(problems) > SHOWN_PROBLEMS:
            shown += f"; and {len(problems) - SHOWN_PROBLEMS} more"
        raise BadInput(f"profile {path}: {shown}")
    return Profile(path.stem, path, data, spec)


def _read_yaml(path: Path) -> dict:
    from toolkit.safety.yaml import load_yaml

    try:
        data = load_yaml(path)  # safe_load with size and alias limits; errors are one line
    except OSError as error:
        raise BadInput(f"profile {path}: cannot read it: {error.strerror}") from None
    except BadInput as error:
        raise BadInput(f"profile {error}") from None
    if not isinstance(data, dict):
        raise BadInput(f"profile {path}: expected a mapping of fields, found {type(data).__name__}")
    return data


def _merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        # a transport is replaced whole: mixing an ssh host into a local transport makes no sense
        if key != "transport" and isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _figures(node, prefix: str = ""):
    """(dotted path, mapping) for every mapping that holds a `value` (outside the transport)."""
    if isinstance(node, dict):
        if "value" in node:
            yield prefix, node
            return
        for key, child in node.items():
            if key != "transport":
                yield from _figures(child, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _figures(child, f"{prefix}[{index}]")


def _resolve_auto(data: dict) -> None:
    """Fill `value: auto` figures from this host (only meaningful for the localhost profile)."""
    facts = None
    for _, node in _figures(data):
        if not isinstance(node, dict) or node.get("value") != "auto":
            continue
        facts = facts or _host_facts()
        key = node.get("auto")
        if not isinstance(key, str) or key not in facts:
            node["value"] = None
            continue
        node["value"] = facts[key]
        how = facts["_from"].get(key, "probe")
        if node.get("estimate"):
            node["estimate"] = f"{node['estimate']} ({how})"
        else:
            node.setdefault("source", f"read on this host at run time ({how})")


def _host_facts() -> dict:
    import platform
    import shutil

    facts: dict = {"_from": {}}
    facts["cpu_cores"] = os.cpu_count() or 1
    facts["_from"]["cpu_cores"] = "os.cpu_count()"
    cpuinfo = ""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        pass
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                 platform.processor() or platform.machine())
    facts["cpu"] = f"{facts['cpu_cores']}x {model}"
    facts["_from"]["cpu"] = "/proc/cpuinfo"
    try:
        facts["ram_mb"] = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
        facts["_from"]["ram_mb"] = "sysconf"
    except (ValueError, OSError, AttributeError):
        pass
    facts["storage_gb"] = round(shutil.disk_usage(Path.home()).total / 1e9, 1)
    facts["_from"]["storage_gb"] = "disk_usage(home)"
    flags = next((line for line in cpuinfo.splitlines() if line.startswith("flags")), "")
    mhz = [float(line.split(":")[1]) for line in cpuinfo.splitlines() if line.startswith("cpu MHz")]
    ghz = (max(mhz) / 1000) if mhz else 2.5
    # FLOP per cycle per core: 2 FMA pipes x 8 fp32 lanes x 2 with AVX2+FMA, else 2 x 4 x 2 (SSE/NEON)
    per_cycle = 32 if (" avx2" in flags and " fma" in flags) else 16
    facts["peak_fp32_gops"] = round(facts["cpu_cores"] * ghz * per_cycle, 1)
    facts["peak_int8_gops"] = round(facts["peak_fp32_gops"] * (4 if " avx512_vnni" in flags or " avx_vnni" in flags else 2), 1)
    facts["_from"]["peak_fp32_gops"] = f"{facts['cpu_cores']} cores x {ghz:.2f} GHz x {per_cycle} FLOP/cycle"
    facts["_from"]["peak_int8_gops"] = "fp32 peak x 4 with VNNI, else x 2"
    return facts
