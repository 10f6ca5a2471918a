"""Run untrusted model work in a child process with a time and a memory limit.

No upstream parser promises to survive a hostile file: onnxruntime and the TFLite
interpreter have segfaulted whole processes on crafted models. So the `edgeward`
console script runs every model-touching command in a child Python process and
supervises it: a native crash (SIGSEGV, SIGABRT...) becomes one line and exit 2, a
time-out one line and exit 2 (4 for device commands), memory beyond the limit one line
and exit 2, and the CLI process itself never dies with the child.

Limits come from the environment:
  EDGEWARD_TIME_LIMIT      seconds of wall time (default 3600; 0 = none)
  EDGEWARD_MEMORY_LIMIT_MB resident memory of the child and its own children
                           (default 75% of physical memory; 0 = none)

The memory limit is enforced two ways. A watchdog in the parent sums the resident set
of the child's process group four times a second and stops it past the limit.
RLIMIT_DATA, set in the child at twice the limit, is the hard backstop that turns one
enormous allocation (a crafted dimension) into a MemoryError before the kernel's
out-of-memory killer picks a victim. RLIMIT_AS is not used: torch, XLA and jax reserve
gigabytes of address space they never touch, so an address-space limit breaks them.

This module imports only the standard library at import time (psutil is imported by the
memory functions that use it): `edgeward --help` stays instant.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# Commands that load, convert, quantize or run a model: they run in the child.
ISOLATED_COMMANDS = frozenset({"export", "quantize", "validate", "bench", "distill", "run", "demo", "plan"})
# A time-out in these is a device fault (exit 4), not bad input.
DEVICE_COMMANDS = frozenset({"bench"})
CRASH_SIGNALS = frozenset(
    int(s) for s in (signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT,
                     signal.SIGTRAP, signal.SIGSYS)
)
CHILD_ENV = "EDGEWARD_CHILD"
DEFAULT_TIME_LIMIT_S = 3600.0
GRACE_S = 5.0
POLL_S = 0.25
_NO_HELP_FLAGS = {"-h", "--help", "--version"}
_GLOBAL_FLAGS = {"--json", "--debug", "-v", "--verbose", "-vv"}

logger = logging.getLogger(__name__)


@dataclass
class Limits:
    """Wall time in seconds and resident memory in MB; None means no limit."""

    time_s: float | None = DEFAULT_TIME_LIMIT_S
    memory_mb: int | None = None

    @classmethod
    def from_env(cls) -> Limits:
        time_s = _env_number("EDGEWARD_TIME_LIMIT", DEFAULT_TIME_LIMIT_S)
        memory_mb = _env_number("EDGEWARD_MEMORY_LIMIT_MB", default_memory_mb())
        return cls(time_s=time_s or None, memory_mb=int(memory_mb) or None)


def _env_number(name: str, default: float) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        logger.warning("%s=%r is not a number; using %g", name, text, default)
        return default
    return max(value, 0.0)


def default_memory_mb() -> int:
    """75% of physical memory, at least 2 GB (the stack itself needs about 0.7 GB)."""
    import psutil

    return max(2048, psutil.virtual_memory().total * 3 // 4 // 2**20)


@dataclass
class Outcome:
    """How a supervised child ended. `message` is the one line to show, empty when it exited."""

    returncode: int
    signal: int | None = None
    timed_out: bool = False
    memory_exceeded: bool = False
    peak_rss_mb: float = 0.0
    seconds: float = 0.0
    message: str = ""
    exit_code: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def crashed(self) -> bool:
        return self.signal in CRASH_SIGNALS and not (self.timed_out or self.memory_exceeded)


def signal_text(number: int) -> str:
    try:
        return f"signal {number} ({signal.Signals(number).name})"
    except ValueError:
        return f"signal {number}"


# ---------------------------------------------------------------- the parent side


def command_of(argv: list[str]) -> str | None:
    """The command name in an edgeward argv (global flags may come first)."""
    for arg in argv:
        if arg in _GLOBAL_FLAGS:
            continue
        return None if arg.startswith("-") else arg
    return None


def should_isolate(argv: list[str]) -> bool:
    if os.environ.get(CHILD_ENV) == "1":
        return False  # already inside the child: never nest
    options = argv[: argv.index("--")] if "--" in argv else argv
    if any(arg in _NO_HELP_FLAGS for arg in options):
        return False  # help and version are instant and touch no model
    return command_of(argv) in ISOLATED_COMMANDS


def child_env(extra: dict | None = None) -> dict:
    """The child's environment: ours, marked as the child, with this package importable."""
    env = dict(os.environ)
    env[CHILD_ENV] = "1"
    env["EDGEWARD_PARENT_PID"] = str(os.getpid())
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env.update(extra or {})
    return env


def python_argv(code: str, *args: str) -> list[str]:
    # -P: the current folder is not put on sys.path, so a stray numpy.py or toolkit/
    # in the user's (download) folder cannot be imported in place of the real one.
    return [sys.executable, "-P", "-c", code, *args]


def spawn(argv: list[str], *, env: dict | None = None, **popen_kwargs) -> subprocess.Popen:
    """Start a child in its own process group (so a time-out stops all it started)."""
    if "stdin" not in popen_kwargs:
        # A background process group that reads the terminal would stop (SIGTTIN): give
        # it no terminal to read. Pipes and files are passed through as they are.
        popen_kwargs["stdin"] = subprocess.DEVNULL if _stdin_is_terminal() else None
    return subprocess.Popen(argv, env=env or child_env(), process_group=0, **popen_kwargs)


def _stdin_is_terminal() -> bool:
    try:
        return os.isatty(sys.stdin.fileno())
    except (AttributeError, ValueError, OSError):
        return False


def group_rss_mb(pgid: int) -> float:
    """Resident memory of every process in a process group, in MB (psutil: Linux, macOS, BSD).

    The whole group, not the leader's descendants: a grandchild orphaned by a dead parent
    stays in the group (and is stopped with it) but leaves the tree.
    """
    import psutil

    total = 0
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == pgid:
                total += process.memory_info().rss
        except (psutil.Error, OSError):
            continue  # gone, a zombie, or not ours to read
    return total / 2**20


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def supervise(proc: subprocess.Popen, limits: Limits, *, label: str = "the command",
              timeout_exit: int = 2, forward_signals: bool = True) -> Outcome:
    """Wait for a child under the limits, forwarding SIGINT/SIGTERM/SIGHUP to its group."""
    start = time.monotonic()
    deadline = start + limits.time_s if limits.time_s else None
    received: list[int] = []
    previous = {}

    def forward(signum, _frame):
        received.append(signum)
        _killpg(proc.pid, signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)

    if forward_signals:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            with contextlib.suppress(ValueError):  # not the main thread
                previous[sig] = signal.signal(sig, forward)
    outcome = Outcome(returncode=0)
    stopped_at = None
    try:
        while True:
            try:
                proc.wait(timeout=POLL_S)
                break
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if stopped_at is not None:
                if now - stopped_at > GRACE_S:
                    _killpg(proc.pid, signal.SIGKILL)
                continue
            if limits.memory_mb:
                rss = group_rss_mb(proc.pid)
                outcome.peak_rss_mb = max(outcome.peak_rss_mb, rss)
                if rss > limits.memory_mb:
                    outcome.memory_exceeded = True
                    _killpg(proc.pid, signal.SIGKILL)  # memory is running out: no grace
                    stopped_at = now
                    continue
            if deadline and now > deadline:
                outcome.timed_out = True
                _killpg(proc.pid, signal.SIGTERM)
                stopped_at = now
            if received and stopped_at is None and len(received) > 1:
                stopped_at = now  # a second Ctrl-C: stop waiting politely
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _killpg(proc.pid, signal.SIGKILL)  # anything the child left behind in its group
    outcome.seconds = time.monotonic() - start
    code = proc.returncode
    outcome.returncode = code
    outcome.signal = -code if code < 0 else None
    _describe(outcome, limits, label, timeout_exit, interrupted=bool(received))
    return outcome


def _describe(outcome: Outcome, limits: Limits, label: str, timeout_exit: int, interrupted: bool) -> None:
    code = outcome.returncode
    if outcome.timed_out:
        outcome.exit_code = timeout_exit
        outcome.message = (f"{label} timed out after {limits.time_s:g} s and was stopped "
                           f"(raise EDGEWARD_TIME_LIMIT to allow longer)")
    elif outcome.memory_exceeded:
        outcome.exit_code = 2
        outcome.message = (f"{label} used more than {limits.memory_mb} MB of memory and was stopped "
                           f"(raise EDGEWARD_MEMORY_LIMIT_MB to allow more)")
    elif code >= 0:
        outcome.exit_code = code
    elif interrupted:
        outcome.exit_code = 130
        outcome.message = "interrupted: nothing half-written was kept"
    elif -code in CRASH_SIGNALS:
        outcome.exit_code = 2
        outcome.message = f"the model crashed the runtime: {signal_text(-code)}"
    elif -code == signal.SIGKILL:
        outcome.exit_code = 2
        outcome.message = (f"{label} was killed ({signal_text(-code)}), most likely by the system "
                           f"for running out of memory")
    else:
        outcome.exit_code = 2
        outcome.message = f"{label} was stopped by {signal_text(-code)}"


def call_code(target: str) -> str:
    """Python source that calls `module:function()` (the code a spawned child runs)."""
    module_name, _, function_name = target.partition(":")
    if not (module_name and function_name.isidentifier()
            and all(part.isidentifier() for part in module_name.split("."))):
        raise ValueError(f"not a module:function target: {target!r}")
    return f"from {module_name} import {function_name}; {function_name}()"


def run_isolated(argv: list[str], limits: Limits | None = None, *, child_target: str,
                 say: Callable[[str], None] | None = None) -> int:
    """Run `edgeward ARGV` in a supervised child that calls `child_target` ("module:function",
    the CLI's child entry); returns the exit code to use. `say` shows the one line that tells
    why the child was stopped (the CLI's; else it is logged)."""
    limits = limits or Limits.from_env()
    command = command_of(argv) or "edgeward"
    device = command in DEVICE_COMMANDS and ("--device" in argv or any(a.startswith("--device=") for a in argv))
    proc = spawn(python_argv(call_code(child_target), *argv))
    outcome = supervise(proc, limits, label=f"edgeward {command}", timeout_exit=4 if device else 2)
    if outcome.message:
        sys.stdout.flush()
        (say or logger.error)(f"error: {outcome.message}")
    return outcome.exit_code


def entry(main: Callable[[list[str]], int], argv: list[str] | None = None, *, child_target: str,
          say: Callable[[str], None] | None = None) -> int:
    """The console script: isolate model-touching commands in a child that runs `child_target`,
    run the rest in-process with `main` (the CLI's; this module does not import the CLI)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if should_isolate(argv):
        return run_isolated(argv, child_target=child_target, say=say)
    return main(argv)


# ---------------------------------------------------------------- the child side


def apply_child_limits(memory_mb: int | None) -> None:
    """In the child: no core dumps, die with the parent, RLIMIT_DATA as a backstop."""
    import resource

    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if memory_mb:
        data = int(memory_mb) * 2 * 1024 * 1024
        soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
        if hard != resource.RLIM_INFINITY:
            data = min(data, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_DATA, (data, hard))
    _die_with_parent()


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    expected = os.environ.get("EDGEWARD_PARENT_PID")
    if expected and expected.isdigit() and os.getppid() != int(expected):
        os._exit(130)  # the parent died before prctl took effect


def _terminate_as_interrupt(_signum, _frame):
    raise KeyboardInterrupt  # so staged folders and temp files are cleaned up on the way out


def child_main(main: Callable[[list[str]], int], say: Callable[[str], None] | None = None) -> None:
    """Entry of the child: limits, then the ordinary in-process CLI (`main`, passed by the CLI)."""
    limits = Limits.from_env()
    apply_child_limits(limits.memory_mb)
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        _test_crash_hook()
        code = main(sys.argv[1:])
    except KeyboardInterrupt:
        code = 130
    except MemoryError:
        (say or logger.error)(f"error: out of memory: the model needs more than the {limits.memory_mb} MB limit "
                              f"(raise EDGEWARD_MEMORY_LIMIT_MB to allow more)")
        code = 2
    sys.stdout.flush()
    sys.exit(code)


def _test_crash_hook() -> None:
    """EDGEWARD_TEST_CRASH=SIGSEGV|SIGABRT makes the child crash itself (tests of the parent)."""
    name = os.environ.get("EDGEWARD_TEST_CRASH", "")
    if name in ("SIGSEGV", "SIGABRT", "SIGBUS"):
        os.kill(os.getpid(), getattr(signal, name))
    elif name == "NULL":
        import ctypes

        ctypes.string_at(0)
    elif name == "HANG":
        time.sleep(10**6)


# ---------------------------------------------------------------- a function in a child


def call_isolated(target: str, *args, limits: Limits | None = None, quiet: bool = False, **kwargs):
    """Run `module:function(*args, **kwargs)` in a supervised child and return its result.

    Arguments and the result travel as JSON. An EdgewardError raised in the child is
    raised again here with its class and message; a crash, time-out or memory overrun
    becomes BadInput with the one-line description.
    """
    from toolkit import errors

    limits = limits or Limits.from_env()
    with tempfile.TemporaryDirectory(prefix="edgeward-call-") as folder:
        request = Path(folder) / "request.json"
        response = Path(folder) / "response.json"
        request.write_text(json.dumps({"target": target, "args": args, "kwargs": kwargs}))
        output = subprocess.DEVNULL if quiet else None
        proc = spawn(python_argv(call_code("toolkit.safety.isolation:call_child"),
                                 str(request), str(response)), stdout=output, stderr=output)
        outcome = supervise(proc, limits, label=target, forward_signals=False)
        if outcome.message:
            raise errors.BadInput(outcome.message)
        if not response.is_file():  # an unexpected exception: the child printed its traceback
            raise RuntimeError(f"{target} failed in the child process (exit {outcome.returncode})")
        reply = json.loads(response.read_text())
    if "error" in reply:
        cls = getattr(errors, reply["error"]["class"], errors.EdgewardError)
        if not (isinstance(cls, type) and issubclass(cls, errors.EdgewardError)):
            cls = errors.EdgewardError
        raise cls(reply["error"]["message"])
    return reply["result"]


def call_child() -> None:
    """Entry of the child `call_isolated` starts: run the request file's function, write the reply."""
    import importlib

    limits = Limits.from_env()
    apply_child_limits(limits.memory_mb)
    request_path, response_path = sys.argv[1], sys.argv[2]
    request = json.loads(Path(request_path).read_text())
    module_name, _, function_name = request["target"].partition(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
        reply = {"result": function(*request["args"], **request["kwargs"])}
    except MemoryError:
        reply = {"error": {"class": "BadInput", "message": f"out of memory: more than the "
                           f"{limits.memory_mb} MB limit (raise EDGEWARD_MEMORY_LIMIT_MB to allow more)"}}
    except Exception as error:  # report it to the parent, which re-raises typed errors
        from toolkit.errors import EdgewardError

        if not isinstance(error, EdgewardError):
            raise
        reply = {"error": {"class": type(error).__name__, "message": str(error)}}
    Path(response_path).write_text(json.dumps(reply, default=str))
