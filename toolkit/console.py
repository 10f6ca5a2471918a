"""Where output goes (the CLI layer only: `toolkit/cli.py` and `toolkit/commands/`).

Machine output (--json) on stdout, human text on stderr. Without --json, a command's
result is printed as text on stdout; progress and notes always go to stderr so a pipe
of stdout stays clean.

The library never prints: it logs on the `toolkit` logger, warns with `EdgewardWarning`
and reports progress to a callback. `configured(mode)` is how the CLI shows those for
one command: log records as plain lines on stderr (DEBUG only with -v), EdgewardWarning
as `warning: <message>`, and a progress bar (`ProgressDisplay`) where a command asks
for one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

from toolkit.common.jsonable import json_default
from toolkit.errors import EdgewardWarning


@dataclass(frozen=True)
class OutputMode:
    """What the user asked to see: set by the CLI for the length of one command."""

    json: bool = False
    verbose: int = 0
    debug: bool = False


_current = OutputMode()


def mode() -> OutputMode:
    """The output mode of the command that is running (the defaults outside one)."""
    return _current


def info(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def verbose(message: str, level: int = 1) -> None:
    if _current.verbose >= level:
        print(message, file=sys.stderr, flush=True)


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def stream(text: str) -> None:
    """Part of a result as it is produced (generated tokens), on stdout without a newline."""
    sys.stdout.write(text)
    sys.stdout.flush()


def emit(data, human: str | None = None) -> None:
    """Print a command's result: JSON on stdout with --json (the human text then goes to stderr),
    else `human` on stdout."""
    if _current.json:
        if human is not None:
            print(human.rstrip("\n"), file=sys.stderr, flush=True)
        sys.stdout.write(json.dumps(data, indent=2, default=json_default) + "\n")
        sys.stdout.flush()
    elif human is not None:
        sys.stdout.write(human.rstrip("\n") + "\n")
        sys.stdout.flush()


# ---------------------------------------------------------------- showing what the library reports


class _PlainFormatter(logging.Formatter):
    """A record as `console.info` prints a line: the message alone; warnings and errors prefixed."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


class _StderrHandler(logging.Handler):
    """Writes to whatever `sys.stderr` is when a record arrives (tests and redirections swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(self.format(record), file=sys.stderr, flush=True)
        except Exception:  # logging must never break the work it reports on
            self.handleError(record)


@contextlib.contextmanager
def configured(output: OutputMode) -> Iterator[None]:
    """Show the library's log records and EdgewardWarnings on stderr for one command, then restore."""
    global _current
    logger = logging.getLogger("toolkit")
    handler = _StderrHandler()
    handler.setFormatter(_PlainFormatter("%(message)s"))
    saved = (_current, logger.level, logger.propagate)
    _current = output
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if output.verbose else logging.INFO)
    logger.propagate = False  # the CLI decides what the user sees: no second copy through the root
    try:
        with warnings.catch_warnings():
            shown_before = warnings.showwarning

            def show(message, category, filename, lineno, file=None, line=None):
                if issubclass(category, EdgewardWarning):
                    warn(str(message))
                else:
                    shown_before(message, category, filename, lineno, file, line)

            warnings.showwarning = show
            warnings.simplefilter("always", EdgewardWarning)  # every time, as `warn` printed them
            yield
    finally:
        logger.removeHandler(handler)
        _current, level, logger.propagate = saved
        logger.setLevel(level)


class ProgressDisplay:
    """A progress callback for the library: rich bars on a terminal, else a line per event on stderr."""

    def __init__(self) -> None:
        self.bar = None
        self.tasks: dict[str, object] = {}

    def __enter__(self) -> ProgressDisplay:
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(),
                TextColumn("{task.fields[status]}"),
                console=Console(stderr=True),
                transient=False,
            )
            self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()

    def __call__(self, event) -> None:
        """Show one `toolkit.common.progress.ProgressEvent`."""
        if self.bar is None:
            info(str(event))
            return
        if event.task not in self.tasks:
            self.tasks[event.task] = self.bar.add_task(event.task, total=event.total, status="")
        self.bar.update(self.tasks[event.task], completed=event.completed, status=event.status)
