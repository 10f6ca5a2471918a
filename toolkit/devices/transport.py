"""What every transport shares: the small surface (probe, push, run, pull) and the
streaming of a remote command's output with a size cap and a deadline.

A transport is used as a context manager: entering it makes a private work folder on
the device, leaving it removes that folder, whatever happened in between.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import DeviceError

OUTPUT_CAP = 10 * 2**20  # bytes of remote output accepted before the command is stopped


@dataclass
class Completed:
    returncode: int
    stdout: str
    stderr: str


class Transport:
    """Base class. Subclasses implement `_open`, `_close`, `push`, `pull` and `command`."""

    name = "transport"
    python = "python3"

    def __enter__(self):
        self.workdir = self._open()
        return self

    def __exit__(self, *exc):
        self._close()
        return False

    def _open(self) -> str:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def push(self, local: Path, name: str) -> str:
        """Copy `local` into the work folder as `name` (temp name, then renamed); returns the remote path."""
        raise NotImplementedError

    def pull(self, name: str, local: Path) -> Path:
        raise NotImplementedError

    def command(self, argv: list[str]) -> list[str]:
        """The local argv that runs `argv` on the device, inside the work folder."""
        raise NotImplementedError

    def run(self, argv: list[str], *, timeout: float, on_line: Callable[[str], None] | None = None) -> Completed:
        return stream(self.command(argv), timeout=timeout, on_line=on_line, what=self.name)

    def classify(self, completed: Completed) -> None:
        """Raise a DeviceError when the transport itself (not the command) failed."""


def stream(argv: list[str], *, timeout: float, on_line=None, what: str = "device", stdin=None, cwd=None) -> Completed:
    """Run argv, handing each stdout line to `on_line` as it arrives.

    Output beyond OUTPUT_CAP or a run past `timeout` stops the command (its whole process
    group) and raises DeviceError: a broken device must never hang the host or fill its memory.
    """
    try:
        process = subprocess.Popen(argv, stdin=stdin if stdin is not None else subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                                   cwd=cwd)
    except FileNotFoundError:
        raise DeviceError(f"{argv[0]} is not installed on this host (needed to reach the {what})") from None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ, "out")
    selector.register(process.stderr, selectors.EVENT_READ, "err")
    out, err, partial, total = bytearray(), bytearray(), b"", 0
    deadline = time.monotonic() + timeout
    try:
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                _stop(process)
                raise DeviceError(f"the {what} did not finish within {timeout:.0f} s; stopped it")
            for key, _ in selector.select(timeout=min(remaining, 1.0)):
                chunk = os.read(key.fileobj.fileno(), 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                total += len(chunk)
                if total > OUTPUT_CAP:
                    _stop(process)
                    raise DeviceError(f"the {what} sent more than {OUTPUT_CAP // 2**20} MB of output; stopped it")
                if key.data == "err":
                    err += chunk
                    continue
                out += chunk
                if on_line is not None:
                    lines = (partial + chunk).split(b"\n")
                    partial = lines.pop()
                    for line in lines:
                        on_line(line.decode("utf-8", "replace"))
        if partial and on_line is not None:
            on_line(partial.decode("utf-8", "replace"))
        process.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        _stop(process)
        raise DeviceError(f"the {what} did not finish within {timeout:.0f} s; stopped it") from None
    except BaseException:
        _stop(process)
        raise
    finally:
        selector.close()
        process.stdout.close()
        process.stderr.close()
    return Completed(process.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        process.kill()
    process.wait()


def runner_path() -> Path:
    return Path(__file__).with_name("runner.py")
