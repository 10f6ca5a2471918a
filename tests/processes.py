"""Process helpers shared by the device tests (Linux /proc).

A process the tests look at can end at any moment (a session closes, a timeout kills it),
so every helper here treats "it has already gone" as an answer, not an error.
"""

import os
from pathlib import Path


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def command_name(pid: int) -> str | None:
    """The process's command name (/proc/PID/comm), or None when it has gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def send_signal(pid: int, signal_number: int) -> bool:
    """Signal `pid`; False when it had already gone (cleanup must not fail for that)."""
    try:
        os.kill(pid, signal_number)
    except ProcessLookupError:
        return False
    return True
