"""Write a language-model validation report: report.json and report.md (the figures come from toolkit.lm.validate)."""

from __future__ import annotations

from pathlib import Path

from toolkit.artifacts import atomic_write_json, atomic_write_text
from toolkit.common.units import human_number
from toolkit.errors import BadInput


def write_lm_report(report, out_dir: Path) -> dict[str, str]:
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise BadInput(f"{out_dir} exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    report.files = {"json": "report.json", "markdown": "report.md"}
    if report.per_layer is not None and report.per_layer.layers:
        from toolkit.artifacts import atomic_write_bytes
        from toolkit.validate.report import per_layer_png

        atomic_write_bytes(out_dir / "per_layer_sqnr.png", per_layer_png(report.per_layer))
        report.files["per_layer_chart"] = "per_layer_sqnr.png"
    atomic_write_json(out_dir / "report.json", report.to_dict())
    atomic_write_text(out_dir / "report.md", markdown(report))
    return report.files


def markdown(report) -> str:
    figures = report.figures()
    lines = [
        f"# Language-model validation: {'PASSED' if report.passed else 'FAILED'}",
        "",
        f"- candidate: `{report.candidate}` ({report.candidate_kind})",
        f"- reference: `{report.reference}` ({report.reference_kind})",
        f"- data: `{report.data}`: {report.windows} windows of up to {report.max_length} tokens, "
        f"{report.positions} positions, {report.predicted} next tokens predicted",
        "",
        "## Figures",
        "",
        "| figure | value |",
        "|---|---|",
        f"| perplexity, candidate | {human_number(figures['candidate_perplexity'])} |",
        f"| perplexity, reference | {human_number(figures['reference_perplexity'])} |",
        f"| perplexity ratio | {human_number(figures['perplexity_ratio'])} |",
        f"| next-token top-1 agreement | {human_number(figures['top1_agreement'])} |",
        f"| mean KL(reference ‖ candidate) | {human_number(figures['mean_kl'])} |",
        f"| greedy exact match, mean tokens (of {report.max_new_tokens}) "
        f"| {human_number(figures['greedy_mean_match_tokens'])} |",
        f"| greedy continuations matching fully | {human_number(figures['greedy_full_match_share'])} |",
        "",
        "## Gates",
        "",
        "| figure | value | bar | passed |",
        "|---|---|---|---|",
    ]
    for gate in report.gates:
        lines.append(f"| {gate.figure} | {human_number(gate.value)} | {gate.op} {human_number(gate.bar)} "
                     f"| {'yes' if gate.passed else '**no**'} |")
    if report.prompts:
        lines += ["", "## Greedy continuations", "", "| prompt tokens | match | reference | candidate |",
                  "|---|---|---|---|"]
        for match in report.prompts:
            lines.append(f"| {match.prompt_tokens} | {match.match_length}/{match.new_tokens} "
                         f"| {_cell(match.reference_text)} | {_cell(match.candidate_text)} |")
    if report.per_layer is not None:
        from toolkit.lm.per_layer import per_layer_markdown

        lines += ["", *per_layer_markdown(report.per_layer)]
        if "per_layer_chart" in report.files:
            lines += ["", f"![SQNR by layer]({report.files['per_layer_chart']})"]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:200]


def summary_text(report, out_dir=None) -> str:
    """The terminal summary (the command prints it)."""
    figures = report.figures()
    lines = [
        f"{report.candidate} vs {report.reference} on {report.data} "
        f"({report.positions} positions in {report.windows} windows of up to {report.max_length} tokens)",
        f"  perplexity {human_number(figures['candidate_perplexity'])} vs "
        f"{human_number(figures['reference_perplexity'])} (ratio {human_number(figures['perplexity_ratio'])})",
        f"  next-token top-1 agreement {human_number(figures['top1_agreement'])}, "
        f"mean KL {human_number(figures['mean_kl'])}",
    ]
    if report.prompts:
        fully = sum(match.full for match in report.prompts)
        lines.append(f"  greedy: {human_number(figures['greedy_mean_match_tokens'])} of {report.max_new_tokens} "
                     f"tokens match on average, {fully} of {len(report.prompts)} continuations fully")
    for gate in report.gates:
        lines.append(f"  [{'pass' if gate.passed else 'FAIL'}] {gate.describe()}")
    if report.per_layer is not None:
        from toolkit.lm.per_layer import per_layer_text

        lines.append(per_layer_text(report.per_layer))
    if out_dir:
        lines.append(f"report: {Path(out_dir) / 'report.md'}")
    lines.append("PASSED" if report.passed else "FAILED")
    return "\n".join(lines)
