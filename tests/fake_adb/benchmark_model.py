"""A test-only stand-in for LiteRT's `benchmark_model` binary, on ai-edge-litert's Python API.

NOT the real tool (a C++ binary built from the LiteRT sources, pushed to the phone by the
user). It takes the flags toolkit/devices/adb.py passes (--graph, --num_runs, --warmup_runs,
--num_threads, --report_peak_memory_footprint, --print_postinvoke_state), times the model on
seeded random inputs, and prints its figures in the real tool's output format, which adb.py
parses. The interpreter state (where each node ran) is LiteRT's own execution plan, read with
the device runner's `tflite_delegated_by` and printed as tflite::PrintInterpreterState does. Its figures
are real measurements of the Python interpreter loop on whatever runs it (under QEMU, an
emulation's: meaningless as device timings).
"""

import argparse
import os
import resource
import sys
import time
from pathlib import Path


def flags(argv):
    parser = argparse.ArgumentParser(prog="benchmark_model")
    parser.add_argument("--graph", required=True)
    parser.add_argument("--num_runs", type=int, default=50)
    parser.add_argument("--warmup_runs", type=int, default=1)
    parser.add_argument("--num_threads", type=int, default=-1)
    parser.add_argument("--report_peak_memory_footprint", default="false")
    parser.add_argument("--print_postinvoke_state", default="false")
    return parser.parse_args(argv)


def stats(times_us):
    ordered = sorted(times_us)
    count = len(ordered)
    mean = sum(ordered) / count
    std = (sum((t - mean) ** 2 for t in ordered) / count) ** 0.5

    def pick(q):
        return ordered[min(count - 1, int(q * count))]

    return (f"count={count} first={int(times_us[0])} curr={int(times_us[-1])} min={int(ordered[0])} "
            f"max={int(ordered[-1])} avg={mean:g} std={int(std)} p5={int(pick(0.05))} median={int(pick(0.5))} "
            f"p95={int(pick(0.95))}")


def print_interpreter_state(interpreter) -> None:
    """Node lines in tflite::PrintInterpreterState's format (optional_debug_tools.cc)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "toolkit" / "devices"))
    from runner import tflite_delegated_by

    try:
        from ai_edge_litert.schema_py_generated import BuiltinOperator
    except ImportError:
        BuiltinOperator = None
    ops = interpreter._get_ops_details()
    delegated = tflite_delegated_by(ops)
    nodes = [op for op in ops if op["op_name"] != "DELEGATE"]
    partitions = [op for op in ops if op["op_name"] == "DELEGATE"]
    if partitions:
        print(f"INFO: Replacing {len(delegated)} out of {len(nodes)} node(s) with delegate (TfLiteXNNPackDelegate) "
              f"node, yielding {len(partitions)} partitions for the whole graph.")
    print("INFO: \n====Printing out TfLite interpreter post-invoke state begins====")
    print("Interpreter has 1 subgraphs.\n")
    print(f"-----------Subgraph-0 has {len(interpreter.get_tensor_details())} tensors and {len(ops)} nodes------------")
    for op in ops:
        if op["op_name"] == "DELEGATE":
            print(f"Node {op['index']:3d} Operator Custom Name TfLiteXNNPackDelegate ")
            continue
        code = getattr(BuiltinOperator, op["op_name"], -1) if BuiltinOperator else -1
        status = (f"(delegated by node {delegated[op['index']]})" if op["index"] in delegated
                  else "(not delegated)")
        print(f"Node {op['index']:3d} Operator Builtin Code {code:3d} {op['op_name']} {status}")
        print(f"  {len(op['inputs'])} Input Tensors:[{','.join(str(i) for i in op['inputs'])}]")
        print(f"  {len(op['outputs'])} Output Tensors:[{','.join(str(i) for i in op['outputs'])}]")
    print("INFO: ====Printing out TfLite interpreter post-invoke state ends====")


def main(argv):
    args = flags(argv)
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    print("INFO: STARTING!")
    print(f"INFO: Min num runs: [{args.num_runs}]")
    print(f"INFO: Min warmup runs: [{args.warmup_runs}]")
    print(f"INFO: Num threads: [{args.num_threads}]")
    print(f"INFO: Graph: [{args.graph}]")
    if not os.path.isfile(args.graph):
        print(f"ERROR: Could not open '{args.graph}'.")
        return 1
    print(f"INFO: Loaded model {args.graph}")
    print(f"INFO: The input model file size (MB): {os.path.getsize(args.graph) / 1e6:g}")
    start = time.perf_counter()
    interpreter = Interpreter(model_path=args.graph, num_threads=args.num_threads if args.num_threads > 0 else None)
    interpreter.allocate_tensors()
    init_us = (time.perf_counter() - start) * 1e6
    print(f"INFO: Initialized session in {init_us / 1000:.2f}ms.")
    rng = np.random.default_rng(0)
    for detail in interpreter.get_input_details():
        dtype = np.dtype(detail["dtype"])
        if dtype.kind == "f":
            array = rng.standard_normal(detail["shape"]).astype(dtype)
        else:
            info = np.iinfo(dtype)
            array = rng.integers(max(info.min, -100), min(info.max, 100), detail["shape"]).astype(dtype)
        interpreter.set_tensor(detail["index"], array)

    def timed(count):
        times = []
        for _ in range(count):
            begin = time.perf_counter()
            interpreter.invoke()
            times.append((time.perf_counter() - begin) * 1e6)
        return times

    warm = timed(max(1, args.warmup_runs))
    print(f"INFO: Running benchmark for at least {args.warmup_runs} iterations.")
    print("INFO: " + stats(warm))
    print()
    measured = timed(max(1, args.num_runs))
    print(f"INFO: Running benchmark for at least {args.num_runs} iterations.")
    print("INFO: " + stats(measured))
    print()
    print(f"INFO: Inference timings in us: Init: {init_us:g}, First inference: {warm[0]:g}, "
          f"Warmup (avg): {sum(warm) / len(warm):g}, Inference (avg): {sum(measured) / len(measured):g}")
    if args.report_peak_memory_footprint.lower() in ("1", "true"):
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"INFO: Overall peak memory footprint (MB) via periodic monitoring: {peak_mb:g}")
    if args.print_postinvoke_state.lower() in ("1", "true"):
        print_interpreter_state(interpreter)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
