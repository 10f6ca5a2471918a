"""Write a validation report: report.json, report.md and PNG charts.

The figures come from `toolkit.validate`; this module only lays them out. Charts use
matplotlib's Agg backend (no display needed) and are written atomically like every
other file.
"""

from __future__ import annotations

import io
import math
import re
from pathlib import Path

from toolkit.artifacts import atomic_write_bytes, atomic_write_json, atomic_write_text
from toolkit.common.charts import figure_png, pyplot
from toolkit.common.units import human_number, human_percent
from toolkit.validate.metrics import system_accuracy


def write_report(report, out_dir: Path) -> dict[str, str]:
    """Write every file of the report into OUT_DIR; returns {kind: file name}."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        from toolkit.errors import BadInput

        raise BadInput(f"{out_dir} exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    for name, errors in report.errors.items():
        file_name = f"error_hist_{_safe(name)}.png"
        atomic_write_bytes(out_dir / file_name, histogram_png(name, errors))
        files[f"histogram:{name}"] = file_name
    if report.per_layer is not None and report.per_layer.layers:
        atomic_write_bytes(out_dir / "per_layer_sqnr.png", per_layer_png(report.per_layer))
        files["per_layer_chart"] = "per_layer_sqnr.png"
    confidence = getattr(report, "confidence", None)
    if confidence is not None and confidence.examples:
        atomic_write_bytes(out_dir / "confidence.npz", npz_bytes(confidence.arrays()))
        atomic_write_bytes(out_dir / "confidence_curve.png", confidence_png(confidence.curve()))
        files["confidence"] = "confidence.npz"
        files["confidence_chart"] = "confidence_curve.png"
    files["json"] = "report.json"
    files["markdown"] = "report.md"
    report.files = files
    atomic_write_json(out_dir / "report.json", report.to_dict())
    atomic_write_text(out_dir / "report.md", markdown(report))
    return files


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "output"


def markdown(report) -> str:
    verdict = "PASSED" if report.passed else "FAILED"
    lines = [
        f"# Validation: {verdict}",
        "",
        f"- candidate: `{report.candidate}` ({report.candidate_format}"
        f"{', on ' + report.device if report.device else ''})",
        f"- reference: `{report.reference}` ({report.reference_format})",
        f"- data: `{report.data}`, {report.samples} examples",
        "",
        "## Outputs",
        "",
        "| output | accuracy | reference accuracy | drop (points) | agreement | max abs error | mean abs error "
        "| cosine | SQNR (dB) | NaN/Inf |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in report.outputs:
        lines.append(
            f"| {m.name} | {human_percent(m.candidate_accuracy, digits=2)} | {human_percent(m.reference_accuracy, digits=2)} | {human_number(m.drop, 3)} "
            f"| {human_number(m.agreement)} | {human_number(m.max_abs_error)} | {human_number(m.mean_abs_error)} | {human_number(m.cosine, 6)} "
            f"| {human_number(m.sqnr_db)} | {m.nonfinite} |"
        )
    lines += ["", "## Gates", "", "| figure | value | bar | passed |", "|---|---|---|---|"]
    for gate in report.gates:
        lines.append(f"| {gate.figure} | {human_number(gate.value)} | {gate.op} {human_number(gate.bar)} | {'yes' if gate.passed else '**no**'} |")
    if report.shape_checks:
        lines += ["", "## Extra shapes (random data)", "", "| shapes | ran | agreement | SQNR (dB) | error |",
                  "|---|---|---|---|---|"]
        for check in report.shape_checks:
            agreement = ", ".join(human_number(m.agreement) for m in check.outputs if m.agreement is not None) or "–"
            sqnr = ", ".join(human_number(m.sqnr_db) for m in check.outputs) or "–"
            lines.append(f"| {check.label} | {'yes' if check.ran else 'no'} | {agreement} | {sqnr} | {check.error or ''} |")
    for name, file_name in report.files.items():
        if name.startswith("histogram:"):
            lines += ["", f"![error histogram of {name[10:]}]({file_name})"]
    if "confidence_chart" in report.files:
        lines += ["", *confidence_markdown(report.confidence.curve(), report.files)]
    if report.per_layer is not None:
        lines += ["", *per_layer_markdown(report.per_layer)]
        if "per_layer_chart" in report.files:
            lines += ["", f"![SQNR by node]({report.files['per_layer_chart']})"]
    return "\n".join(lines) + "\n"


def per_layer_markdown(result) -> list[str]:
    lines = [
        "## Per-layer error",
        "",
        f"{result.format} candidate against its float parent `{result.parent}` on {result.samples} examples; "
        f"{result.matched_tensors} of {result.float_tensors} float tensors matched. Ranked by the node's own "
        "SQNR (the noise it adds to its worst input's); nodes fed by already damaged inputs come after.",
        "",
        "| rank | node | op | own SQNR (dB) | output SQNR (dB) | input SQNR (dB) | fused with | tensor |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for rank, layer in enumerate(result.worst, 1):
        lines.append(
            f"| {rank} | {layer.node} | {layer.op_type} | {human_number(layer.local_sqnr_db)} | {human_number(layer.sqnr_db)} "
            f"| {human_number(layer.input_sqnr_db)} | {', '.join(layer.nodes[:-1]) or '–'} | {layer.tensor} |"
        )
    return lines


def per_layer_text(result) -> str:
    """The worst nodes as plain text for the terminal."""
    rows = [f"worst nodes ({result.format}, {result.samples} examples; own SQNR = the noise the node adds):"]
    for rank, layer in enumerate(result.worst, 1):
        fused = f" with {', '.join(layer.nodes[:-1])}" if len(layer.nodes) > 1 else ""
        rows.append(f"  {rank:>2}. {layer.node} ({layer.op_type}{fused}): own SQNR {human_number(layer.local_sqnr_db)} dB, "
                    f"output {human_number(layer.sqnr_db)} dB")
    return "\n".join(rows)


def histogram_png(name: str, errors) -> bytes:
    import numpy as np

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    finite = errors[np.isfinite(errors)]
    if finite.size and np.any(finite != 0):
        ax.hist(finite, bins=80, color="#3b6ea8")
        ax.set_yscale("log")
    else:
        ax.text(0.5, 0.5, "no error" if finite.size else "no finite values", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_title(f"candidate − reference: {name}")
    ax.set_xlabel("error")
    ax.set_ylabel("count (log)")
    fig.tight_layout()
    return figure_png(fig)


def per_layer_png(result) -> bytes:
    from toolkit.validate.per_layer import CAP_DB

    plt = pyplot()
    layers = result.layers
    worst = {layer.node for layer in result.worst}
    values = [min(layer.sqnr_db, CAP_DB) if not math.isnan(layer.sqnr_db) else 0.0 for layer in layers]
    colors = ["#c0392b" if layer.node in worst else "#3b6ea8" for layer in layers]
    fig, ax = plt.subplots(figsize=(max(6, 0.3 * len(layers) + 2), 4))
    floor = min(0.0, *(v for v in values if math.isfinite(v))) - 10.0  # bars start below 0 dB: a 0 dB node shows
    values = [max(v, floor) if math.isfinite(v) else floor for v in values]
    ax.bar(range(len(layers)), [v - floor for v in values], bottom=floor, color=colors)
    ax.set_ylim(floor, CAP_DB + 5)
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels([layer.node for layer in layers], rotation=90, fontsize=6 if len(layers) > 30 else 8)
    ax.set_ylabel(f"SQNR (dB, capped at {CAP_DB:g})")
    ax.set_title("SQNR by node, graph order (red: worst)")
    fig.tight_layout()
    return figure_png(fig)


def npz_bytes(arrays: dict) -> bytes:
    import numpy as np

    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def confidence_markdown(curve: dict, files: dict) -> list[str]:
    examples = curve["examples"]
    against = "the labels" if curve["against"] == "labels" else "the reference's answers"
    lines = ["## Confidence", "",
             f"The candidate's top-1 probability on each of {examples} examples ({curve['output']}), and whether "
             f"it was right against {against}: `{files['confidence']}`. Sending the least confident requests to "
             "the cloud model (here the reference) trades the share served on the device for accuracy:", "",
             "| share on device | confidence at least | system accuracy |", "|---|---|---|"]
    rows = []
    for target in (1.0, 0.99, 0.95, 0.9, 0.8, 0.5, 0.0):
        point = min(curve["points"], key=lambda row: abs(row[1] / max(examples, 1) - target))
        threshold = "–" if point[0] is None else f"{point[0]:.4g}"
        rows.append(f"| {point[1] / max(examples, 1):.1%} | {threshold} | {system_accuracy(point, examples):.2%} |")
    return [*lines, *dict.fromkeys(rows), "", f"![share on device against system accuracy]({files['confidence_chart']})"]


def confidence_png(curve: dict) -> bytes:
    plt = pyplot()
    examples = max(curve["examples"], 1)
    shares = [row[1] / examples * 100 for row in curve["points"]]
    accuracy = [system_accuracy(row, examples) * 100 for row in curve["points"]]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(shares, accuracy, color="#3b6ea8", drawstyle="steps-post")
    ax.set_xlabel("share of requests served on the device (%)")
    ax.set_ylabel("system accuracy (%)")
    ax.set_title("route the least confident requests to the reference")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return figure_png(fig)
