"""Break-even reports: breakeven.md, breakeven.json, three PNG charts and a self-contained
breakeven.html (charts embedded as base64, no external assets, readable printed).

Markdown and HTML are built from the same tables (`sections`), so they cannot disagree.
Every string that came from the user is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import os
import re
from decimal import Decimal
from pathlib import Path

from toolkit.artifacts import atomic_write_bytes, atomic_write_json, atomic_write_text
from toolkit.costs import money as fmt
from toolkit.costs.model import DAYS_PER_MONTH

REPORT_FILES = ("breakeven.md", "breakeven.json", "breakeven.html", "cumulative.png", "monthly.png", "tornado.png")
LABELS = {
    "active_users": "active users (month 1)", "requests_per_user_per_day": "requests per user per day",
    "monthly_growth": "monthly growth", "on_device_share": "share served on device",
}


def write_reports(result, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write every report into out_dir (created if needed; each file replaced atomically)."""
    from toolkit.costs.charts import all_charts

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    charts = all_charts(result)
    paths = {}
    for name, png in charts.items():
        paths[f"{name}_png"] = atomic_write_bytes(out_dir / f"{name}.png", png)
    data = result.to_dict()
    paths["json"] = atomic_write_json(out_dir / "breakeven.json", data)
    tables = sections(result)
    paths["md"] = atomic_write_text(out_dir / "breakeven.md", markdown(result, tables))
    paths["html"] = atomic_write_text(out_dir / "breakeven.html", html_page(result, tables, charts))
    return paths


# ---------------------------------------------------------------- shared content


def headline(result) -> str:
    month = result.breakeven_month
    if month is None:
        return f"The on-device option never breaks even: {result.reason}."
    if month == 0:
        return f"The on-device option is cheaper from the start: {result.reason}."
    return f"The on-device option breaks even after {fmt.months(month)}: {result.reason}."


def sections(result) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) tables, in reading order."""
    money = lambda value: fmt.money(value, result.currency)  # noqa: E731
    unit = lambda value: fmt.unit_cost(value, result.currency)  # noqa: E731
    price = lambda value: fmt.price(value, result.currency)  # noqa: E731
    first = result.rows[0]
    per_1k = result.per_1k
    share = fmt.percent(result.inputs.on_device_share)
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
        ("Device capacity", ["", ""], _capacity_rows(result)),
        ("Sensitivity of the break-even month (each input ±50%, the rest unchanged)",
         ["input", "base", "−50%", "break-even", "+50%", "break-even"], _sensitivity_rows(result, price)),
        ("Inputs and where they came from", ["input", "value", "source"], _input_rows(result, price)),
    ]
    entries = result.scenario.entries
    if entries:
        tables.append(("Catalogue prices used", ["entry", "as of", "source"],
                       [[f"{e.name}: {e.title}", e.as_of, e.source] for e in entries]))
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
    if name in ("monthly_growth", "on_device_share", "utilisation"):
        return fmt.percent(value)
    if name.startswith("price") or name in ("hourly_rate", "hardware_per_device", "egress_per_gb",
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
    from toolkit.costs.model import API_ONLY, INSTANCE_ONLY

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
    lines += [f"**{_md_cell(headline(result))}**", "",
              f"Cloud: {_md_cell(scenario.cloud_label)}. On device: {_md_cell(scenario.edge_label)}, "
              f"{fmt.percent(result.inputs.on_device_share)} of requests. Horizon {result.months} months of 30 days; "
              f"currency {result.currency}.", "",
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


def _e(text) -> str:
    return html.escape(str(text), quote=True)


_NUMBER = re.compile(r"^(?:-?(?:[$€£¥]|[A-Z]{3} )?[0-9][0-9,.]*(?:e-?[0-9]+)?[KMB%]?(?: months?)?(?: / )?)+$|^never$")


def _is_number(text: str) -> bool:
    return bool(_NUMBER.match(text.strip()))


def _html_table(header, rows) -> str:
    head = "".join(f"<th>{_e(cell)}</th>" for cell in header) if any(header) else ""
    body = "".join("<tr>" + "".join(
        f"<td class=\"num\">{_e(cell)}</td>" if index and _is_number(str(cell)) else f"<td>{_e(cell)}</td>"
        for index, cell in enumerate(row)) + "</tr>" for row in rows)
    return f"<table>{'<thead><tr>' + head + '</tr></thead>' if head else ''}<tbody>{body}</tbody></table>"


def html_page(result, tables, charts: dict[str, bytes]) -> str:
    scenario = result.scenario
    money = lambda value: fmt.money(value, result.currency)  # noqa: E731
    first = result.rows[0]
    cards = [
        (fmt.months(result.breakeven_month), "break-even"),
        (money(first.cloud_only), "cloud only, month 1"),
        (money(first.edge_total), f"on device ({fmt.percent(result.inputs.on_device_share)}), month 1"),
        (money(sum(result.one_off.values(), Decimal(0))), "one-off cost on device"),
    ] + [(money(value), f"saving after {month} months") for month, value in result.savings.items()]
    figures = "".join(
        f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(charts[name]).decode()}">'
        f"</figure>" for name, alt in (("cumulative", "Cumulative cost of each option by month"),
                                       ("monthly", "Monthly cost of each option"),
                                       ("tornado", "Sensitivity of the break-even month")) if name in charts)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Break-even: {_e(scenario.name)}</title><style>{CSS}</style></head><body><main>",
        f"<h1>Break-even: {_e(scenario.name)}</h1>",
        f'<p class="meta">{_e(scenario.description)}</p>' if scenario.description else "",
        f'<p class="meta">Cloud: {_e(scenario.cloud_label)}. On device: {_e(scenario.edge_label)}, '
        f"{_e(fmt.percent(result.inputs.on_device_share))} of requests. Horizon {result.months} months of 30 days; "
        f"currency {_e(result.currency)}.</p>",
        f'<p class="lead{" never" if result.breakeven_month is None else ""}">{_e(headline(result))}</p>',
        '<div class="cards">' + "".join(f'<div class="card"><b>{_e(v)}</b><span>{_e(k)}</span></div>'
                                        for v, k in cards) + "</div>",
        figures,
    ]
    for title, header, rows in tables:
        parts.append(f"<h2>{_e(title)}</h2>{_html_table(header, rows)}")
    if result.notes:
        parts.append("<h2>Notes</h2><ul class=\"notes\">" + "".join(f"<li>{_e(n)}</li>" for n in result.notes)
                     + "</ul>")
    parts.append("<h2>How it is computed</h2><ul class=\"notes\">" + "".join(f"<li>{_e(f)}</li>" for f in FORMULAS)
                 + "</ul>")
    parts.append("<footer>Generated by Edgeward (edgeward breakeven). Every price carries its source and date "
                 "above; check them before deciding.</footer></main></body></html>")
    return "\n".join(part for part in parts if part)
