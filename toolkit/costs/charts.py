"""PNG charts for the break-even report (matplotlib, Agg, imported only here).

Each function returns PNG bytes so the same image is written as a file and embedded in
the HTML page without reading it back.
"""

from __future__ import annotations

from toolkit.common.charts import figure_png
from toolkit.costs import money as fmt

CLOUD = "#d9534f"
EDGE = "#2a7ab0"
EDGE_ITEMS = {"cloud": "#9ecae1", "updates": "#6baed6", "energy": "#fdae6b", "new_devices": "#74c476",
              "replacement": "#31a354", "fees": "#bcbddc", "upkeep": "#9e9ac8"}
ITEM_LABELS = {"cloud": "routed to the cloud", "updates": "model updates", "energy": "energy",
               "new_devices": "new devices and installs", "replacement": "worn-out devices replaced",
               "fees": "fees per device", "upkeep": "upkeep"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False,
                         "axes.titleweight": "bold", "axes.titlesize": 10})
    return plt


def _png(figure) -> bytes:
    return figure_png(figure)


def _money_axis(axis, currency: str) -> None:
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda value, _: fmt.money(value, currency)))


def cumulative_chart(result) -> bytes:
    """Cumulative cost of each option by month; the crossing marked and labelled."""
    plt = _pyplot()
    rows = result.horizon
    one_off = float(sum(result.one_off.values()))
    months = [0] + [row.month for row in rows]
    cloud = [0.0] + [float(row.cumulative_cloud) for row in rows]
    edge = [one_off] + [float(row.cumulative_edge) for row in rows]
    figure, axes = plt.subplots(figsize=(7.2, 3.6), layout="constrained")
    axes.plot(months, cloud, color=CLOUD, linewidth=2, label="cloud only")
    axes.plot(months, edge, color=EDGE, linewidth=2, label=f"on device ({fmt.percent(result.effective_share)})")
    month = result.breakeven_month
    if month is not None:
        position = float(month)
        index = min(int(position), len(rows) - 1)
        low_x, high_x = index, index + 1
        low_y = cloud[low_x]
        high_y = cloud[min(high_x, len(cloud) - 1)]
        y = low_y + (high_y - low_y) * (position - low_x)
        axes.axvline(position, color="#555555", linestyle=":", linewidth=1)
        axes.plot([position], [y], marker="o", markersize=8, color="#222222", zorder=5)
        axes.annotate(f"break-even: {fmt.months(month)}", (position, y), textcoords="offset points",
                      xytext=(10, 18), fontsize=9, fontweight="bold",
                      bbox={"boxstyle": "round,pad=0.3", "facecolor": "white", "edgecolor": "#999999"},
                      arrowprops={"arrowstyle": "-", "color": "#999999"})
    else:
        axes.text(0.02, 0.95, "never breaks even within the horizon", transform=axes.transAxes, va="top",
                  fontsize=9, fontweight="bold", color=CLOUD)
    axes.set_xlim(0, len(rows))
    axes.set_ylim(bottom=0)
    axes.set_xlabel("month")
    axes.set_title("Cumulative cost")
    _money_axis(axes.yaxis, result.currency)
    axes.grid(axis="y", alpha=0.3)
    axes.legend(frameon=False, loc="lower right")
    return _png(figure)


def monthly_chart(result) -> bytes:
    """Monthly cost: the edge's items stacked, the cloud-only bill as a line."""
    plt = _pyplot()
    rows = result.horizon
    months = [row.month for row in rows]
    figure, axes = plt.subplots(figsize=(7.2, 3.8), layout="constrained")
    stacks = {item: [float(row.edge[item]) for row in rows] for item in EDGE_ITEMS}
    stacks = {item: heights for item, heights in stacks.items() if any(heights)}
    labels = [f"edge: {ITEM_LABELS[item]}" for item in stacks]
    colours = [EDGE_ITEMS[item] for item in stacks]
    if len(rows) > 60:  # thousands of bars are slow to draw and unreadable: stacked areas instead
        if stacks:
            axes.stackplot(months, *stacks.values(), labels=labels, colors=colours)
    else:
        bottom = [0.0] * len(rows)
        for heights, label, colour in zip(stacks.values(), labels, colours, strict=True):
            axes.bar(months, heights, bottom=bottom, color=colour, width=0.8, label=label)
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    axes.plot(months, [float(row.cloud_only) for row in rows], color=CLOUD, linewidth=2,
              marker="." if len(rows) <= 60 else None, label="cloud only")
    axes.set_xlabel("month")
    axes.set_title("Monthly cost")
    axes.set_ylim(bottom=0)
    _money_axis(axes.yaxis, result.currency)
    axes.grid(axis="y", alpha=0.3)
    axes.legend(frameon=False, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3)
    return _png(figure)


def tornado_chart(result, top: int = 10) -> bytes:
    """How far the break-even month moves with each input at -50% / +50% ('never' drawn to the horizon)."""
    plt = _pyplot()
    rows = result.sensitivity[:top][::-1]
    if result.breakeven_month is None and all(r.low_month is None and r.high_month is None for r in rows):
        rows = []  # nothing moves: say so instead of drawing a wall of "never"
    horizon = float(result.months)
    base = horizon if result.breakeven_month is None else float(result.breakeven_month)
    figure, axes = plt.subplots(figsize=(7.2, 0.45 * max(len(rows), 2) + 1.2), layout="constrained")
    for index, row in enumerate(rows):
        for value, colour, label in ((row.low_month, "#6baed6", "input −50%"), (row.high_month, "#fd8d3c",
                                                                               "input +50%")):
            end = horizon if value is None else float(value)
            axes.barh(index, end - base, left=base, color=colour, height=0.6,
                      hatch="//" if value is None else None, label=label if index == 0 else None)
            if value is None:
                axes.text(end, index, " never", va="center", fontsize=8)
    if rows:
        axes.axvline(base, color="#222222", linewidth=1)
    axes.set_yticks(range(len(rows)), [row.name.replace("_", " ") for row in rows])
    axes.set_xlabel("break-even month")
    ends = [horizon if m is None else float(m) for row in rows for m in (row.low_month, row.high_month)]
    axes.set_xlim(0, max([base, *ends, 1.0]) * 1.15)
    title = f"Sensitivity of the break-even month ({fmt.months(result.breakeven_month)} at the base)"
    axes.set_title(title)
    if not rows:
        message = (f"No single input changed by ±50% makes it break even within {result.months} months"
                   if result.sensitivity else "No input to vary")
        axes.text(0.5, 0.5, message, transform=axes.transAxes, ha="center", va="center", fontsize=10)
        axes.set_yticks([])
    else:
        axes.legend(frameon=False, fontsize=8, loc="lower right")
    return _png(figure)


def all_charts(result) -> dict[str, bytes]:
    return {"cumulative": cumulative_chart(result), "monthly": monthly_chart(result),
            "tornado": tornado_chart(result)}
