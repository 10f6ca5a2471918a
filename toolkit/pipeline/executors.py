"""Executors: who runs a plan's steps, and in what order.

- serial (the default): one step after another in this process, in plan order.
- ray: every step that has to run becomes a Ray task as soon as the steps it reads are
  done, so independent steps (each export, quantize mode, validate, bench per device) run
  side by side. Each task runs its step in a supervised child (toolkit.safety.isolation:
  time and memory limits, a crash is one line) exactly as `edgeward run` runs the serial
  executor. A worker that dies mid-step is retried by Ray (`max_retries`).

A device lab: a step that measures on an ssh or adb device (bench; validate with a device)
asks Ray for one unit of that device's custom resource, `device:<host>:<port>` or
`device:adb:<serial>`. The local cluster registers one unit per device the plan names, so
two steps never share a board while steps on different boards run side by side. A cluster
joined with `--address` must declare them on the node that reaches the boards, e.g.
`ray start --resources '{"device:10.0.0.7:22": 1}'`; a missing one is BadInput, never a
hang. A step whose device fails (DeviceError, exit 4) is recorded as failed with its exit
code; the other steps go on (the steps that read it are skipped), and the run then raises
StepsFailed (exit 4) carrying every step's record.

Both reuse a step whose folder already records its key (Step.cached_summary), and a step
that finished writes its record at once, so a run on one executor reuses the steps of
another, and an interrupted run resumes. Ray is an optional extra, imported only here,
inside the functions that use it.

This module does not import toolkit.pipeline (which imports it): the pipeline passes the
function that runs one step in this process, and the "module:function" target that runs
one step in a child from its JSON description.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from toolkit.common.progress import ProgressCallback, ProgressEvent
from toolkit.common.ray_errors import get_reraising_edgeward_errors
from toolkit.errors import BadInput, DeviceError, missing_library

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


class StepsFailed(DeviceError):
    """Steps whose device failed (exit 4); `records` holds every step's record, failed ones with
    their exit code and error, so the run's report can still be written."""

    def __init__(self, message: str, records: list[dict], done: dict):
        super().__init__(message)
        self.records = records
        self.done = done


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
        t0, started = time.perf_counter(), time.time()
        try:
            done[step.name] = runner.in_process(step, done, force)
        except BaseException:
            tally.running, tally.failed = 0, tally.failed + 1
            _report(progress, tally, f"{step.name}: failed")
            raise
        seconds = time.perf_counter() - t0
        records.append({**_record(step, "ran", seconds), "started": started, "finished": time.time()})
        logger.info("%s: done in %.1fs", label, seconds)
        tally.running, tally.done = 0, tally.done + 1
        _report(progress, tally, f"{step.name}: ran")
    return done, records


def run_ray(steps: list, runner: StepRunner, *, force: bool = False, address: str | None = None,
            progress: ProgressCallback | None = None) -> tuple[dict, list[dict]]:
    """Submit each step as a Ray task once the steps it reads are done; wait for any, repeat."""
    ray = _import_ray()
    devices = {step.name: resource for step in steps if (resource := device_resource(step)) is not None}
    started_here = _connect(ray, address, sorted(set(devices.values())))
    try:
        task = ray.remote(max_retries=TASK_RETRIES, num_cpus=1)(run_step_task)
        return _schedule(ray, task, steps, runner, force=force, progress=progress, devices=devices)
    finally:
        if started_here:
            ray.shutdown()


def device_resource(step) -> str | None:
    """The Ray resource naming the physical device a step measures on (None: runs on any node).

    ssh devices are told apart by host and port, adb devices by serial; the local transport
    is this host, already shared out by Ray's CPUs.
    """
    device = (step.options or {}).get("device")
    if not device or step.stage not in ("bench", "validate") or (step.options or {}).get("estimate"):
        return None
    from toolkit.devices import get_profile

    transport = get_profile(device).transport or {}
    kind = transport.get("type", "local")
    if kind == "ssh":
        return f"device:{transport.get('host')}:{transport.get('port', 22)}"
    if kind == "adb":
        return f"device:adb:{transport.get('serial') or 'default'}"
    return None


def _schedule(ray, task, steps: list, runner: StepRunner, *, force: bool,
              progress: ProgressCallback | None, devices: dict | None = None) -> tuple[dict, list[dict]]:
    order = {step.name: index for index, step in enumerate(steps)}
    names = set(order)
    done: dict[str, dict] = {}
    records: dict[str, dict] = {}
    tally = Tally(len(steps))
    pending = list(steps)
    running: dict = {}  # ObjectRef -> (step, start time)
    failure: BaseException | None = None
    devices = devices or {}
    lost: dict[str, str] = {}  # step -> why it did not run (its device failed, or a step it reads did)
    while pending or running:
        for step in [s for s in pending if any(n in lost for n in s.inputs)]:
            pending.remove(step)
            lost[step.name] = "skipped"
            records[step.name] = {**_record(step, "skipped", 0.0), "error": "a step it reads failed"}
            tally.failed += 1
            _report(progress, tally, f"{step.name}: skipped")
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
                options = {"resources": {devices[step.name]: 1}} if step.name in devices else {}
                ref = task.options(**options).remote(runner.child_target, runner.payload(step), dict(done), force)
                running[ref] = (step, time.perf_counter())
                tally.running += 1
                logger.info("%s: submitted", step.name)
                _report(progress, tally, f"{step.name}: running")
            if not running and pending:
                if any(all(n in done or n not in names for n in s.inputs) or any(n in lost for n in s.inputs)
                       for s in pending):
                    continue  # a reused step made more ready, or a lost one more to skip
                raise RuntimeError(f"steps never became ready: {', '.join(s.name for s in pending)}")
        if not running:
            break
        ready, _ = ray.wait(list(running), num_returns=1)
        step, t0 = running.pop(ready[0])
        tally.running -= 1
        try:
            done[step.name], started, finished = get_reraising_edgeward_errors(ray, ready[0])
        except DeviceError as error:  # this board dropped: the other steps go on
            tally.failed += 1
            lost[step.name] = str(error)
            records[step.name] = {**_record(step, "failed", time.perf_counter() - t0),
                                  "exit_code": error.exit_code, "error": str(error)}
            _report(progress, tally, f"{step.name}: failed")
            logger.info("%s: device failed: %s", step.name, error)
            continue
        except BaseException as error:
            tally.failed += 1
            _report(progress, tally, f"{step.name}: failed")
            logger.info("%s: failed: %s", step.name, error)
            failure = failure or error  # let the running steps finish (their records are kept)
            continue
        seconds = time.perf_counter() - t0
        records[step.name] = {**_record(step, "ran", seconds), "started": started, "finished": finished}
        tally.done += 1
        logger.info("%s: done in %.1fs", step.name, seconds)
        _report(progress, tally, f"{step.name}: ran")
    if failure is not None:
        raise failure
    in_order = [records[name] for name in sorted(records, key=order.__getitem__)]
    failed = [name for name, why in lost.items() if why != "skipped"]
    if failed:
        skipped = [name for name, why in lost.items() if why == "skipped"]
        raise StepsFailed(f"{len(failed)} step(s) failed on their device: "
                          + "; ".join(f"{name}: {lost[name]}" for name in failed)
                          + (f" (skipped: {', '.join(skipped)})" if skipped else ""), in_order, done)
    return done, in_order


def run_step_task(child_target: str, payload: dict, done: dict, force: bool) -> tuple[dict, float, float]:
    """The Ray task: run one step in a supervised child (limits from the environment); its
    summary, and when it started and finished on the worker (seconds since the epoch)."""
    from toolkit.safety.isolation import call_isolated

    started = time.time()
    _test_kill_worker_hook(payload["name"])
    return call_isolated(child_target, payload, done, force), started, time.time()


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


def _connect(ray, address: str | None, device_resources: list[str] = ()) -> bool:
    """Join the cluster at `address`, or start a local one on loopback with one unit of each
    device resource; True when started here."""
    if ray.is_initialized():
        _check_resources(ray, device_resources, address)
        return False
    # No network at run time: Ray's usage statistics are never sent.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    options = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address:
        try:
            ray.init(address=address, **options)
        except (ConnectionError, ValueError, RuntimeError) as error:
            raise BadInput(f"cannot join the Ray cluster at {address}: {error}") from None
        try:
            _check_resources(ray, device_resources, address)
        except BadInput:
            ray.shutdown()
            raise
        return True  # we only disconnect: shutdown() of a joined cluster leaves it running
    # Ray 2.60 resolves a loopback node address to the host's own and binds its servers to
    # every interface; its token authentication (on by default) is what keeps others out.
    ray.init(num_cpus=LOCAL_CLUSTER_CPUS, resources={name: 1 for name in device_resources}, **options)
    return True


def _check_resources(ray, device_resources, address) -> None:
    """A device resource no node declares would leave its steps waiting for ever: say so first."""
    missing = [name for name in device_resources if ray.cluster_resources().get(name, 0) < 1]
    if missing:
        example = json.dumps({name: 1 for name in missing})
        raise BadInput(f"the Ray cluster{f' at {address}' if address else ''} has no {', '.join(missing)}: start the "
                       f"node that reaches the device with ray start --resources '{example}'")


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
