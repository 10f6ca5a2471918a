"""`edgeward devices list | show NAME | check NAME`."""

from __future__ import annotations

import click

PROFILES_OPTION = click.option("--profiles", "profiles_dir", type=click.Path(file_okay=False),
                               help="A folder of extra device profiles (YAML), searched first.")


@click.group(epilog="""\b
Examples:
  edgeward devices list
  edgeward devices show raspberry-pi-5
  edgeward devices check ssh-testbed
  edgeward devices list --profiles ./my-devices --json

\b
Profiles: device_profiles/*.yaml (shipped), ~/.config/edgeward/profiles (yours), --profiles DIR.
A profile's name is its file name. Every figure has a source or says estimate.
ADB phones: the adb path is tested on recorded benchmark_model output only (no phone here).""")
def command() -> None:
    """List, show and check device profiles."""


@command.command("list", epilog="""\b
Examples:
  edgeward devices list
  edgeward devices list --profiles ./my-devices
  edgeward --json devices list""")
@PROFILES_OPTION
def list_command(profiles_dir) -> None:
    """List the known devices (invalid profiles are reported on stderr)."""
    from toolkit.console import emit, warn
    from toolkit.devices import list_profiles

    profiles, problems = list_profiles(profiles_dir)
    for problem in problems:
        warn(problem)
    rows = [{"name": p.name, "kind": p.kind, "soc": p.value("soc"), "ram_mb": p.value("ram_mb"),
             "transport": p.transport["type"], "description": p.description, "file": str(p.path)} for p in profiles]
    width = max((len(r["name"]) for r in rows), default=4)
    text = "\n".join(f"{r['name']:<{width}}  {r['kind']:<6}  {r['transport']:<6}  {r['description']}" for r in rows)
    emit({"devices": rows, "invalid": problems}, text)


@command.command("show", epilog="""\b
Examples:
  edgeward devices show raspberry-pi-5
  edgeward --json devices show pixel-8""")
@click.argument("name")
@PROFILES_OPTION
def show_command(name, profiles_dir) -> None:
    """Show one profile, every figure with its source (or `estimate`)."""
    import yaml

    from toolkit.console import emit
    from toolkit.devices import get_profile

    profile = get_profile(name, profiles_dir)
    text = f"# {profile.name}: {profile.path}\n" + yaml.safe_dump(profile.data, sort_keys=False, width=110)
    emit(profile.as_dict(), text)


@command.command("check", epilog="""\b
Examples:
  edgeward devices check localhost
  edgeward devices check ssh-testbed
  edgeward --json devices check raspberry-pi-5""")
@click.argument("name")
@PROFILES_OPTION
def check_command(name, profiles_dir) -> None:
    """Connect and report OS, CPU, Python, runtimes, free RAM and disk, governor and
    temperature, and what is missing. Exit 4 when the device cannot run any model."""
    from toolkit.console import emit
    from toolkit.devices import check_device
    from toolkit.errors import DeviceError

    report = check_device(name, profiles_dir)
    lines = [f"{key:<18} {_plain(value)}" for key, value in report.items()
             if key not in ("runtimes", "missing", "facts")]
    if report.get("runtimes"):
        lines.append("runtimes")
    for runtime, version in (report.get("runtimes") or {}).items():
        lines.append(f"  {runtime:<16} {version or 'not installed'}")
    for line in report.get("facts", []):
        lines.append(f"  {line}")
    lines += [f"missing: {item}" for item in report["missing"]] or ["missing: nothing"]
    emit(report, "\n".join(lines))
    if not report["ok"]:
        raise DeviceError(f"{name} cannot run models yet: missing {'; '.join(report['missing'])}")


def _plain(value) -> str:
    """A report value for people: `unknown` for None, `onnx yes, tflite no` for a dict, `yes`/`no`."""
    if value is None:
        return "unknown"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ", ".join(f"{key} {_plain(item)}" for key, item in value.items()) or "none"
    if isinstance(value, list | tuple):
        return ", ".join(_plain(item) for item in value) or "none"
    return str(value)
