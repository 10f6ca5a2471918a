"""Where output goes. Machine output (--json) on stdout, human text on stderr.

Without --json, a command's result is printed as text on stdout; progress and notes
always go to stderr so a pipe of stdout stays clean.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass


@dataclass
class Settings:
    json: bool = False
    verbose: int = 0
    debug: bool = False


settings = Settings()


def info(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def verbose(message: str, level: int = 1) -> None:
    if settings.verbose >= level:
        print(message, file=sys.stderr, flush=True)


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def emit(data, human: str | None = None) -> None:
    """Print a command's result: JSON on stdout with --json (the human text then goes to stderr),
    else `human` on stdout."""
    if settings.json:
        if human is not None:
            print(human.rstrip("\n"), file=sys.stderr, flush=True)
        sys.stdout.write(json.dumps(data, indent=2, default=_jsonable) + "\n")
        sys.stdout.flush()
    elif human is not None:
        sys.stdout.write(human.rstrip("\n") + "\n")
        sys.stdout.flush()


def _jsonable(value):
    import pathlib

    if isinstance(value, pathlib.PurePath):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(value)
    return str(value)


def progress(total: int | None = None, description: str = ""):
    """A rich progress bar on stderr (silent when stderr is not a terminal and not verbose)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        disable=not (console.is_terminal or settings.verbose),
        transient=False,
    )
