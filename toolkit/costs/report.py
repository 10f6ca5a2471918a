"""Break-even reports: breakeven.md, breakeven.json, three PNG charts and a self-contained
breakeven.html (charts embedded as base64, no external assets, readable printed).

Markdown and HTML are built from the same tables (`sections`), so they cannot disagree.
Every string that came from the user is HTML-escaped.
"""

from __future__ import annotations

import base64
import os
import re
from decimal import Decimal
from pathlib import Path

from toolkit.costs import money as fmt
from toolkit.costs.model import DAYS_PER_MONTH

REPORT_FILES = ("breakeven.md", "breakeven.json", "breakeven.html", "cumulative.png", "monthly.png", "tornado.png")
LABELS = {
    "active_users": "active users (month 1)", "requests_per_user_per_day": "requests per user per day",
    "monthly_growth": "monthly growth", "on_device_share": "share served on device",
}


def render_reports(result) -> dict[str, bytes]:
    """Every report file's bytes, rendered in memory: a figure that cannot be shown fails here,
    before anything is written."""
    import json

    from toolkit.common.jsonable import json_default
    from toolkit.costs.charts import all_charts

    charts = all_charts(result)
    tables = sections(result)
    files = {f"{name}.png": png for name, png in charts.items()}
    files["breakeven.json"] = (json.dumps(result.to_dict(), indent=2, default=json_default) + "\n").encode()
    files["breakeven.md"] = markdown(result, tables).encode()
    files["breakeven.html"] = html_page(result, tables, charts).encode()
    return files


def write_reports(result, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write every report into out_dir: built whole in a staging folder beside it and swapped
    in, so the folder appears complete or not at all. Files of the folder's that are not
    reports (a caller's, kept with --force) are carried over."""
    import shutil

    from toolkit.artifacts import staged_folder

    files = render_reports(result)
    out_dir = Path(out_dir)
    with staged_folder(out_dir, force=True) as stage:
        if out_dir.is_dir():
            for item in out_dir.iterdir():
                if item.name not in files and not item.name.startswith("."):
                    (shutil.copytree if item.is_dir() else shutil.copy2)(item, stage / item.name)
        for name, data in files.items():
            (stage / name).write_bytes(data)
    keys = {"breakeven.json": "json", "breakeven.md": "md", "breakeven.html": "html"}
    return {keys.get(name, name.replace(".png", "_png")): out_dir.absolute() / name for name in files}


# ---------------------------------------------------------------- shared content


def headline(result) -> str:
    month = result.breakeven_month
    if month is None:
        return f"The on-device option never breaks even: {result.reason}."
    if month == 0:
        return f"The on-device option is cheaper from the start: {result.reason}."
    return f"The on-device option breaks even after {fmt.months(month)}: {result.reason}."


def summary_line(result) -> str:
    scenario = result.scenario
    share = fmt.percent(result.effective_share)
    if result.effective_share != result.inputs.on_device_share:
        share += f" (of {fmt.percent(result.inputs.on_device_share)} planned; the rest miss the latency budget)"
    rate = result.inputs.discount_rate
    money_note = f"; costs discounted at {fmt.percent(rate)} a year (present values)" if rate else ""
    return (f"Cloud: {scenario.cloud_label}. On device: {scenario.edge_label}, {share} of requests. "
            f"Horizon {result.months} months of 30 days; currency {result.currency}{money_note}.")


def sections(result) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) tables, in reading order."""
    money = lambda value: fmt.money(value, result.currency)  # noqa: E731
    unit = lambda value: fmt.unit_cost(value, result.currency)  # noqa: E731
    price = lambda value: fmt.price(value, result.currency)  # noqa: E731
    first = result.rows[0]
    per_1k = result.per_1k
    share = fmt.percent(result.effective_share)
    one_off = sum(result.one_off.values(), Decimal(0))
    key = [
        ["Break-even", fmt.months(result.breakeven_month)],
        ["Requests per day (month 1)", fmt.count(first.requests / DAYS_PER_MONTH)],
        ["Cloud only, per day (month 1)", money(first.cloud_only / DAYS_PER_MONTH)],
        ["Cloud only, month 1", money(first.cloud_only)],
        [f"On device ({share}), month 1", money(first.edge_total)],
        ["Monthly saving, month 1", money(first.cloud_only - first.edge_total)],
        ["One-off cost of the on-device option", money(one_off)],
        ["Cost per 1,000 requests: cloud only", unit(per_1k["cloud"])],
        [f"Cost per 1,000 requests: on device ({share})", unit(per_1k["edge"])],
        ["Cost per 1,000 requests served on the device", unit(per_1k["on_device"])],
        [f"Cost per 1,000 requests over {result.months} months, one-off included: cloud / on device",
         f"{unit(per_1k['cloud_over_horizon'])} / {unit(per_1k['edge_over_horizon'])}"],
    ]
    key += [[f"Savings after {m} months", money(v)] for m, v in result.savings.items()]
    if result.inputs.energy_paid_by_user and first.user_energy:
        key.append(["Energy the users pay for, month 1 (not in the costs above)", money(first.user_energy)])
    one_off_rows = [[name.replace("_", " "), money(value)] for name, value in result.one_off.items()]
    one_off_rows.append(["total", money(one_off)])
    tables = [
        ("Key figures", ["", ""], key),
        ("One-off cost of the on-device option", ["item", "cost"], one_off_rows),
        ("Costs by month", _month_header(result), _month_rows(result, money)),
        ("Devices", ["", ""], _fleet_rows(result)),
        ("Device capacity", ["", ""], _capacity_rows(result)),
        ("Sensitivity of the break-even month (each input ±50%, the rest unchanged)",
         ["input", "base", "−50%", "break-even", "+50%", "break-even"], _sensitivity_rows(result, price)),
        ("Inputs and where they came from", ["input", "value", "source"], _input_rows(result, price)),
    ]
    entries = result.scenario.entries
    if entries:
        tables.append(("Catalogue prices used", ["entry", "as of", "from", "source"],
                       [[f"{e.name}: {e.title}", e.as_of + (" (over 18 months old)" if e.stale else ""),
                         "builtin" if e.origin == "builtin" else f"your catalogue {e.origin}", e.source]
                        for e in entries]))
    return tables


def _month_header(result) -> list[str]:
    header = ["month", "requests", "cloud only", "on device", "cumulative cloud", "cumulative on device", "saving"]
    if result.inputs.cloud_mode == "instances":
        header[3:3] = ["instances"]
    return header


def _month_rows(result, money) -> list[list[str]]:
    rows = result.horizon
    shown = rows if len(rows) <= 60 else [row for row in rows if row.month % 12 == 0 or row.month == 1]
    table = []
    for row in shown:
        cells = [str(row.month), fmt.count(row.requests), money(row.cloud_only), money(row.edge_total),
                 money(row.cumulative_cloud), money(row.cumulative_edge),
                 money(row.cumulative_cloud - row.cumulative_edge)]
        if result.inputs.cloud_mode == "instances":
            cells[3:3] = [f"{row.cloud_only_instances} / {row.edge_instances}"]
        table.append(cells)
    return table


def _fleet_rows(result) -> list[list[str]]:
    fleet = result.devices
    rows = [["devices in month 1", fmt.count(fleet["first"])],
            [f"devices in month {result.months}", fmt.count(fleet["last"])],
            ["how the count is set", fleet["how"]]]
    if fleet["sized"] == "traffic":
        rows.append(["latency behind it", fleet["latency"]])
    if result.inputs.latency_budget_ms is not None:
        rows.append(["share served within the latency budget",
                     f"{fmt.percent(result.effective_share / result.inputs.on_device_share) if result.inputs.on_device_share else '—'}"
                     f" (budget {_rate(result.inputs.latency_budget_ms)} ms)"])
    for name, value in result.alternatives.items():
        rows.append([f"cloud only, month 1, {name.removeprefix('cloud_only_')} instead", fmt.money(value, result.currency)])
    return rows


def _capacity_rows(result) -> list[list[str]]:
    capacity = result.capacity
    if not capacity["checked"]:
        return [["checked", f"no: {capacity['why']}"]]
    return [
        ["requests per device per day", fmt.count(capacity["requests_per_device_per_day"])],
        ["peak requests per second per device", _rate(capacity["peak_requests_per_s"])],
        ["inferences per second one device can serve", f"{_rate(capacity['max_requests_per_s'])} "
                                                        f"(latency {_rate(capacity['latency_ms'])} ms)"],
        ["busy at peak", fmt.percent(capacity["peak_busy_fraction"])],
        ["verdict", "keeps up" if capacity["ok"] else "cannot keep up"],
    ]


def _rate(value) -> str:
    number = float(value)
    return f"{number:,.0f}" if number >= 1000 else f"{number:.4g}"


def _value(name: str, value, money) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool | str):
        return str(value).lower() if isinstance(value, bool) else value
    if isinstance(value, tuple):
        from toolkit.costs.pricing import Tier, tier_text

        if value and isinstance(value[0], Tier):
            return tier_text(value)
        return ", ".join(fmt.count(item) for item in value)
    if name in ("monthly_growth", "on_device_share", "utilisation", "small_model_share", "discount_rate"):
        return fmt.percent(value)
    if name.startswith(("price", "small_price")) or name in ("fee_per_device_per_month", "hourly_rate", "hardware_per_device", "egress_per_gb",
                                             "electricity_per_kwh", "upkeep_per_month"):
        return money(value)
    return fmt.count(value)


def _sensitivity_rows(result, money) -> list[list[str]]:
    return [[LABELS.get(s.name, s.name.replace("_", " ")) + (" (clamped)" if s.notes else ""),
             _value(s.name, s.base_value, money), _value(s.name, s.low_value, money), fmt.months(s.low_month),
             _value(s.name, s.high_value, money), fmt.months(s.high_month)] for s in result.sensitivity]


def _input_rows(result, money) -> list[list[str]]:
    sources = result.scenario.sources
    rows = []
    from toolkit.costs.sensitivity import API_ONLY, INSTANCE_ONLY

    hidden = {"currency"} | (INSTANCE_ONLY - {"peak_to_average"} if result.inputs.cloud_mode == "api" else
                             API_ONLY - {"tokens_in_per_request", "tokens_out_per_request"})
    for name in result.inputs.__dataclass_fields__:
        value = getattr(result.inputs, name)
        if name in hidden and name not in sources:
            continue
        if name == "devices" and value is None:
            rows.append([name, "one per active user", "default: phones the users own"])
            continue
        if name in sources or value not in (None, 0, False):
            rows.append([LABELS.get(name, name.replace("_", " ")), _value(name, value, money),
                         sources.get(name, "default")])
    return rows


# ---------------------------------------------------------------- Markdown


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(result, tables) -> str:
    scenario = result.scenario
    lines = [f"# Break-even: {_md_cell(scenario.name)}", ""]
    if scenario.description:
        lines += [_md_cell(scenario.description), ""]
    lines += [f"**{_md_cell(headline(result))}**", "", _md_cell(summary_line(result)), ""]
    lines += [f"> **Warning:** {_md_cell(text)}" for text in result.warnings] + ([""] if result.warnings else [])
    lines += [
              "![Cumulative cost](cumulative.png)", "", "![Monthly cost](monthly.png)", "",
              "![Sensitivity](tornado.png)", ""]
    for title, header, rows in tables:
        lines += [f"## {title}", "", "| " + " | ".join(_md_cell(h) for h in header) + " |",
                  "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(_md_cell(cell) for cell in row) + " |" for row in rows]
        lines.append("")
    if result.notes:
        lines += ["## Notes", ""] + [f"- {_md_cell(note)}" for note in result.notes] + [""]
    lines += ["## How it is computed", "", *[f"- {line}" for line in FORMULAS], ""]
    return "\n".join(lines)


FORMULAS = (
    "a month is 30 days (720 hours); users in month m = active users × (1 + growth)^(m − 1)",
    "requests in month m = users × requests per user per day × 30",
    "API: cost = requests × (price per request + tokens in × input price + tokens out × output price + "
    "minutes × price per minute)",
    "instances: max(minimum, ceil(peak requests/s ÷ (throughput × utilisation))) × price per hour × 720; "
    "peak = average × peak-to-average; idle capacity is paid",
    "on device: one-off engineering hours × rate + hardware per device + first model download; monthly: the "
    "routed share at cloud prices + model updates (devices × size × updates per year ÷ 12 × egress) + energy "
    "(latency × power × electricity price, unless users pay it) + hardware for new devices + upkeep",
    "break-even: the first time the on-device cumulative cost is at or below the cloud's, costs accruing "
    "evenly within a month (linear interpolation)",
)


# ---------------------------------------------------------------- HTML

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d1d1f;margin:0;background:#f6f7f9}
main{max-width:960px;margin:0 auto;padding:24px 28px 48px;background:#fff}
h1{font-size:26px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #e3e5e8;padding-bottom:4px}
.lead{font-size:18px;font-weight:600;margin:14px 0;padding:12px 16px;border-radius:6px;background:#eef6ee;border-left:5px solid #3c9a4a}
.lead.never{background:#fbeeee;border-left-color:#d9534f}
.meta{color:#555;font-size:13px}
.warn{margin:6px 0;padding:8px 12px;border-radius:6px;background:#fff6e0;border-left:5px solid #e0a000}
table{border-collapse:collapse;width:100%;font-size:13px;margin:6px 0}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eceef1;vertical-align:top}
th{background:#f2f4f7;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
figure{margin:10px 0;text-align:center}figure img{max-width:100%;height:auto}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(170px,1fr));gap:10px;margin:12px 0}
.card{border:1px solid #e3e5e8;border-radius:6px;padding:10px 12px}.card b{display:block;font-size:20px}
.card span{color:#555;font-size:12px}
ul.notes li{margin:2px 0}footer{color:#777;font-size:12px;margin-top:30px}
@media print{body{background:#fff;font-size:11pt}main{max-width:none;padding:0}
h2{break-after:avoid}figure,table,.card{break-inside:avoid}tr{break-inside:avoid}
.cards{grid-template-columns:repeat(3,1fr)}a{color:inherit;text-decoration:none}}
@page{size:A4;margin:14mm}
"""


_NUMBER = re.compile(r"^(?:-?(?:[$€£¥]|[A-Z]{3} )?[0-9][0-9,.]*(?:e-?[0-9]+)?[KMB%]?(?: months?)?(?: / )?)+$|^never$")


def _is_number(text: str) -> bool:
    return bool(_NUMBER.match(text.strip()))


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Break-even: {{ scenario.name }}</title><style>{{ css | safe }}</style></head><body><main>
<h1>Break-even: {{ scenario.name }}</h1>
{% if scenario.description %}<p class="meta">{{ scenario.description }}</p>{% endif %}
<p class="meta">{{ summary }}</p>
<p class="lead{{ ' never' if never }}">{{ headline }}</p>
{% for text in warnings %}<p class="warn">{{ text }}</p>
{% endfor %}<div class="cards">{% for value, label in cards %}<div class="card"><b>{{ value }}</b><span>{{ label }}</span></div>{% endfor %}</div>
{% for name, alt, data in figures %}<figure><img alt="{{ alt }}" src="data:image/png;base64,{{ data }}"></figure>
{% endfor %}{% for title, header, rows in tables %}<h2>{{ title }}</h2><table>{% if header | select | list %}<thead><tr>{% for cell in header %}<th>{{ cell }}</th>{% endfor %}</tr></thead>{% endif %}<tbody>
{% for row in rows %}<tr>{% for cell in row %}<td{% if loop.index0 and is_number(cell | string) %} class="num"{% endif %}>{{ cell }}</td>{% endfor %}</tr>
{% endfor %}</tbody></table>
{% endfor %}{% if notes %}<h2>Notes</h2><ul class="notes">{% for note in notes %}<li>{{ note }}</li>{% endfor %}</ul>{% endif %}
<h2>How it is computed</h2><ul class="notes">{% for line in formulas %}<li>{{ line }}</li>{% endfor %}</ul>
<footer>Generated by Edgeward (edgeward breakeven). Every price carries its source and date above; check them before deciding.</footer></main></body></html>
"""


def html_page(result, tables, charts: dict[str, bytes]) -> str:
    """The self-contained page, rendered by Jinja2 with autoescape on: every string from the
    scenario, the catalogue or a bench file is escaped."""
    from jinja2 import Environment

    money = lambda value: fmt.money(value, result.currency)  # noqa: E731
    first = result.rows[0]
    cards = [
        (fmt.months(result.breakeven_month), "break-even"),
        (money(first.cloud_only), "cloud only, month 1"),
        (money(first.edge_total), f"on device ({fmt.percent(result.effective_share)}), month 1"),
        (money(sum(result.one_off.values(), Decimal(0))), "one-off cost on device"),
    ] + [(money(value), f"saving after {month} months") for month, value in result.savings.items()]
    figures = [(name, alt, base64.b64encode(charts[name]).decode())
               for name, alt in (("cumulative", "Cumulative cost of each option by month"),
                                 ("monthly", "Monthly cost of each option"),
                                 ("tornado", "Sensitivity of the break-even month")) if name in charts]
    environment = Environment(autoescape=True, keep_trailing_newline=True)
    return environment.from_string(PAGE).render(
        scenario=result.scenario, css=CSS, summary=summary_line(result), never=result.breakeven_month is None,
        headline=headline(result), warnings=result.warnings, cards=cards, figures=figures, tables=tables,
        notes=result.notes, formulas=FORMULAS, is_number=_is_number)
