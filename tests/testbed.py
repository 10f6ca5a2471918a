"""The ssh test bed as the tests see it: its state folder, whether its sshd is alive and which boards
it has written profiles for (scripts/ssh-testbed start, scripts/arm64-testbed start)."""

from __future__ import annotations

import os
import re
from pathlib import Path

STATE = Path(os.environ.get("EDGEWARD_TESTBED_DIR", "/tmp/edgeward-ssh-testbed"))
PROFILES = STATE / "profiles"


def sshd_running(state: Path = STATE) -> bool:
    """The test bed's sshd (its pid file in `state`) is alive."""
    try:
        os.kill(int((state / "sshd.pid").read_text()), 0)
    except (OSError, ValueError):
        return False
    return True


def boards_started(*names: str, state: Path = STATE) -> bool:
    """The sshd is alive and every named board's profile is written."""
    return sshd_running(state) and all((state / "profiles" / f"{name}.yaml").is_file() for name in names)


def board_python(name: str = "arm64-cortex-a76") -> str | None:
    """The Python a started board's profile names, where that file exists; else None."""
    if not sshd_running():
        return None
    try:
        text = (PROFILES / f"{name}.yaml").read_text()
    except OSError:
        return None
    found = re.search(r"^\s*python:\s*(\S+)", text, re.MULTILINE)
    return found.group(1) if found and Path(found.group(1)).is_file() else None
