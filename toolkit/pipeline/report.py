"""The pipeline's one HTML page: a summary table and a link to every stage's report.

Self-contained (no external assets); every string that came from a model, a recipe or
a file name is HTML-escaped.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

from toolkit.artifacts import atomic_write_text
from toolkit.common.units import human_bytes, human_months, human_ms, human_percent

STYLE = """
body{font-family:system-ui,sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;color:#1a1a1a}
table{border-collapse:collapse;width:100%;margin:1em 0}th,td{border:1px solid #ccc;padding:.35em .6em;text-align:left}
th{background:#f2f2f2}td{white-space:nowrap}td.num{text-align:right;font-variant-numeric:tabular-nums}
p.answer{font-size:1.1em;border-left:4px solid #176b2c;padding:.4em .8em;background:#f6fbf7}
.pass{color:#176b2c;font-weight:600}.fail{color:#a11;font-weight:600}.muted{color:#666}
@media print{a{color:inherit;text-decoration:none}body{margin:0}}
"""


def _cell(value, fmt=str, css="") -> str:
    text = "—" if value is None else fmt(value)
    klass = f' class="{css}"' if css else ""
    return f"<td{klass}>{html.escape(text)}</td>"


def _link(target: str | None, base: Path, label: str) -> str:
    if not target or not Path(target).exists():
        return html.escape(label)
    relative = os.path.relpath(target, base)
    return f'<a href="{html.escape(relative, quote=True)}">{html.escape(label)}</a>'


def summary_table_html(rows: list[dict]) -> str:
    devices = sorted({device for row in rows for device in (row.get("estimated_p50_ms") or {})})
    estimate_heads = "".join(f"<th>{html.escape(d)} (estimate)</th>" for d in devices)
    head = "<tr><th>model</th><th>format</th><th>mode</th><th>size</th><th>accuracy</th><th>drop (pts)</th>" \
           f"<th>gates</th><th>p50 latency (measured)</th>{estimate_heads}<th>priced on</th><th>on device</th>" \
           "<th>system accuracy</th><th>per 1,000 requests</th><th>break-even</th></tr>"
    body = []
    for row in rows:
        passed = row.get("passed")
        verdict = "—" if passed is None else ("pass" if passed else "fail")
        body.append(
            "<tr>" + _cell(row["model"]) + _cell(row.get("format")) + _cell(row.get("mode"))
            + _cell(row.get("size_bytes"), human_bytes, "num")
            + _cell(row.get("accuracy"), lambda a: f"{a * 100:.2f}%", "num")
            + _cell(row.get("drop"), lambda d: f"{d:.2f}", "num")
            + f'<td class="{verdict}">{verdict}</td>'
            + _cell(row.get("p50_ms"), human_ms, "num")
            + "".join(_cell((row.get("estimated_p50_ms") or {}).get(d), human_ms, "num")
                      for d in devices)
            + _cell(row.get("priced_device")) + _cell(row.get("on_device_share"), human_percent, "num")
            + _cell(row.get("system_accuracy"), lambda a: f"{a * 100:.2f}%", "num")
            + _cell(row.get("cost_per_1k"), lambda c: f"{c:.4g}", "num")
            + _cell(row.get("breakeven_month"), lambda m: f"{m:.2f} months", "num") + "</tr>"
        )
    return f"<table>{head}{''.join(body)}</table>"


def write_index(path: Path, recipe, rows, steps, done, records) -> Path:
    base = path.parent
    status = {record["step"]: record for record in records}
    stage_rows = []
    for step in steps:
        summary = done.get(step.name) or {}
        target = _report_target(step, summary)
        record = status.get(step.name, {})
        stage_rows.append(
            f"<tr><td>{html.escape(step.stage)}</td><td>{_link(target, base, step.name)}</td>"
            f"<td>{html.escape(record.get('status', ''))}</td>"
            f"<td class=num>{html.escape(str(record.get('seconds', '')))}</td></tr>"
        )
    breakeven = done.get("breakeven") or {}
    headline = ""
    if breakeven:
        reports = breakeven.get("reports") or {}
        month = human_months(breakeven.get("breakeven_month"))
        chosen = f"{breakeven.get('chosen_model') or '—'} on {breakeven.get('chosen_device') or '—'}"
        sentence = breakeven.get("recommendation") or ""
        headline = (f'<p class="answer">{html.escape(sentence)}</p>'
                    f"<p>Break-even of <b>{html.escape(chosen)}</b>: <b>{html.escape(month)}</b> "
                    f"({_link(reports.get('html'), base, 'its break-even report')}); every variant on every device "
                    f"priced is ranked in {_link(reports.get('plan_html'), base, 'the plan')}.</p>")
    distill = done.get("distill") or {}
    distill_html = ""
    if distill:
        distill_html = (
            "<h2>Distillation</h2><table><tr><th></th><th>parameters</th><th>accuracy on validation data</th></tr>"
            + "<tr><td>teacher</td>" + _cell(distill.get("teacher_parameters"), lambda n: f"{n:,}", "num")
            + _cell(distill.get("teacher_accuracy"), lambda a: f"{a * 100:.2f}%", "num") + "</tr>"
            + "<tr><td>student</td>" + _cell(distill.get("student_parameters"), lambda n: f"{n:,}", "num")
            + _cell(distill.get("student_accuracy"), lambda a: f"{a * 100:.2f}%", "num") + "</tr></table>"
        )
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Edgeward report: {html.escape(recipe.name)}</title><style>{STYLE}</style></head><body>
<h1>Edgeward report: {html.escape(recipe.name)}</h1>
<p class="muted">Source <code>{html.escape(recipe.source)}</code>. Every figure below was measured in this run
or read from the cached artifact of an earlier run with the same inputs; estimates are marked.</p>
{headline}
<h2>Summary</h2>
<p class="muted">Accuracy and drop are against the reference (the teacher) on the validation data; the
estimate columns are rooflines from the device profiles, not measurements. The last columns are each model's
best option in the plan: the share of requests it answers on the device (its least confident go to the cloud
model), the accuracy of device and cloud together, the cost per 1,000 requests over the scenario's horizon
(one-off included) and the break-even month.</p>
{summary_table_html(rows)}
{distill_html}
<h2>Stages</h2>
<table><tr><th>stage</th><th>step (report)</th><th>status</th><th>seconds</th></tr>{''.join(stage_rows)}</table>
</body></html>
"""
    atomic_write_text(path, page)
    return path


def _report_target(step, summary: dict) -> str | None:
    if step.stage == "validate":
        return summary.get("report")
    if step.stage in ("bench", "estimate"):
        return summary.get("bench_json")
    if step.stage == "breakeven":
        reports = summary.get("reports") or {}
        return reports.get("plan_html") or reports.get("html")
    folder = step.folder / "manifest.json"
    return str(folder) if folder.exists() else str(step.folder)
