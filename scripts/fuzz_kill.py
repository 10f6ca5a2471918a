"""The SIGKILL loop and the CLI sample of scripts/fuzz_suite.py.

The SIGKILL loop starts `edgeward export/quantize/breakeven --force` into an existing
output, kills the whole process tree (the CLI and its child) at a random moment, and
checks that every final path holds a complete old or new artifact: the manifest parses
and every file it lists has its recorded sha256; a report file is whole (JSON parses,
HTML closes, PNG ends with IEND). A staged-folder writer (toolkit.artifacts) is killed
the same way many more times, cheaply. After the loop one more complete run must leave
no staging folders or temp files behind.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI_TIMEOUT_S = 600


def edgeward_argv(*args) -> list[str]:
    return [sys.executable, "-m", "toolkit", *map(str, args)]


def _session_members(sid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as handle:
                    fields = handle.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != b"Z":  # field 6: the session
                members.append(int(entry))
    return members


def kill_tree(proc: subprocess.Popen) -> int:
    """SIGKILL every process of the run's session at once (the CLI and its child)."""
    members = _session_members(proc.pid)
    for pid in members:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    return len(members)


# ---------------------------------------------------------------- checks


def check_artifact(folder: Path) -> str | None:
    """None if `folder` is a complete artifact (manifest + every file at its sha256), else why not."""
    from toolkit.artifacts import MANIFEST, sha256_file

    if not folder.is_dir():
        return "the artifact folder is gone"
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as error:
        return f"manifest unreadable: {error}"
    listed = manifest.get("files", {})
    for name, info in listed.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if sha256_file(path) != info["sha256"]:
            return f"{name} does not match its sha256 (partial or mixed)"
    extra = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} - set(listed) - {MANIFEST}
    if extra:
        return f"files the manifest does not list: {sorted(extra)[:3]}"
    return None


def check_report_folder(folder: Path) -> str | None:
    """Per-file atomic reports: each file whole, old or new."""
    if not folder.is_dir():
        return "the report folder is gone"
    for path in folder.iterdir():
        if path.name.startswith("."):
            continue  # a temp file a kill left: the next run's problem, counted below
        data = path.read_bytes()
        if path.suffix == ".json":
            try:
                json.loads(data)
            except ValueError:
                return f"{path.name} is not whole JSON"
        elif path.suffix == ".html" and b"</html>" not in data[-200:].lower():
            return f"{path.name} is cut short"
        elif path.suffix == ".png" and not data.endswith(b"IEND\xaeB`\x82"):
            return f"{path.name} is cut short"
        elif not data:
            return f"{path.name} is empty"
    return None


def leftovers(out: Path) -> list[str]:
    found = [p.name for p in out.parent.glob(f".{out.name}.stage-*")]
    found += [p.name for p in out.parent.glob(f".{out.name}.extract-*")]
    if out.is_dir():
        found += [str(p.relative_to(out)) for p in out.rglob(".*.tmp")]
    return found


# ---------------------------------------------------------------- the loop


STAGED_WRITER = """
import os, random, sys
from toolkit.artifacts import staged_folder, new_manifest, write_manifest, atomic_write_json
out, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
with staged_folder(out, force=True) as stage:
    for index in range(rng.randint(2, 6)):
        (stage / f"part{index}.bin").write_bytes(os.urandom(rng.randint(1, 6) * 2**20))
    write_manifest(stage, new_manifest("fuzz", stage, source={"spec": "fuzz"}, options={"seed": seed}))
atomic_write_json(out + ".report.json", {"seed": seed, "blob": "x" * rng.randint(1, 4 * 2**20)})
"""


def kill_loop(seeds: dict, folder: Path, kills: int, staged_kills: int, seed: int,
              only: tuple[str, ...] = ("export", "quantize", "breakeven")) -> dict:
    """`kills` SIGKILLs spread over `only` (export, quantize, breakeven), then `staged_kills`
    into the staged-folder writer; returns the figures."""
    if kills + staged_kills == 0:
        return {"injections": 0, "by_target": {}, "corrupted": 0, "problems": [], "leftover_staging": 0,
                "leftovers": [], "run_seconds": {}}
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    onnx_seed = next(s["path"] for s in seeds["onnx"] if s["role"] == "digits")
    scenario = next((s["path"] for s in seeds["yaml"] if s["role"] == "scenario"), None)
    targets = {
        "export": (edgeward_argv("export", "builtin:digits-cnn", "--to", "onnx", "-o", folder / "export",
                                 "--force"), folder / "export", check_artifact),
        "quantize": (edgeward_argv("quantize", onnx_seed, "--mode", "dynamic-int8", "-o", folder / "quantize",
                                   "--force"), folder / "quantize", check_artifact),
    }
    if scenario:
        targets["breakeven"] = (edgeward_argv("breakeven", scenario, "-o", folder / "breakeven", "--force"),
                                folder / "breakeven", check_report_folder)
    staged_out = folder / "staged"
    targets["staged-writer"] = ([sys.executable, "-c", STAGED_WRITER, str(staged_out), "0"], staged_out,
                                check_artifact)
    targets = {name: value for name, value in targets.items() if name in only or name == "staged-writer"}
    durations = {name: _complete_run(argv) for name, (argv, _, _) in targets.items()}
    plan = [name for name in targets if name != "staged-writer"]
    schedule = [plan[k % len(plan)] for k in range(kills)] + ["staged-writer"] * staged_kills
    figures = Counter()
    problems = []
    for k, name in enumerate(schedule):
        argv, out, check = targets[name]
        if name == "staged-writer":
            argv = argv[:-1] + [str(k)]
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        time.sleep(rng.uniform(0.05, durations[name]))
        if proc.poll() is None:
            kill_tree(proc)
            figures[name] += 1
        else:  # the first, cold run overstated the duration: aim earlier from now on
            figures[f"{name} (finished first)"] += 1
            durations[name] *= 0.8
        problem = check(out)
        if name == "staged-writer" and problem is None:
            problem = check_report_folder_file(Path(str(out) + ".report.json"))
        if problem:
            problems.append(f"{name} #{k}: {problem}")
    left = []
    for name, (argv, out, _) in targets.items():
        _complete_run(argv)
        left += [f"{name}: {item}" for item in leftovers(out)]
    injections = sum(v for k, v in figures.items() if "finished" not in k)
    return {"injections": injections, "by_target": dict(figures), "corrupted": len(problems),
            "problems": problems[:20], "leftover_staging": len(left), "leftovers": left[:20],
            "run_seconds": {k: round(v, 2) for k, v in durations.items()}}


def check_report_folder_file(path: Path) -> str | None:
    try:
        json.loads(path.read_text())
    except (OSError, ValueError) as error:
        return f"{path.name} is not whole JSON ({error})"
    return None


def _complete_run(argv: list[str]) -> float:
    started = time.monotonic()
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[2:6])} failed: {result.stderr.strip()[-500:]}")
    return time.monotonic() - started


# ---------------------------------------------------------------- the CLI sample


def cli_argv(task: dict, out: Path) -> list[str] | None:
    target, path = task["target"], task["path"]
    if task["kind"] in ("onnx", "tflite"):
        if target == "quantize":
            return edgeward_argv("quantize", path, "--mode", "dynamic-int8", "-o", out)
        if target == "validate":
            return edgeward_argv("validate", path, "--reference", task["seed"], "--data", "builtin:digits:test")
        if target in ("bench", "open_run"):
            return edgeward_argv("bench", path, "--runs", "2", "--warmup", "0")
        if target == "estimate":
            return edgeward_argv("bench", path, "--device", "raspberry-pi-5", "--estimate")
        return edgeward_argv("export", path, "--to", "onnx" if task["kind"] == "tflite" else "tflite", "-o", out)
    if task["kind"] == "safetensors":
        folder = out.with_name(out.name + "-artifact")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.safetensors").write_bytes(Path(path).read_bytes())
        (folder / "manifest.json").write_text(json.dumps({
            "stage": "distill", "rebuild": {"kind": "digits", "family": task["role"]},
            "inputs": [{"name": "x", "shape": ["batch", 1, 8, 8], "dtype": "float32"}]}))
        return edgeward_argv("export", folder, "--to", "onnx", "-o", out)
    if target == "profile":
        folder = out.with_name(out.name + "-profiles")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "fuzzed.yaml").write_bytes(Path(path).read_bytes())
        return edgeward_argv("devices", "show", "fuzzed", "--profiles", folder)
    if target == "scenario":
        return edgeward_argv("breakeven", path, "-o", out)
    if target == "recipe":
        return edgeward_argv("run", path, "--dry-run", "-o", out)
    return None


def cli_sample(tasks: list[dict], seeds: dict, folder: Path, count: int, seed: int, crashing: list[str]) -> dict:
    """Run `count` inputs (every crashing one first) through the real `edgeward` command."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed + 1)
    chosen = [t for t in tasks if t["path"] in set(crashing)]
    rest = [t for t in tasks if t not in chosen]
    rng.shuffle(rest)
    by_kind: dict[str, list[dict]] = {}
    for task in rest:
        by_kind.setdefault(task["kind"], []).append(task)
    while len(chosen) < count and any(by_kind.values()):
        for items in by_kind.values():  # round-robin over the formats
            if items and len(chosen) < count:
                chosen.append(items.pop())
    codes, problems = Counter(), []
    figures = Counter()
    for task in chosen[:max(count, len(crashing))]:
        argv = cli_argv(task, folder / f"out{task['i']}")
        if argv is None:
            continue
        started = time.monotonic()
        try:
            result = subprocess.run(argv, cwd=folder, capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            figures["hangs"] += 1
            problems.append(f"hang: {' '.join(argv[3:])}")
            continue
        figures["runs"] += 1
        codes[result.returncode] += 1
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        if result.returncode < 0:
            figures["cli_crashes"] += 1
            problems.append(f"CLI died ({-result.returncode}): {' '.join(argv[3:])}")
        elif "Traceback" in result.stderr or result.returncode not in (0, 1, 2, 3, 4):
            figures["tracebacks"] += 1
            problems.append(f"exit {result.returncode}: {' '.join(argv[3:])}: {result.stderr.strip()[-300:]}")
        elif result.returncode != 0 and len(errors) != 1:
            figures["not_one_line"] += 1
            problems.append(f"{len(errors)} error lines: {' '.join(argv[3:])}: {result.stderr.strip()[-200:]}")
        if "crashed the runtime" in result.stderr:
            figures["crashes_reported_in_one_line"] += 1
        figures["seconds"] += time.monotonic() - started
    return {"runs": figures["runs"], "exit_codes": {str(k): v for k, v in sorted(codes.items())},
            "cli_crashes": figures["cli_crashes"], "tracebacks": figures["tracebacks"], "hangs": figures["hangs"],
            "not_one_line": figures["not_one_line"],
            "crashes_reported_in_one_line": figures["crashes_reported_in_one_line"],
            "seconds": round(figures["seconds"], 1), "problems": problems[:30]}
