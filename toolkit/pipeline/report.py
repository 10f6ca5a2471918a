"""The pipeline's one HTML page: a summary table and a link to every stage's report.

Self-contained (no external assets), rendered by Jinja2 with autoescape: every string that
came from a model, a recipe or a file name reaches the page as text.
"""

from __future__ import annotations

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

MACROS = """
{%- macro cell(c) -%}<td{% if c.css %} class="{{ c.css }}"{% endif %}>{{ c.text }}</td>{%- endmacro -%}
{%- macro link(l) -%}{% if l.href %}<a href="{{ l.href }}">{{ l.label }}</a>{% else %}{{ l.label }}{% endif %}{%- endmacro -%}
"""

TABLE = MACROS + """<table><tr><th>model</th><th>format</th><th>mode</th><th>size</th><th>accuracy</th>
<th>drop (pts)</th><th>gates</th><th>p50 latency (measured)</th>
{%- for device in devices %}<th>{{ device }} (estimate)</th>{% endfor -%}
<th>priced on</th><th>on device</th><th>system accuracy</th><th>per 1,000 requests</th><th>break-even</th></tr>
{%- for row in rows %}<tr>{% for c in row %}{{ cell(c) }}{% endfor %}</tr>{% endfor %}</table>"""

PAGE = MACROS + """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Edgeward report: {{ name }}</title><style>{{ style }}</style></head><body>
<h1>Edgeward report: {{ name }}</h1>
<p class="muted">Source <code>{{ source }}</code>. Every figure below was measured in this run
or read from the cached artifact of an earlier run with the same inputs; estimates are marked.</p>
{% if breakeven %}<p class="answer">{{ breakeven.sentence }}</p>
<p>Break-even of <b>{{ breakeven.chosen }}</b>: <b>{{ breakeven.month }}</b> ({{ link(breakeven.report) }});
every variant on every device priced is ranked in {{ link(breakeven.plan) }}.</p>{% endif %}
<h2>Summary</h2>
<p class="muted">Accuracy and drop are against the reference (the teacher) on the validation data; the
estimate columns are rooflines from the device profiles, not measurements. The last columns are each model's
best option in the plan: the share of requests it answers on the device (its least confident go to the cloud
model), the accuracy of device and cloud together, the cost per 1,000 requests over the scenario's horizon
(one-off included) and the break-even month.</p>
{{ table }}
{% if distill %}<h2>Distillation</h2><table><tr><th></th><th>parameters</th><th>accuracy on validation data</th></tr>
{% for row in distill %}<tr>{% for c in row %}{{ cell(c) }}{% endfor %}</tr>{% endfor %}</table>{% endif %}
<h2>Stages</h2>
<table><tr><th>stage</th><th>step (report)</th><th>status</th><th>seconds</th></tr>
{%- for s in stages %}<tr><td>{{ s.stage }}</td><td>{{ link(s.link) }}</td><td>{{ s.status }}</td>
<td class=num>{{ s.seconds }}</td></tr>{% endfor %}</table>
</body></html>
"""


def _environment():
    from jinja2 import Environment

    return Environment(autoescape=True)


def _cell(value, fmt=str, css="") -> dict:
    return {"text": "—" if value is None else fmt(value), "css": css}


def _link(target: str | None, base: Path, label: str) -> dict:
    if not target or not Path(target).exists():
        return {"href": None, "label": label}
    return {"href": os.path.relpath(target, base), "label": label}


def _percent(value: float) -> str:
    return f"{value * 100:.2f}%"


def summary_table_html(rows: list[dict]) -> str:
    devices = sorted({device for row in rows for device in (row.get("estimated_p50_ms") or {})})
    cells = []
    for row in rows:
        passed = row.get("passed")
        verdict = "—" if passed is None else ("pass" if passed else "fail")
        cells.append(
            [_cell(row["model"]), _cell(row.get("format")), _cell(row.get("mode")),
             _cell(row.get("size_bytes"), human_bytes, "num"), _cell(row.get("accuracy"), _percent, "num"),
             _cell(row.get("drop"), lambda d: f"{d:.2f}", "num"), {"text": verdict, "css": verdict},
             _cell(row.get("p50_ms"), human_ms, "num")]
            + [_cell((row.get("estimated_p50_ms") or {}).get(d), human_ms, "num") for d in devices]
            + [_cell(row.get("priced_device")), _cell(row.get("on_device_share"), human_percent, "num"),
               _cell(row.get("system_accuracy"), _percent, "num"),
               _cell(row.get("cost_per_1k"), lambda c: f"{c:.4g}", "num"),
               _cell(row.get("breakeven_month"), lambda m: f"{m:.2f} months", "num")]
        )
    return _environment().from_string(TABLE).render(devices=devices, rows=cells)


def write_index(path: Path, recipe, rows, steps, done, records) -> Path:
    from markupsafe import Markup

    base = path.parent
    status = {record["step"]: record for record in records}
    stages = []
    for step in steps:
        record = status.get(step.name, {})
        stages.append({"stage": step.stage, "link": _link(_report_target(step, done.get(step.name) or {}), base, step.name),
                       "status": record.get("status", ""), "seconds": str(record.get("seconds", ""))})
    breakeven = done.get("breakeven") or {}
    headline = None
    if breakeven:
        reports = breakeven.get("reports") or {}
        headline = {
            "sentence": breakeven.get("recommendation") or "",
            "chosen": f"{breakeven.get('chosen_model') or '—'} on {breakeven.get('chosen_device') or '—'}",
            "month": human_months(breakeven.get("breakeven_month")),
            "report": _link(reports.get("html"), base, "its break-even report"),
            "plan": _link(reports.get("plan_html"), base, "the plan"),
        }
    distill = done.get("distill") or {}
    distill_rows = []
    if distill:
        for who in ("teacher", "student"):
            distill_rows.append([_cell(who), _cell(distill.get(f"{who}_parameters"), lambda n: f"{n:,}", "num"),
                                 _cell(distill.get(f"{who}_accuracy"), _percent, "num")])
    source = ", ".join(recipe.sweep.values()) if recipe.sweep else recipe.source  # a sweep names every source
    page = _environment().from_string(PAGE).render(
        name=recipe.name, source=source, style=Markup(STYLE), breakeven=headline,  # noqa: S704 - our own CSS
        table=Markup(summary_table_html(rows)), distill=distill_rows, stages=stages)  # noqa: S704 - rendered escaped above
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
