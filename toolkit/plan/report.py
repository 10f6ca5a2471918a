"""Write a plan: plan.md, plan.json, plan.html (Jinja2, autoescaped, charts embedded) and two PNGs.

Markdown and HTML are built from the same rows (`table`), so they cannot disagree.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from toolkit.artifacts import atomic_write_bytes, atomic_write_json, atomic_write_text
from toolkit.common.units import human_bytes, human_months, human_ms, human_percent

PLAN_FILES = ("plan.md", "plan.json", "plan.html", "cost_accuracy.png", "share_curves.png")
HEADER = ["#", "variant", "device", "system accuracy", "on device", "p50", "p95", "fits", "per 1,000 requests",
          "one-off", "break-even", "saving", "verdict"]


def latency_cell(value, measured) -> str:
    if value is None:
        return "—"
    return f"{human_ms(value)} ({'estimate' if measured.estimate else 'measured'})"


def months_cell(month) -> str:
    """Two decimals: options a ranking compares often differ by days."""
    return human_months(month) if month is None else f"{float(month):.2f} months"


def verdict(option, recommended) -> str:
    if option is recommended:
        return "recommended"
    blockers = option.blockers()
    return "; ".join(blockers) if blockers else "meets every bar"


def table(plan) -> list[list[str]]:
    from toolkit.costs.money import money, unit_cost

    rows = []
    recommended = plan.recommended
    for rank, option in enumerate(plan.options, 1):
        currency = option.currency
        share = human_percent(option.share.share) + (" (fixed)" if option.share.how == "fixed" else "")
        effective = option.effective_share
        if effective is not None and abs(effective - option.share.share) > 1e-9:
            share += f", {human_percent(effective)} within the budget"
        rows.append([
            str(rank), option.variant.name, option.device,
            human_percent(option.system_accuracy, 2), share,
            latency_cell(option.p50_ms, option.measured), latency_cell(option.p95_ms, option.measured),
            "yes" if option.fit.fits else "does not fit",
            unit_cost(option.cost_per_1k, currency) if option.cost_per_1k is not None else "—",
            money(option.one_off, currency) if option.one_off is not None else "—",
            months_cell(option.breakeven_month) if option.result is not None else "—",
            money(option.saving, currency) if option.saving is not None else "—",
            verdict(option, recommended),
        ])
    return rows


def explanations(plan) -> list[str]:
    """What the columns mean, in the words the report's reader needs."""
    first = next((o for o in plan.options if o.result is not None), None)
    horizon = first.horizon if first else "the horizon's"
    lines = [
        f"System accuracy: the device's answers on the requests it keeps plus the cloud model's on the rest, on the "
        f"validation data; the accuracy floor is {human_percent(plan.floor, 2)} ({plan.floor_source}).",
        "On device: the share of requests the device answers; the rest (its least confident) go to the cloud model"
        + (" — fixed by the scenario." if plan.fixed_share is not None else ", chosen as the largest share that keeps "
           "the system at the floor."),
        "p50/p95: measured on that device where a bench ran there, else estimated from its profile (a roofline, "
        "a lower bound); a runner that reports no p95 leaves it blank.",
        "Fits: model file plus working memory (the measured peak, else the estimate) against the device's memory, "
        "and the file against its storage.",
        f"Per 1,000 requests: the on-device option's whole cost over {horizon} months, one-off included, divided by "
        "the requests; saving: the cloud-only cost minus it over the same months.",
    ]
    if plan.latency_budget_ms is not None:
        lines.append(f"Latency budget: {plan.latency_budget_ms:g} ms at p95 (p50 where only that is known).")
    return lines


def markdown(plan) -> str:
    lines = [f"# Plan: {plan.scenario_name}", "", f"**{plan.recommendation}**", ""]
    lines += ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in table(plan)]
    lines += ["", *(f"- {line}" for line in explanations(plan))]
    if plan.notes:
        lines += ["", "## Notes", "", *(f"- {note}" for note in plan.notes)]
    errors = [o for o in plan.options if o.error]
    if errors:
        lines += ["", "## Not priced", "", *(f"- {o.name}: {o.error}" for o in errors)]
    lines += ["", "![cost against accuracy](cost_accuracy.png)", "",
              "![share on device against system accuracy](share_curves.png)", ""]
    return "\n".join(lines)


def html_page(plan, charts: dict[str, bytes]) -> str:
    from jinja2 import Environment

    from toolkit.plan.template import PAGE

    environment = Environment(autoescape=True)
    images = {name: base64.b64encode(png).decode("ascii") for name, png in charts.items()}
    return environment.from_string(PAGE).render(
        plan=plan, header=HEADER, rows=table(plan), explanations=explanations(plan), images=images,
        errors=[o for o in plan.options if o.error], sizes={o.variant.name: human_bytes(o.variant.size_bytes)
                                                           for o in plan.options})


def write_plan(plan, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write every file of the plan into out_dir (each atomically); returns kind -> path."""
    from toolkit.plan.charts import cost_accuracy_png, share_curves_png

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    charts = {"cost_accuracy": cost_accuracy_png(plan), "share_curves": share_curves_png(plan)}
    paths = {f"{name}_png": atomic_write_bytes(out_dir / f"{name}.png", png) for name, png in charts.items()}
    paths["json"] = atomic_write_json(out_dir / "plan.json", plan.to_dict())
    paths["md"] = atomic_write_text(out_dir / "plan.md", markdown(plan))
    paths["html"] = atomic_write_text(out_dir / "plan.html", html_page(plan, charts))
    return paths
