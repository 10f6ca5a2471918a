"""Seeds, mutators and targets for scripts/fuzz_suite.py, and the worker that runs them.

Seeds are real files built here (the builtin digits models exported to ONNX and TFLite,
small hand-built ONNX graphs, safetensors weights, the shipped device profiles, the
break-even example and the demo recipe). Mutators are plain functions bytes -> bytes
(generic) or format-aware (ONNX protobuf fields, TFLite shape vectors, safetensors
headers, YAML values). Targets are the library functions the CLI calls.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fuzz_mutators import (  # noqa: E402,F401  (re-exported for the tests)
    GENERIC,
    STRUCTURED,
    _shape_vectors,
    bit_flips,
    safetensors_structured,
    tflite_structured,
    truncate,
)

ROOT = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------- seeds


def build_seeds(folder: Path) -> dict[str, list[dict]]:
    """{"onnx"|"tflite"|"safetensors"|"yaml": [{"path", "role"}]} built from real models and files."""
    folder.mkdir(parents=True, exist_ok=True)
    import torch

    from toolkit.common.quiet import quiet
    from toolkit.models.digits import load_builtin

    seeds: dict[str, list[dict]] = {"onnx": [], "tflite": [], "safetensors": [], "yaml": []}
    for family in ("digits-cnn", "digits-mlp"):
        module = load_builtin(family)
        onnx_path = folder / f"{family}.onnx"
        if not onnx_path.exists():
            with quiet():
                torch.onnx.export(module, (torch.zeros(2, 1, 8, 8),), str(onnx_path), dynamo=True,
                                  external_data=False, input_names=["x"], output_names=["logits"],
                                  dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
        seeds["onnx"].append({"path": str(onnx_path), "role": "digits"})
        tflite_path = folder / f"{family}.tflite"
        if not tflite_path.exists():
            import litert_torch

            with quiet():
                litert_torch.convert(module, (torch.zeros(1, 1, 8, 8),)).export(str(tflite_path))
        seeds["tflite"].append({"path": str(tflite_path), "role": "digits"})
        from safetensors.torch import save_file

        weights = folder / f"{family}.safetensors"
        save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(weights))
        seeds["safetensors"].append({"path": str(weights), "role": family})
    seeds["onnx"].append({"path": str(_ops_model(folder / "ops.onnx")), "role": "ops"})
    _quantized_seeds(folder, seeds)
    for name in ("raspberry-pi-5", "pixel-8", "stm32h747", "localhost"):
        path = ROOT / "device_profiles" / f"{name}.yaml"
        if path.is_file():
            seeds["yaml"].append({"path": str(path), "role": "profile"})
    try:
        from toolkit.costs.example import EXAMPLE

        (folder / "scenario.yaml").write_text(EXAMPLE)
        seeds["yaml"].append({"path": str(folder / "scenario.yaml"), "role": "scenario"})
    except ImportError:
        pass
    demo = ROOT / "toolkit" / "pipeline" / "demo.yaml"
    if demo.is_file():
        seeds["yaml"].append({"path": str(demo), "role": "recipe"})
    return seeds


def _quantized_seeds(folder: Path, seeds: dict) -> None:
    """Quantized models have integer ops and QDQ pairs: different parser paths."""
    try:
        from toolkit.quantize import quantize
    except ImportError:
        return
    for fmt in ("onnx", "tflite"):
        out = folder / f"digits-int8-{fmt}"
        try:
            if not out.exists():
                quantize(seeds[fmt][0]["path"], "dynamic-int8", out)
            seeds[fmt].append({"path": str(out / f"model.{fmt}"), "role": "digits"})
        except Exception as error:  # a seed is a bonus: say so and go on
            print(f"fuzz: no int8 {fmt} seed ({error})", file=sys.stderr)


def _ops_model(path: Path) -> Path:
    """A small graph with many op types (shape arithmetic, gathers, slices, pooling)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def const(name, array):
        return numpy_helper.from_array(np.asarray(array), name)

    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], strides=[1, 1]),
        helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Shape", ["p"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "zero"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus_one"], ["shape"], axis=0),
        helper.make_node("Reshape", ["p", "shape"], ["flat"]),
        helper.make_node("Slice", ["flat", "start", "end", "one"], ["sl"]),
        helper.make_node("MatMul", ["sl", "fc"], ["mm"]),
        helper.make_node("Add", ["mm", "bias"], ["a"]),
        helper.make_node("Transpose", ["a"], ["t"], perm=[1, 0]),
        helper.make_node("Transpose", ["t"], ["t2"], perm=[1, 0]),
        helper.make_node("Softmax", ["t2"], ["y"], axis=-1),
    ]
    rng = np.random.default_rng(0)
    initializers = [
        const("w", rng.standard_normal((4, 1, 3, 3)).astype(np.float32)),
        const("zero", np.array([0], np.int64)), const("one", np.array([1], np.int64)),
        const("minus_one", np.array([-1], np.int64)), const("start", np.array([0], np.int64)),
        const("end", np.array([32], np.int64)),
        const("fc", rng.standard_normal((32, 10)).astype(np.float32)),
        const("bias", np.zeros(10, np.float32)),
    ]
    initializers[1] = const("zero", np.array(0, np.int64))  # a scalar index for Gather
    nodes[4] = helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"])
    initializers.append(const("axes0", np.array([0], np.int64)))
    graph = helper.make_graph(nodes, "ops", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    path.write_bytes(model.SerializeToString())
    return path


SHARES = {"onnx": 0.38, "tflite": 0.32, "safetensors": 0.15, "yaml": 0.15}


# ---------------------------------------------------------------- tasks


def make_tasks(seeds: dict[str, list[dict]], folder: Path, count: int, seed: int,
               targets: list[str] | None = None) -> list[dict]:
    """`count` mutated files on disk, each with the target that will read it.

    `targets` keeps only those targets (a quick slice picks the cheap ones).
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    kinds = [k for k in SHARES if seeds.get(k)]
    weights = [SHARES[k] for k in kinds]
    tasks = []
    index = 0
    while len(tasks) < count:
        kind = rng.choices(kinds, weights)[0]
        source = rng.choice(seeds[kind])
        data = Path(source["path"]).read_bytes()
        if rng.random() < 0.4:
            mutator = STRUCTURED[kind]
        else:
            mutator = rng.choice(GENERIC)
        try:
            mutated = mutator(data, random.Random(rng.random()))
        except Exception:  # a structured mutator that cannot apply: fall back to flips
            mutator = bit_flips
            mutated = bit_flips(data, random.Random(rng.random()))
        if rng.random() < 0.15 and mutator is not truncate:  # stack a second mutation
            mutated = rng.choice(GENERIC)(mutated or b"\0", random.Random(rng.random()))
        suffix = {"onnx": ".onnx", "tflite": ".tflite", "safetensors": ".safetensors", "yaml": ".yaml"}[kind]
        target = _target_for(kind, source, rng)
        if targets and target not in targets:
            continue
        path = folder / f"{index:05d}-{mutator.__name__}{suffix}"
        path.write_bytes(mutated)
        tasks.append({"i": index, "kind": kind, "role": source["role"], "seed": source["path"],
                      "path": str(path), "mutation": mutator.__name__, "target": target})
        index += 1
    return tasks


def _target_for(kind: str, source: dict, rng: random.Random) -> str:
    if kind in ("onnx", "tflite"):
        roll = rng.random()
        if source["role"] == "digits" and roll < 0.12:
            return "validate"
        if roll < 0.22:
            return "quantize"
        if roll < 0.32:
            return "load_source"
        if roll < 0.38:
            return "bench"
        if roll < 0.46:
            return "estimate"
        return "open_run"
    if kind == "safetensors":
        return "rebuild" if rng.random() < 0.7 else "check_safetensors"
    return source["role"]


# ---------------------------------------------------------------- targets (run in the worker)


def target_open_run(task: dict) -> None:
    from toolkit.runtime import open_model

    runner = open_model(task["path"])
    runner.run(_feeds(runner.inputs))


def target_load_source(task: dict) -> None:
    from toolkit.sources import load_source

    source = load_source(task["path"])
    runner = source.runner()
    runner.run(_feeds(runner.inputs))


def target_quantize(task: dict) -> None:
    from toolkit.quantize import quantize

    out = Path(task["work"]) / f"q{task['i']}"
    try:
        quantize(task["path"], "dynamic-int8", out, force=True)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def target_validate(task: dict) -> None:
    from toolkit.validate import validate

    validate(task["path"], task["seed"], _digits(), record=False)


def target_bench(task: dict) -> None:
    from toolkit.bench import bench

    bench(task["path"], device="localhost", runs=2, warmup=0, timeout=60)


def target_estimate(task: dict) -> None:
    from toolkit.bench import bench

    bench(task["path"], device="raspberry-pi-5", estimate=True)


def target_rebuild(task: dict) -> None:
    import torch

    from toolkit.models.registry import rebuild

    module = rebuild({"kind": "digits", "family": task["role"]}, task["path"])
    with torch.no_grad():
        module(torch.zeros(2, 1, 8, 8))


def target_check_safetensors(task: dict) -> None:
    from safetensors.numpy import load_file

    from toolkit.safety.safetensors import check_safetensors

    check_safetensors(Path(task["path"]))
    load_file(task["path"])


def target_profile(task: dict) -> None:
    import yaml

    from toolkit.devices.profiles import load_profile

    profile = load_profile(Path(task["path"]))  # then what `devices show [--json]` does with it
    yaml.safe_dump(profile.data, sort_keys=False)
    json.dumps(profile.as_dict(), default=str)


def target_scenario(task: dict) -> None:
    from toolkit.costs import breakeven

    breakeven(task["path"])


def target_recipe(task: dict) -> None:
    from toolkit.pipeline.recipe import load_recipe

    load_recipe(Path(task["path"]))


TARGETS = {name.removeprefix("target_"): value for name, value in globals().items() if name.startswith("target_")}
_DIGITS = []


def _digits():
    if not _DIGITS:
        from toolkit.data import load_data

        dataset = load_data("builtin:digits:test")
        _DIGITS.append(type(dataset)({k: v[:48] for k, v in dataset.inputs.items()},
                                     None if dataset.labels is None else dataset.labels[:48], dataset.name))
    return _DIGITS[0]


def _feeds(specs) -> dict:
    """Random feeds as bench makes them; a shape too big to feed is a clean refusal."""
    import numpy as np

    from toolkit.errors import BadInput

    rng = np.random.default_rng(0)
    feeds = {}
    for spec in specs:
        shape = [d if isinstance(d, int) and d >= 0 else 1 for d in spec.shape]
        if int(np.prod(shape, dtype=np.float64)) > 2**24:
            raise BadInput(f"input {spec.name} has {shape} elements: too large to feed")
        try:
            dtype = np.dtype(spec.dtype)
        except TypeError:
            raise BadInput(f"input {spec.name} has an unknown dtype {spec.dtype}") from None
        feeds[spec.name] = (rng.random(shape) * 4).astype(dtype)
    return feeds


# ---------------------------------------------------------------- the worker


def worker_main() -> None:
    """argv: TASKS RESULTS START END. Writes 'S i' before and 'R {json}' after each input."""
    from toolkit.safety.isolation import Limits, apply_child_limits

    apply_child_limits(Limits.from_env().memory_mb)
    tasks_path, results_path, start, end = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    work = Path(results_path).parent / "scratch"
    work.mkdir(exist_ok=True)
    with open(tasks_path) as handle:
        tasks = [json.loads(line) for line in handle][start:end]
    with open(results_path, "a", buffering=1) as results:
        for task in tasks:
            results.write(f"S {task['i']}\n")
            results.flush()
            record = run_task({**task, "work": str(work)})
            results.write("R " + json.dumps(record) + "\n")
            results.flush()


def run_task(task: dict) -> dict:
    import time

    from toolkit.errors import EdgewardError

    record = {"i": task["i"]}
    started = time.perf_counter()
    try:
        TARGETS[task["target"]](task)
        record["outcome"] = "ok"
    except EdgewardError as error:
        message = str(error)
        record.update(outcome="clean", code=error.exit_code, message=message[:300], lines=len(message.splitlines()))
    except MemoryError:
        record.update(outcome="clean", code=2, message="MemoryError (the CLI child reports it in one line)")
    except RecursionError as error:
        record.update(outcome="traceback", message=f"RecursionError: {str(error)[:200]}", where=_where())
    except Exception as error:
        record.update(outcome="traceback", message=f"{type(error).__name__}: {str(error)[:300]}", where=_where())
    finally:
        record["ms"] = round((time.perf_counter() - started) * 1000, 1)
        if os.path.exists(ROOT / "fuzz-canary"):
            record.update(outcome="traceback", message="CODE RAN: the YAML canary file was created")
    return record


def _where() -> str:
    frames = traceback.extract_tb(sys.exc_info()[2])
    ours = [f for f in frames if "/toolkit/" in f.filename] or frames
    frame = ours[-1]
    return f"{Path(frame.filename).name}:{frame.lineno} {frame.name}"
