"""Executors: who runs a plan's steps, and in what order.

- serial (the default): one step after another in this process, in plan order.
- ray: every step that has to run becomes a Ray task as soon as the steps it reads are
  done, so independent steps (each export, quantize mode, validate, bench per device) run
  side by side. Each task runs its step in a supervised child (toolkit.safety.isolation:
  time and memory limits, a crash is one line) exactly as `edgeward run` runs the serial
  executor. A worker that dies mid-step is retried by Ray (`max_retries`).

Both reuse a step whose folder already records its key (Step.cached_summary), and a step
that finished writes its record at once, so a run on one executor reuses the steps of
another, and an interrupted run resumes. Ray is an optional extra, imported only here,
inside the functions that use it.

This module does not import toolkit.pipeline (which imports it): the pipeline passes the
function that runs one step in this process, and the "module:function" target that runs
one step in a child from its JSON description.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from toolkit.common.progress import ProgressCallback, ProgressEvent
from toolkit.errors import BadInput, missing_library

logger = logging.getLogger(__name__)

EXECUTORS = ("serial", "ray")
LOCAL_CLUSTER_CPUS = 2
TASK_RETRIES = 2  # Ray reruns a task whose worker died this many times


@dataclass
class StepRunner:
    """How to run one step: in this process (`in_process(step, done, force)`) or in a child
    from its JSON description (`child_target(step_payload, done, force)`)."""

    in_process: Callable
    child_target: str
    payload: Callable  # step -> JSON-able description that child_target rebuilds


@dataclass
class Tally:
    """Where a run stands, for the progress callback."""

    total: int
    done: int = 0
    running: int = 0
    failed: int = 0

    def event(self, status: str) -> ProgressEvent:
        return ProgressEvent("run", self.done + self.failed, self.total, "step",
                             f"{status} (running {self.running}, failed {self.failed})")


def run_steps(steps: list, runner: StepRunner, *, executor: str = "serial", force: bool = False,
              address: str | None = None, progress: ProgressCallback | None = None) -> tuple[dict, list[dict]]:
    """Run (or reuse) every step; returns each step's summary by name and one record per step, in plan order."""
    if executor == "serial":
        return run_serial(steps, runner, force=force, progress=progress)
    if executor == "ray":
        return run_ray(steps, runner, force=force, address=address, progress=progress)
    raise BadInput(f"unknown executor {executor!r}: choose one of {', '.join(EXECUTORS)}")


def run_serial(steps: list, runner: StepRunner, *, force: bool = False,
               progress: ProgressCallback | None = None) -> tuple[dict, list[dict]]:
    done: dict[str, dict] = {}
    records: list[dict] = []
    tally = Tally(len(steps))
    for index, step in enumerate(steps, 1):
        label = f"[{index}/{len(steps)}] {step.name}"
        cached = None if force else step.cached_summary()
        if cached is not None:
            done[step.name] = cached
            records.append(_record(step, "reused", 0.0))
            logger.info("%s: reused", label)
            tally.done += 1
            _report(progress, tally, f"{step.name}: reused")
            continue
        logger.info("%s ...", label)
        tally.running = 1
        _report(progress, tally, f"{step.name}: running")
        t0 = time.perf_counter()
        try:
            done[step.name] = runner.in_process(step, done, force)
        except BaseException:
            tally.running, tally.failed = 0, tally.failed + 1
            _report(progress, tally, f"{step.name}: failed")
            raise
        seconds = time.perf_counter() - t0
        records.append(_record(step, "ran", seconds))
        logger.info("%s: done in %.1fs", label, seconds)
        tally.running, tally.done = 0, tally.done + 1
        _report(progress, tally, f"{step.name}: ran")
    return done, records


def run_ray(steps: list, runner: StepRunner, *, force: bool = False, address: str | None = None,
            progress: ProgressCallback | None = None) -> tuple[dict, list[dict]]:
    """Submit each step as a Ray task once the steps it reads are done; wait for any, repeat."""
    ray = _import_ray()
    started_here = _connect(ray, address)
    try:
        task = ray.remote(max_retries=TASK_RETRIES, num_cpus=1)(run_step_task)
        return _schedule(ray, task, steps, runner, force=force, progress=progress)
    finally:
        if started_here:
            ray.shutdown()


def _schedule(ray, task, steps: list, runner: StepRunner, *, force: bool,
              progress: ProgressCallback | None) -> tuple[dict, list[dict]]:
    order = {step.name: index for index, step in enumerate(steps)}
    names = set(order)
    done: dict[str, dict] = {}
    records: dict[str, dict] = {}
    tally = Tally(len(steps))
    pending = list(steps)
    running: dict = {}  # ObjectRef -> (step, start time)
    failure: BaseException | None = None
    while pending or running:
        if failure is None:
            for step in [s for s in pending if all(n in done or n not in names for n in s.inputs)]:
                pending.remove(step)
                cached = None if force else step.cached_summary()
                if cached is not None:
                    done[step.name] = cached
                    records[step.name] = _record(step, "reused", 0.0)
                    logger.info("%s: reused", step.name)
                    tally.done += 1
                    _report(progress, tally, f"{step.name}: reused")
                    continue
                ref = task.remote(runner.child_target, runner.payload(step), dict(done), force)
                running[ref] = (step, time.perf_counter())
                tally.running += 1
                logger.info("%s: submitted", step.name)
                _report(progress, tally, f"{step.name}: running")
            if not running and pending:
                if any(all(n in done or n not in names for n in s.inputs) for s in pending):
                    continue  # a reused step made more ready
                raise RuntimeError(f"steps never became ready: {', '.join(s.name for s in pending)}")
        if not running:
            break
        ready, _ = ray.wait(list(running), num_returns=1)
        step, t0 = running.pop(ready[0])
        tally.running -= 1
        try:
            done[step.name] = _get(ray, ready[0])
        except BaseException as error:
            tally.failed += 1
            _report(progress, tally, f"{step.name}: failed")
            logger.info("%s: failed: %s", step.name, error)
            failure = failure or error  # let the running steps finish (their records are kept)
            continue
        seconds = time.perf_counter() - t0
        records[step.name] = _record(step, "ran", seconds)
        tally.done += 1
        logger.info("%s: done in %.1fs", step.name, seconds)
        _report(progress, tally, f"{step.name}: ran")
    if failure is not None:
        raise failure
    return done, [records[name] for name in sorted(records, key=order.__getitem__)]


def run_step_task(child_target: str, payload: dict, done: dict, force: bool) -> dict:
    """The Ray task: run one step in a supervised child (limits from the environment)."""
    from toolkit.safety.isolation import call_isolated

    _test_kill_worker_hook(payload["name"])
    return call_isolated(child_target, payload, done, force)


def _test_kill_worker_hook(step_name: str) -> None:
    """EDGEWARD_TEST_KILL_WORKER=STEP:MARKER kills this Ray worker one second into STEP, once
    (MARKER is created first): tests that Ray retries a task whose worker died mid-step."""
    import os

    spec = os.environ.get("EDGEWARD_TEST_KILL_WORKER", "")
    name, _, marker = spec.partition(":")
    if name != step_name or not marker or os.path.exists(marker):
        return
    import signal
    import threading

    with open(marker, "w") as file:
        file.write(str(os.getpid()))
    threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGKILL)).start()


def _get(ray, ref):
    """The task's result; an Edgeward error raised in the task is raised again as itself."""
    from toolkit.errors import EdgewardError

    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as error:
        cause = getattr(error, "cause", None)
        if isinstance(cause, EdgewardError):
            raise cause from None
        raise


def _connect(ray, address: str | None) -> bool:
    """Join the cluster at `address`, or start a local one on loopback; True when started here."""
    if ray.is_initialized():
        return False
    # No network at run time: Ray's usage statistics are never sent.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    options = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address:
        try:
            ray.init(address=address, **options)
        except (ConnectionError, ValueError, RuntimeError) as error:
            raise BadInput(f"cannot join the Ray cluster at {address}: {error}") from None
        return True  # we only disconnect: shutdown() of a joined cluster leaves it running
    # Ray 2.60 resolves a loopback node address to the host's own and binds its servers to
    # every interface; its token authentication (on by default) is what keeps others out.
    ray.init(num_cpus=LOCAL_CLUSTER_CPUS, **options)
    return True


def _import_ray():
    try:
        import ray
    except ImportError:
        raise missing_library("ray", extra="ray") from None
    return ray


def _record(step, status: str, seconds: float) -> dict:
    return {"step": step.name, "status": status, "seconds": round(seconds, 2), "folder": str(step.folder)}


def _report(progress: ProgressCallback | None, tally: Tally, status: str) -> None:
    if progress is not None:
        progress(tally.event(status))
