"""Device profiles: one YAML file per device, validated, every figure with its source.

A profile's name is its file name (`raspberry-pi-5.yaml` → `--device raspberry-pi-5`).
Profiles are looked up, first match wins, in: the `profiles_dir` argument (`--profiles DIR`),
the folders in $EDGEWARD_PROFILES (os.pathsep-separated), `config_dir()/profiles`, and
the catalogue shipped in `device_profiles/` (its `cloud/` subfolder holds cloud prices,
not devices). A profile may say `extends: OTHER` to start from another profile.

A *figure* is a mapping `{value: ..., source: "where it was read"}` or
`{value: ..., estimate: "how it was worked out"}`: nothing is stated without one of the two.
Problems are collected and reported together in one line that names the file.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.errors import BadInput

KINDS = ("phone", "car", "board", "mcu", "host")
TRANSPORTS = ("local", "ssh", "adb", "none")
PRECISIONS = ("fp32", "fp16", "bf16", "int8", "int4")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# figures every profile must state (dotted paths); numbers must be >= 0
REQUIRED_FIGURES = ("soc", "cpu", "ram_mb", "memory_bandwidth_gbps", "power_w.idle", "power_w.typical",
                    "power_w.max", "unit_price_usd")
NUMERIC_FIGURES = ("ram_mb", "storage_gb", "flash_mb", "memory_bandwidth_gbps", "power_w.idle", "power_w.typical",
                   "power_w.max", "unit_price_usd", "cpu_cores")


@dataclass
class Profile:
    name: str
    path: Path
    data: dict = field(repr=False)

    @property
    def kind(self) -> str:
        return self.data["kind"]

    @property
    def description(self) -> str:
        return self.data.get("description", "")

    @property
    def transport(self) -> dict:
        return self.data["transport"]

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


# ------------------------------------------------------------------ where profiles live


def builtin_dir() -> Path:
    from toolkit.paths import project_root

    return project_root() / "device_profiles"


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


# ------------------------------------------------------------------ loading and validation


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
    problems = validate(data)
    if problems:
        shown = "; ".join(problems[:6]) + (f"; and {len(problems) - 6} more" if len(problems) > 6 else "")
        raise BadInput(f"profile {path}: {shown}")
    return Profile(path.stem, path, data)


def _read_yaml(path: Path) -> dict:
    from toolkit.safety import load_yaml

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


def validate(data: dict) -> list[str]:
    """Every problem with a profile's fields, as short phrases naming the field."""
    problems: list[str] = []
    kind = data.get("kind")
    if kind not in KINDS:
        problems.append(f"'kind' must be one of {', '.join(KINDS)} (found {kind!r})" if kind else "missing field 'kind'")
    for dotted in REQUIRED_FIGURES:
        if _lookup(data, dotted) is None:
            problems.append(f"missing field '{dotted}'")
    if _lookup(data, "storage_gb") is None and _lookup(data, "flash_mb") is None:
        problems.append("missing field 'storage_gb' (or 'flash_mb' for a microcontroller)")
    for path, node in _figures(data):
        problems += _check_figure(path, node)
    for dotted in NUMERIC_FIGURES:
        node = _lookup(data, dotted)
        if isinstance(node, dict) and node.get("value") is not None and not _is_number(node["value"]):
            problems.append(f"'{dotted}' must be a number (found {node['value']!r})")
    problems += _check_accelerators(data.get("accelerators"))
    for key in ("runtimes", "delegates"):
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            problems.append(f"'{key}' must be a list of names")
    if "runtimes" not in data:
        problems.append("missing field 'runtimes'")
    problems += _check_transport(data.get("transport"))
    return problems


def _lookup(data: dict, dotted: str):
    node = data
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _figures(node, prefix: str = ""):
    """(dotted path, mapping) for every mapping that holds a `value`."""
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


def _check_figure(path: str, node: dict) -> list[str]:
    problems = []
    stated = any(isinstance(node.get(key), str) and node[key].strip() for key in ("source", "estimate", "unknown"))
    if not stated:
        problems.append(f"'{path}' needs a 'source:' or an 'estimate:' saying how it was worked out")
    value = node.get("value")
    unknown = node.get("unknown")
    if value is None and not (isinstance(unknown, str) and unknown.strip()):
        problems.append(f"'{path}' has no value (write 'unknown: why' when no figure exists)")
    elif _is_number(value) and value < 0:
        problems.append(f"'{path}' is negative ({value})")
    return problems


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_accelerators(accelerators) -> list[str]:
    if not isinstance(accelerators, list) or not accelerators:
        return ["'accelerators' must list at least the CPU with its peak throughput"]
    problems = []
    for index, item in enumerate(accelerators):
        where = f"accelerators[{index}]"
        if not isinstance(item, dict) or not item.get("name"):
            problems.append(f"'{where}' needs a 'name'")
            continue
        peak = item.get("peak_gops")
        if not isinstance(peak, dict) or not peak:
            problems.append(f"'{where}.peak_gops' must give the peak per precision ({', '.join(PRECISIONS)})")
            continue
        for precision, node in peak.items():
            if precision not in PRECISIONS:
                problems.append(f"'{where}.peak_gops.{precision}' is not a precision ({', '.join(PRECISIONS)})")
            elif not isinstance(node, dict) or "value" not in node:
                problems.append(f"'{where}.peak_gops.{precision}' must be a figure {{value, source|estimate}}")
            elif node["value"] is not None and not _is_number(node["value"]):
                problems.append(f"'{where}.peak_gops.{precision}' must be a number")
    return problems


def _check_transport(transport) -> list[str]:
    if not isinstance(transport, dict):
        return ["missing field 'transport' (type: local, ssh, adb or none)"]
    kind = transport.get("type")
    if kind not in TRANSPORTS:
        return [f"'transport.type' must be one of {', '.join(TRANSPORTS)} (found {kind!r})"]
    problems = []
    if kind == "ssh":
        host = transport.get("host")
        if not isinstance(host, str) or not host:
            problems.append("missing field 'transport.host'")
        elif host.startswith("-"):
            problems.append(f"'transport.host' {host!r} begins with '-' (it would be read as an ssh option)")
        user = transport.get("user")
        if user is not None and (not isinstance(user, str) or user.startswith("-") or not user):
            problems.append(f"'transport.user' {user!r} is not a user name")
    for key in ("port", "connect_timeout"):
        value = transport.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
            problems.append(f"'transport.{key}' must be a positive whole number (found {value!r})")
    return problems


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
