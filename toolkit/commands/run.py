"""`edgeward run RECIPE.yaml`: every stage the recipe names, in order."""

from __future__ import annotations

from pathlib import Path

import click

from toolkit.common.units import human_bytes, human_months, human_ms
from toolkit.console import emit, info


def summary_text(result) -> str:
    header = f"{'model':<28} {'format':<7} {'mode':<14} {'size':>10} {'accuracy':>9} {'drop':>7} {'p50':>10} {'break-even':>12}"
    lines = [header, "-" * len(header)]
    for row in result.rows:
        accuracy = "—" if row["accuracy"] is None else f"{row['accuracy'] * 100:.2f}%"
        drop = "—" if row["drop"] is None else f"{row['drop']:.2f}"
        p50 = human_ms(row["p50_ms"])
        flag = "" if row["passed"] in (None, True) else " (gate failed)"
        lines.append(
            f"{row['model']:<28} {row['format'] or '—':<7} {row['mode'] or '—':<14} "
            f"{human_bytes(row['size_bytes']):>10} {accuracy:>9} {drop:>7} {p50:>10} "
            f"{human_months(row['breakeven_month']):>12}{flag}"
        )
    lines.append("")
    lines.append(f"{len(result.steps)} steps ({result.reused} reused) in {result.seconds:.1f}s")
    lines.append(f"report: {result.report}")
    return "\n".join(lines)


def result_json(result) -> dict:
    return {"out_dir": str(result.out_dir), "report": str(result.report), "seconds": round(result.seconds, 2),
            "steps": result.steps, "summary": result.rows}


def run_and_print(recipe, out_dir: Path, force: bool, dry_run: bool) -> None:
    from toolkit.pipeline import run

    result = run(recipe, out_dir, force=force, dry_run=dry_run)
    if dry_run:
        emit({"plan": result.steps}, "\n".join(f"{s['status']:>5}  {s['step']}" for s in result.steps))
        return
    emit(result_json(result), summary_text(result))
    info(f"open {result.report} in a browser for every stage's report")


@click.command(
    epilog="""\b
Examples:
  edgeward run recipe.yaml
  edgeward run recipe.yaml --dry-run
  edgeward run recipe.yaml -o exported/my-run --force

\b
A step is reused when its folder records the same inputs and options; editing only
the break-even scenario reruns only the report.
"""
)
@click.argument("recipe_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder (default: exported/<recipe name>).")
@click.option("--force", is_flag=True, help="Redo every step, even unchanged ones.")
@click.option("--dry-run", is_flag=True, help="Print the plan (what would run, what would be reused).")
def command(recipe_file: Path, out_dir: Path | None, force: bool, dry_run: bool) -> None:
    """Run a recipe: source, distill, export, quantize, validate, bench, break-even."""
    from toolkit.pipeline.recipe import load_recipe

    recipe = load_recipe(recipe_file)
    run_and_print(recipe, out_dir or Path("exported") / recipe.name, force, dry_run)
