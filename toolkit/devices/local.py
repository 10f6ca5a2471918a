"""The `local` transport: the runner in a separate process on this host.

It plays the device for `localhost` and shows what the remote path costs: the same
runner, the same JSON, only without a network in between.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from toolkit.devices.transport import Completed, Transport, stream


class LocalTransport(Transport):
    name = "local process"

    def __init__(self, transport: dict):
        self.python = transport.get("python") or sys.executable

    def _open(self) -> str:
        return tempfile.mkdtemp(prefix="edgeward-local-")

    def _close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    def push(self, local: Path, name: str) -> str:
        target = Path(self.workdir) / name
        temporary = target.with_name(f".{name}.tmp")
        shutil.copyfile(local, temporary)
        temporary.replace(target)
        return str(target)

    def pull(self, name: str, local: Path) -> Path:
        shutil.copyfile(Path(self.workdir) / name, local)
        return local

    def command(self, argv: list[str]) -> list[str]:
        return [self.python, *argv]

    def run(self, argv, *, timeout, on_line=None) -> Completed:
        return stream(self.command(argv), timeout=timeout, on_line=on_line, what=self.name, cwd=self.workdir)

    def probe(self) -> dict:
        return {"transport": "local", "python": self.python}
