#!/usr/bin/env python
"""The fuzz and fault suite: hostile and broken inputs through Edgeward's real entry points.

Mutated ONNX, TFLite, safetensors and YAML files (bit flips, truncation, random bytes,
huge dimensions, crafted headers) go through the library functions the CLI calls
(open_model + run, load_source, quantize, validate, rebuild from safetensors, device
profiles, break-even scenarios, recipes), in supervised child processes that each take
a batch of inputs; a native crash or a hang is attributed to its input by re-running
that input alone. A sample also goes through the real `edgeward` CLI, and a SIGKILL loop
interrupts export and quantize (and a staged-folder writer) at random moments, checking
every final path against its manifest.

    .venv/bin/python scripts/fuzz_suite.py                 # the full run (>= 5,000 inputs)
    .venv/bin/python scripts/fuzz_suite.py --inputs 300 --cli 10 --kills 20   # a quick slice

Prints the figures and writes benchmarks/results/fuzz.json. Exit 0 only when there are
0 tracebacks, 0 CLI crashes, 0 hangs and 0 corrupted files.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import fuzz_inputs  # noqa: E402  (scripts/fuzz_inputs.py: seeds, mutators, targets)
import fuzz_kill  # noqa: E402  (scripts/fuzz_kill.py: the SIGKILL loop and the CLI sample)

from toolkit.safety.isolation import Limits, child_env, group_rss_mb, python_argv, spawn  # noqa: E402

PER_INPUT_TIMEOUT_S = 60.0
BATCH = 400


# ---------------------------------------------------------------- the parent: batches of inputs


def run_inputs(tasks: list[dict], work: Path, *, timeout_s: float = PER_INPUT_TIMEOUT_S,
               memory_mb: int = 4096, jobs: int = 1, log=print) -> list[dict]:
    """Run every task in supervised worker children; returns one result per task."""
    from concurrent.futures import ThreadPoolExecutor

    results: dict[int, dict] = {}
    task_file = work / "tasks.jsonl"
    task_file.write_text("".join(json.dumps(t) + "\n" for t in tasks))
    started = time.monotonic()

    def run_chunk(start: int) -> None:
        index, end = start, min(start + BATCH, len(tasks))
        while index < end:
            done, stopped = _worker(task_file, work, index, end, timeout_s, memory_mb)
            results.update(done)
            if stopped is None:
                break
            failed_index, how = stopped
            results[failed_index] = _attribute(task_file, work, failed_index, how, timeout_s, memory_mb)
            index = failed_index + 1
        log(f"  fuzz: {len(results)}/{len(tasks)} inputs, {time.monotonic() - started:.0f} s")

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(run_chunk, range(0, len(tasks), BATCH)))
    return [results[t["i"]] for t in tasks]


def _worker(task_file: Path, work: Path, start: int, end: int, timeout_s: float, memory_mb: int):
    """One worker over tasks [start, end). Returns (results, None) or (results, (index, how))."""
    result_file = work / f"results-{start}-{end}-{time.monotonic_ns()}.txt"
    result_file.write_text("")
    env = child_env({"EDGEWARD_MEMORY_LIMIT_MB": str(memory_mb), "EDGEWARD_TIME_LIMIT": "0"})
    log_file = open(work / "worker.log", "ab")  # noqa: SIM115 - closed below
    proc = spawn(python_argv(_WORKER_CODE, str(task_file), str(result_file), str(start), str(end)),
                 env=env, stdout=log_file, stderr=log_file, stdin=None)
    results: dict[int, dict] = {}
    current, since, how, offset = None, time.monotonic(), None, 0
    try:
        while True:
            finished = proc.poll() is not None
            with open(result_file) as handle:
                handle.seek(offset)
                chunk = handle.read()
            complete = chunk[: chunk.rfind("\n") + 1]
            offset += len(complete.encode())
            for line in complete.splitlines():
                if line.startswith("S "):
                    current, since = int(line[2:]), time.monotonic()
                elif line.startswith("R "):
                    record = json.loads(line[2:])
                    results[record["i"]] = record
                    current = None
            if finished:
                break
            if current is not None and time.monotonic() - since > timeout_s:
                how = "hang"
            elif group_rss_mb(proc.pid) > memory_mb:
                how = "memory"
            if how:
                os.killpg(proc.pid, 9)
                proc.wait()
                break
            time.sleep(0.05)
    finally:
        log_file.close()
        result_file.unlink(missing_ok=True)
    if how is None and proc.returncode != 0:
        how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
    if how is None:
        return results, None
    if current is None:  # died between inputs: blame the next one not done
        current = next((i for i in range(start, end) if i not in results), None)
        if current is None:
            return results, None
    return results, (current, how)


def _attribute(task_file: Path, work: Path, index: int, how: str, timeout_s: float, memory_mb: int) -> dict:
    """Re-run one failed input alone: a crash or hang is counted only if it reproduces."""
    done, stopped = _worker(task_file, work, index, index + 1, timeout_s, memory_mb)
    if index in done:
        record = done[index]
        record["note"] = f"{how} in a batch, not alone"
        return record
    alone = stopped[1] if stopped else "vanished"
    outcome = "hang" if alone == "hang" else "memory" if alone == "memory" else "crash"
    return {"i": index, "outcome": outcome, "message": f"{alone} (alone), {how} (in batch)"}


_WORKER_CODE = (f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); "
                "import fuzz_inputs; fuzz_inputs.worker_main()")


# ---------------------------------------------------------------- figures


def summarise(results: list[dict], tasks: list[dict]) -> dict:
    outcomes = Counter(r["outcome"] for r in results)
    by_kind: dict[str, Counter] = {}
    for task, result in zip(tasks, results, strict=True):
        by_kind.setdefault(f"{task['kind']}:{task['target']}", Counter())[result["outcome"]] += 1
    failures = [
        {**r, "kind": t["kind"], "target": t["target"], "mutation": t["mutation"], "path": t["path"]}
        for t, r in zip(tasks, results, strict=True) if r["outcome"] in ("traceback", "crash", "hang")
    ]
    seconds: dict[str, list[float]] = {}
    for task, result in zip(tasks, results, strict=True):
        if "ms" in result:
            seconds.setdefault(task["target"], []).append(result["ms"])
    return {
        "mean_ms_by_target": {k: round(sum(v) / len(v), 1) for k, v in sorted(seconds.items())},
        "multi_line_errors": sum(1 for r in results if r.get("lines", 1) > 1),
        "multi_line_examples": [f"{t['target']} {Path(t['path']).name}: {r['message'][:200]}"
                                for t, r in zip(tasks, results, strict=True) if r.get("lines", 1) > 1][:10],
        "inputs_tried": len(results),
        "accepted": outcomes["ok"],
        "clean_errors": outcomes["clean"] + outcomes["memory"],
        "memory_limit_stops": outcomes["memory"],
        "tracebacks": outcomes["traceback"],
        "native_crashes_contained": outcomes["crash"],
        "hangs": outcomes["hang"],
        "by_target": {k: dict(v) for k, v in sorted(by_kind.items())},
        "mutations": dict(Counter(t["mutation"] for t in tasks)),
        "failures": failures[:200],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=5200, help="mutated inputs (default 5200)")
    parser.add_argument("--cli", type=int, default=80, help="inputs also run through the real CLI")
    parser.add_argument("--kills", type=int, default=120, help="SIGKILL injections into export/quantize")
    parser.add_argument("--staged-kills", type=int, default=200, help="SIGKILL injections into a staged writer")
    parser.add_argument("--seed", type=int, default=20240607)
    parser.add_argument("--jobs", type=int, default=1, help="worker children at once")
    parser.add_argument("--targets", help="comma-separated targets to keep (default: all)")
    parser.add_argument("--timeout", type=float, default=PER_INPUT_TIMEOUT_S, help="seconds per input")
    parser.add_argument("--work", type=Path, help="keep inputs here (default: a temp folder, removed)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fuzz.json")
    args = parser.parse_args(argv)

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="edgeward-fuzz-") as temp:
        work = args.work or Path(temp)
        work.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("EDGEWARD_CACHE", str(work / "cache"))
        print(f"fuzz: building seeds in {work}", file=sys.stderr)
        seeds = fuzz_inputs.build_seeds(work / "seeds")
        tasks = fuzz_inputs.make_tasks(seeds, work / "inputs", args.inputs, args.seed,
                                       targets=args.targets.split(",") if args.targets else None)
        print(f"fuzz: {len(tasks)} inputs from {sum(len(v) for v in seeds.values())} seeds", file=sys.stderr)
        results = run_inputs(tasks, work, timeout_s=args.timeout, jobs=args.jobs,
                             log=lambda m: print(m, file=sys.stderr))
        figures = summarise(results, tasks)
        crashing = [f["path"] for f in figures["failures"] if f["outcome"] == "crash"]
        print(f"fuzz: {args.cli} inputs through the CLI", file=sys.stderr)
        figures["cli"] = fuzz_kill.cli_sample(tasks, seeds, work / "cli", args.cli, args.seed, crashing)
        print(f"fuzz: SIGKILL loop, {args.kills} + {args.staged_kills} injections", file=sys.stderr)
        figures["sigkill"] = fuzz_kill.kill_loop(seeds, work / "kill", args.kills, args.staged_kills, args.seed)
    figures["seconds"] = round(time.monotonic() - started, 1)
    figures["limits"] = {"per_input_timeout_s": args.timeout, "memory_mb": 4096,
                         "default_cli": Limits.from_env().__dict__}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from toolkit.artifacts import atomic_write_json

    atomic_write_json(args.out, figures)
    print(report_text(figures))
    bad = (figures["tracebacks"] + figures["hangs"] + figures["cli"]["cli_crashes"] + figures["cli"]["tracebacks"]
           + figures["cli"]["hangs"] + figures["sigkill"]["corrupted"] + figures["sigkill"]["leftover_staging"])
    return 0 if bad == 0 else 1


def report_text(figures: dict) -> str:
    cli, kill = figures["cli"], figures["sigkill"]
    lines = [
        "Edgeward fuzz and fault suite",
        f"  inputs tried                 {figures['inputs_tried']}",
        f"  accepted (ran cleanly)       {figures['accepted']}",
        f"  clean errors                 {figures['clean_errors']}  (of which memory-limit stops: "
        f"{figures['memory_limit_stops']})",
        f"  tracebacks                   {figures['tracebacks']}",
        f"  native crashes (contained)   {figures['native_crashes_contained']}",
        f"  hangs                        {figures['hangs']}",
        f"  CLI runs                     {cli['runs']}  (exit codes {cli['exit_codes']})",
        f"  CLI crashes                  {cli['cli_crashes']}",
        f"  CLI tracebacks               {cli['tracebacks']}",
        f"  CLI hangs                    {cli['hangs']}",
        f"  SIGKILL injections           {kill['injections']}  ({kill['by_target']})",
        f"  files corrupted              {kill['corrupted']}",
        f"  staging left after a rerun   {kill['leftover_staging']}",
        f"  seconds                      {figures['seconds']}",
    ]
    for failure in figures["failures"][:20]:
        lines.append(f"  ! {failure['outcome']}: {failure['target']} {failure['mutation']} "
                     f"{failure['path']}: {failure.get('message', '')[:160]}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
