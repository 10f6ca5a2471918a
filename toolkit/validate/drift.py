"""Host-vs-device drift: does the candidate compute the same numbers on the device as here?

The candidate runs on this host and on each device through the same runner (copied to the
device, run with the device's Python and runtime), on the same inputs. Per output, each
device is compared with the host (held to a tolerance that depends on the model's
precision and the device's CPU family) and with the reference (reported, not gated:
`edgeward validate` gates accuracy). Per layer, every node's output runs on both sides
through the same runner and the first node whose output diverges is named: for ONNX the
node outputs are exposed as extra outputs of a copy of the graph; for TFLite the runner keeps
every intermediate tensor (LiteRT's experimental_preserve_all_tensors, which gives each op
that XNNPACK takes a partition of its own, on the host and the device alike). A drift beyond
tolerance fails the gate (GateFailed, exit 1).

What differs between an ARM device and an x86 host is the CPU's kernels: onnxruntime
computes fp16 models in fp16 on cores with fp16 arithmetic (Cortex-A76, Neoverse N2),
LiteRT takes another dynamic-int8 kernel on i8mm cores; static int8 is integer arithmetic
and must match bit for bit (see shared research arm64-emulation.md, tests/test_arm64_board.py).
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from toolkit.errors import BadInput, GateFailed

logger = logging.getLogger(__name__)

HOST = "localhost"
PER_LAYER_EXAMPLES = 16  # intermediate tensors of every node come back from the device: keep it small

# What each CPU family has that changes a runtime's kernels. A device with no known family (a
# real phone whose profile does not say, an x86 machine over ssh) gets every feature: the
# loosest tolerance, so an unknown core never fails a model that a known one would pass.
FAMILY_FEATURES: dict[str, frozenset[str]] = {
    "cortex-a53": frozenset(),
    "cortex-a55": frozenset({"fp16", "dotprod"}),
    "cortex-a76": frozenset({"fp16", "dotprod"}),
    "cortex-a78": frozenset({"fp16", "dotprod"}),
    "neoverse-n1": frozenset({"fp16", "dotprod"}),
    "neoverse-n2": frozenset({"fp16", "dotprod", "i8mm", "sve2"}),
    "neoverse-v1": frozenset({"fp16", "dotprod", "i8mm"}),
}
ALL_FEATURES = frozenset({"fp16", "dotprod", "i8mm", "sve2"})

# The drift tolerance: the largest |device - host| allowed, as a fraction of the host output's
# largest magnitude. One row per precision; a device gets the largest of "base" and the
# columns of the features its CPU family has. Measured on the digits CNN (logits span about
# -25..17) under QEMU 10 against an AVX2 host: static int8 bit-exact on every family; fp32
# 5e-7; fp16 2e-7 on Cortex-A53 (fp32 arithmetic) but 4.6e-3 on Cortex-A76/Neoverse N2
# (onnxruntime computes in fp16); dynamic int8 4e-7, but 1.3e-3 for LiteRT on i8mm cores.
TOLERANCE: dict[str, dict[str, float]] = {
    #                base    fp16 arithmetic  i8mm kernels
    "fp32":         {"base": 1e-5},
    "fp16":         {"base": 1e-4, "fp16": 2e-2},
    "dynamic-int8": {"base": 1e-4, "i8mm": 1e-2},
    "static-int8":  {"base": 0.0},  # integer arithmetic: equal, bit for bit
    "other":        {"base": 5e-2},  # int4, mixed and unknown modes
}


def tolerance(precision: str, features: frozenset[str]) -> float:
    row = TOLERANCE.get(precision, TOLERANCE["other"])
    return max([row["base"], *(row[feature] for feature in features if feature in row)])


def precision_of(manifest: dict) -> str:
    """The candidate's precision row from its artifact manifest (fp32 when it was not quantized)."""
    mode = str(manifest.get("mode") or (manifest.get("options") or {}).get("mode") or "").lower()
    if not mode or mode in ("fp32", "float", "float32"):
        return "fp32"
    for row in ("static-int8", "dynamic-int8", "fp16"):
        if mode == row:
            return row
    return "other"


@dataclass
class OutputDrift:
    output: str
    max_abs_vs_host: float
    relative_vs_host: float  # max |device - host| / max |host|
    equal_to_host: bool
    agreement_with_host: float | None
    max_abs_vs_reference: float | None
    sqnr_vs_reference_db: float | None
    agreement_with_reference: float | None
    within_tolerance: bool


@dataclass
class LayerDrift:
    """Per-node drift of a device against the host (ONNX and TFLite)."""

    nodes_compared: int
    examples: int
    first_different: dict | None  # the first node (graph order) whose output is not bit-equal
    first_divergent: dict | None  # the first node beyond the tolerance
    worst: list[dict] = field(default_factory=list)
    note: str | None = None  # why there is no per-layer comparison
    method: str | None = None  # how the intermediate tensors were obtained


@dataclass
class DeviceDrift:
    device: str
    cpu_family: str | None
    emulated: bool
    machine: str | None
    tolerance: float
    outputs: list[OutputDrift]
    per_layer: LayerDrift | None
    passed: bool


@dataclass
class DriftReport:
    candidate: str
    reference: str | None
    data: str
    samples: int
    precision: str
    host_vs_reference: list[dict]
    devices: list[DeviceDrift]
    passed: bool

    def to_dict(self) -> dict:
        return _finite(asdict(self))

    def failures(self) -> list[str]:
        found = []
        for device in self.devices:
            for item in device.outputs:
                if not item.within_tolerance:
                    found.append(f"{device.device} {item.output}: |device - host| {item.max_abs_vs_host:.3g} "
                                 f"({item.relative_vs_host:.3g} of the output's range) > tolerance "
                                 f"{device.tolerance:g} for {self.precision} on {device.cpu_family or 'an unknown CPU'}")
        return found


def drift(candidate, devices, data, *, reference=None, per_layer: bool = True, examples: int | None = None,
          profiles_dir=None) -> DriftReport:
    """Run CANDIDATE on the host and on each of DEVICES on DATA and compare (see the module text)."""
    from toolkit.artifacts import read_manifest
    from toolkit.devices import get_profile, run_on_device
    from toolkit.validate.metrics import match_outputs, output_metrics
    from toolkit.validate.sides import feed_count, load_side, prepare_feeds, run_side

    devices = [d for d in dict.fromkeys(devices or []) if d]
    if not devices:
        raise BadInput("drift: name at least one --device")
    profiles = {name: get_profile(name, profiles_dir) for name in devices}  # unknown names: BadInput
    dataset = _load(data)
    if examples is not None:
        if examples < 1:
            raise BadInput(f"--examples {examples}: give a positive number")
        dataset = dataset.take(examples)
    cand = load_side(candidate, "candidate")
    if cand.model_path is None:
        raise BadInput(f"candidate {candidate}: drift runs an .onnx or .tflite model on devices; export it first")
    feeds = prepare_feeds(dataset, cand.runner, "candidate")
    samples = feed_count(feeds, cand.runner.inputs)
    names = [spec.name for spec in cand.runner.outputs]
    precision = precision_of(read_manifest(cand.artifact) if cand.artifact else {})

    logger.info("drift: running %s on the host", cand.model_path.name)
    host = run_on_device(cand.model_path, feeds, HOST, profiles_dir=profiles_dir)
    ref_outputs, ref_names = None, None
    host_vs_reference = []
    if reference is not None:
        ref = load_side(reference, "reference")
        ref_outputs = run_side(ref.runner, prepare_feeds(dataset, ref.runner, "reference"))
        ref_names = [spec.name for spec in ref.runner.outputs]
        for name, got, ref_name, want in match_outputs(names, host, ref_names, ref_outputs):
            metrics, _ = output_metrics(name, np.asarray(got), ref_name, np.asarray(want))
            host_vs_reference.append({"output": name, "max_abs": metrics.max_abs_error, "sqnr_db": metrics.sqnr_db,
                                      "agreement": metrics.agreement})

    results = []
    for name, profile in profiles.items():
        features = FAMILY_FEATURES.get(profile.cpu_family or "", ALL_FEATURES)
        limit = tolerance(precision, features)
        logger.info("drift: running %s on %s", cand.model_path.name, name)
        seen: dict = {}
        outputs = run_on_device(cand.model_path, feeds, name, profiles_dir=profiles_dir, facts=seen)
        rows = []
        for index, (got, want) in enumerate(zip(outputs, host, strict=True)):
            row = _compare(names[index] if index < len(names) else f"output_{index}", np.asarray(got),
                           np.asarray(want), limit)
            if ref_outputs is not None:
                paired = match_outputs([row.output], [np.asarray(got)], ref_names, ref_outputs)
                if paired:
                    _, _, ref_name, want_ref = paired[0]
                    metrics, _ = output_metrics(row.output, np.asarray(got), ref_name, np.asarray(want_ref))
                    row.max_abs_vs_reference = metrics.max_abs_error
                    row.sqnr_vs_reference_db = metrics.sqnr_db
                    row.agreement_with_reference = metrics.agreement
            rows.append(row)
        layers = None
        if per_layer:
            layers = layer_drift(cand.model_path, feeds, name, limit, profiles_dir=profiles_dir)
        results.append(DeviceDrift(device=name, cpu_family=profile.cpu_family, emulated=profile.emulated,
                                   machine=seen.get("machine"), tolerance=limit, outputs=rows, per_layer=layers,
                                   passed=all(row.within_tolerance for row in rows)))
    return DriftReport(candidate=cand.label, reference=str(reference) if reference is not None else None,
                       data=dataset.name or str(data), samples=samples, precision=precision,
                       host_vs_reference=host_vs_reference, devices=results,
                       passed=all(device.passed for device in results))


def check_drift(report: DriftReport) -> None:
    """The gate: a device beyond tolerance is exit 1."""
    failures = report.failures()
    if failures:
        raise GateFailed("drift beyond tolerance: " + "; ".join(failures))


def _compare(name: str, got: np.ndarray, want: np.ndarray, limit: float) -> OutputDrift:
    if got.shape != want.shape:
        raise BadInput(f"{name}: the device returned shape {list(got.shape)}, the host {list(want.shape)}")
    got64, want64 = got.astype(np.float64), want.astype(np.float64)
    difference = float(np.abs(got64 - want64).max()) if got.size else 0.0
    if not math.isfinite(difference):
        difference = math.inf
    scale = float(np.abs(want64).max()) if want.size else 0.0
    relative = difference / scale if scale > 0 else (0.0 if difference == 0 else math.inf)
    agreement = None
    if got.ndim >= 2 and got.shape[-1] > 1 and got.dtype.kind == "f":
        agreement = float(np.mean(got.argmax(-1) == want.argmax(-1)))
    equal = bool(np.array_equal(got, want))
    return OutputDrift(output=name, max_abs_vs_host=difference, relative_vs_host=relative, equal_to_host=equal,
                       agreement_with_host=agreement, max_abs_vs_reference=None, sqnr_vs_reference_db=None,
                       agreement_with_reference=None, within_tolerance=equal or relative <= limit)


def layer_drift(model: Path, feeds: dict, device: str, limit: float, *, profiles_dir=None) -> LayerDrift:
    """Each node's output on DEVICE against the host's, in execution order (a few examples).

    ONNX: a copy of the graph with every float node output exposed as a graph output runs
    through the same runner on both sides, so the comparison is node by node on the same
    kernels the device would pick (the exposure may stop a fusion; it does on both sides alike).
    TFLite: the runner keeps every op's output (`predict --all-tensors`)."""
    from toolkit.common.batching import batch_axes, slice_examples
    from toolkit.validate.sides import feed_count

    suffix = model.suffix.lower()
    if suffix not in (".onnx", ".tflite"):
        return LayerDrift(0, 0, None, None, note=f"per-layer drift needs an ONNX or TFLite model (found {suffix})")
    count = min(PER_LAYER_EXAMPLES, feed_count(feeds, None))
    subset = slice_examples(feeds, batch_axes(feeds, None), 0, count)
    if suffix == ".tflite":
        return _tflite_layer_drift(model, subset, count, device, limit, profiles_dir=profiles_dir)
    from toolkit.devices import run_on_device

    with tempfile.TemporaryDirectory(prefix="edgeward-drift-") as scratch:
        exposed, nodes = expose_onnx(model, Path(scratch) / "exposed.onnx")
        host = run_on_device(exposed, subset, HOST, profiles_dir=profiles_dir)
        board = run_on_device(exposed, subset, device, profiles_dir=profiles_dir)
    offset = len(host) - len(nodes)
    return _compare_nodes(nodes, host[offset:], board[offset:], limit, count,
                          method="node outputs exposed as graph outputs (onnxruntime)")


def _tflite_layer_drift(model: Path, subset: dict, count: int, device: str, limit: float, *,
                        profiles_dir=None) -> LayerDrift:
    from toolkit.devices import run_on_device
    from toolkit.errors import DeviceError

    host_facts: dict = {}
    board_facts: dict = {}
    host = run_on_device(model, subset, HOST, profiles_dir=profiles_dir, facts=host_facts, all_tensors=True)
    try:
        board = run_on_device(model, subset, device, profiles_dir=profiles_dir, facts=board_facts, all_tensors=True)
    except DeviceError as error:  # e.g. a TFLite runtime on the device that cannot keep intermediate tensors
        return LayerDrift(0, count, None, None, note=f"per-layer drift unavailable on {device}: {error}")
    host_tensors, board_tensors = host_facts.get("tensors") or [], board_facts.get("tensors") or []
    if [t["node"] for t in host_tensors] != [t["node"] for t in board_tensors]:
        return LayerDrift(0, count, None, None, note=f"the runtime on {device} planned the graph differently from "
                                                     f"this host's ({len(board_tensors)} vs {len(host_tensors)} "
                                                     f"op outputs): no node-by-node comparison")
    nodes = [(t["node"], t["op_type"], t["tensor"]) for t in host_tensors]
    offset = len(host) - len(nodes)
    delegate = board_facts.get("delegate") or "?"
    return _compare_nodes(nodes, host[offset:], board[offset:], limit, count,
                          method=f"every op output kept (LiteRT preserve_all_tensors; {delegate}, one partition per "
                                 f"delegated op on both sides)")


def _compare_nodes(nodes: list, host: list, board: list, limit: float, count: int, *, method: str) -> LayerDrift:
    """Node by node in execution order: the first that differs, the first beyond `limit`, the worst five."""
    first_different = first_divergent = None
    rows = []
    for index, ((node, op_type, tensor), want, got) in enumerate(zip(nodes, host, board, strict=True)):
        got, want = np.asarray(got), np.asarray(want)
        if got.dtype.kind != "f" or got.shape != want.shape:
            continue
        row = _compare(tensor, got, want, limit)
        entry = {"order": index, "node": node, "op_type": op_type, "tensor": tensor,
                 "max_abs": row.max_abs_vs_host, "relative": row.relative_vs_host}
        rows.append(entry)
        if first_different is None and not row.equal_to_host:
            first_different = entry
        if first_divergent is None and not row.within_tolerance:
            first_divergent = entry
    worst = sorted(rows, key=lambda entry: -entry["relative"])[:5]
    return LayerDrift(nodes_compared=len(rows), examples=count, first_different=first_different,
                      first_divergent=first_divergent, worst=worst, method=method)


def expose_onnx(model: Path, target: Path) -> tuple[Path, list[tuple[str, str, str]]]:
    """A copy of MODEL whose outputs are its own, then every node output that is a float tensor,
    in graph order. Returns (path, [(node name, op type, tensor)] for the added outputs)."""
    import onnx

    from toolkit.safety.onnx import check_onnx_file

    check_onnx_file(model)
    proto = onnx.load(str(model))
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
        types = {value.name: value.type.tensor_type.elem_type for value in inferred.graph.value_info}
    except Exception:  # inference is only used to skip integer tensors; the runtime checks the rest
        types = {}
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE}
    present = {value.name for value in proto.graph.output}
    added = []
    for index, node in enumerate(proto.graph.node):
        if node.op_type == "Constant":
            continue
        for tensor in node.output:
            if not tensor or tensor in present or (types and types.get(tensor) not in floats):
                continue
            proto.graph.output.append(onnx.ValueInfoProto(name=tensor))
            present.add(tensor)
            added.append((node.name or f"{node.op_type}_{index}", node.op_type, tensor))
    onnx.save(proto, str(target))
    return target, added


def human_summary(report: DriftReport) -> str:
    lines = [f"candidate {report.candidate} ({report.precision}) on {report.samples} examples of {report.data}"]
    for row in report.host_vs_reference:
        lines.append(f"host      vs reference  {row['output']}: max |diff| {row['max_abs']:.3g}, SQNR "
                     f"{row['sqnr_db']:.1f} dB" + (f", agreement {row['agreement']:.4f}" if row["agreement"] is not None else ""))
    for device in report.devices:
        family = device.cpu_family or "unknown CPU family"
        kind = ", emulated" if device.emulated else ""
        lines.append(f"device    {device.device} ({family}{kind}; runner on {device.machine or '?'}), "
                     f"tolerance {device.tolerance:g} of the output's range")
        for row in device.outputs:
            verdict = "EQUAL" if row.equal_to_host else ("ok" if row.within_tolerance else "BEYOND TOLERANCE")
            text = (f"  {row.output}: vs host max |diff| {row.max_abs_vs_host:.3g} ({row.relative_vs_host:.3g} "
                    f"of range) {verdict}")
            if row.agreement_with_host is not None:
                text += f", agreement {row.agreement_with_host:.4f}"
            if row.max_abs_vs_reference is not None:
                text += f"; vs reference max |diff| {row.max_abs_vs_reference:.3g}"
                if row.sqnr_vs_reference_db is not None:
                    text += f", SQNR {row.sqnr_vs_reference_db:.1f} dB"
            lines.append(text)
        layers = device.per_layer
        if layers is not None:
            if layers.note:
                lines.append(f"  per-layer: {layers.note}")
            elif layers.first_different is None:
                lines.append(f"  per-layer: all {layers.nodes_compared} nodes equal to the host "
                             f"({layers.examples} examples)")
            else:
                first = layers.first_different
                lines.append(f"  per-layer: first node that differs: {first['node']} ({first['op_type']}), "
                             f"max |diff| {first['max_abs']:.3g}")
                if layers.first_divergent:
                    worst = layers.first_divergent
                    lines.append(f"  per-layer: first node beyond tolerance: {worst['node']} ({worst['op_type']}), "
                                 f"{worst['relative']:.3g} of range")
    lines.append("PASSED" if report.passed else "FAILED: " + "; ".join(report.failures()))
    return "\n".join(lines)


def _load(data):
    from toolkit.data import Dataset, load_data

    return data if isinstance(data, Dataset) else load_data(data)


def _finite(value):
    """JSON has no inf or nan: write them as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value
