"""The plan's two charts (PNG, matplotlib's Agg backend): cost against system accuracy with the
Pareto front marked, and each variant's share on the device against system accuracy."""

from __future__ import annotations

from toolkit.common.charts import figure_png, pyplot
from toolkit.plan.share import points_with_accuracy


def cost_accuracy_png(plan) -> bytes:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    priced = [o for o in plan.options if o.cost_per_1k is not None and o.system_accuracy is not None]
    currency = priced[0].currency if priced else ""
    for option in priced:
        ok = not option.blockers()
        ax.scatter(float(option.cost_per_1k), option.system_accuracy * 100, marker="o" if ok else "x",
                   color="#3b6ea8" if ok else "#a11", s=36, zorder=3)
    front = sorted((o for o in plan.pareto if o in priced), key=lambda o: float(o.cost_per_1k))
    if front:
        costs, accuracies = [float(o.cost_per_1k) for o in front], [o.system_accuracy * 100 for o in front]
        ax.plot(costs, accuracies, color="#e08a00", lw=1.5, zorder=2)
        ax.scatter(costs, accuracies, s=90, facecolors="none", edgecolors="#e08a00", lw=1.5, zorder=3,
                   label="Pareto front (nothing cheaper and as accurate)")
    best = plan.recommended
    if best is not None:
        ax.scatter(float(best.cost_per_1k), best.system_accuracy * 100, s=160, facecolors="none",
                   edgecolors="#176b2c", lw=2, zorder=4, label=f"recommended: {best.name}")
    ax.axhline(plan.floor * 100, color="#888", ls="--", lw=1, label=f"accuracy floor {plan.floor:.2%}")
    ax.set_xlabel(f"cost per 1,000 requests over the horizon, one-off included ({currency})")
    ax.set_ylabel("system accuracy (%)")
    ax.set_title("cost against accuracy (x: cannot be recommended)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return figure_png(fig)


def share_curves_png(plan) -> bytes:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    seen = set()
    for option in plan.options:
        variant = option.variant
        if variant.name in seen or variant.curve is None:
            continue
        seen.add(variant.name)
        points = points_with_accuracy(variant.curve, plan.cloud_accuracy)
        line = ax.plot([p[0] * 100 for p in points], [p[2] * 100 for p in points], drawstyle="steps-post",
                       lw=1.2, label=variant.name)[0]
        if option.share.system_accuracy is not None:
            ax.scatter(option.share.share * 100, option.share.system_accuracy * 100, color=line.get_color(), s=30,
                       zorder=3)
    ax.axhline(plan.floor * 100, color="#888", ls="--", lw=1, label=f"accuracy floor {plan.floor:.2%}")
    ax.set_xlabel("share of requests served on the device (%)")
    ax.set_ylabel("system accuracy (%)")
    ax.set_title("the least confident requests go to the cloud model (dots: the share chosen)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return figure_png(fig)
