"""`edgeward run RECIPE.yaml`: every stage the recipe names, in order."""

from __future__ import annotations

from pathlib import Path

import click

from toolkit.common.units import human_bytes, human_ms, human_percent
from toolkit.console import emit, info


def summary_text(result) -> str:
    width = max([28, *(len(row["model"]) + 1 for row in result.rows)])  # a sweep's names are longer
    header = (f"{'model':<{width}} {'format':<7} {'mode':<14} {'size':>10} {'accuracy':>9} {'drop':>7} {'p50':>10} "
              f"{'on device':>9} {'per 1k':>9} {'break-even':>12}")
    lines = [header, "-" * len(header)]
    for row in result.rows:
        accuracy = "—" if row["accuracy"] is None else f"{row['accuracy'] * 100:.2f}%"
        drop = "—" if row["drop"] is None else f"{row['drop']:.2f}"
        p50 = human_ms(row["p50_ms"])
        share = human_percent(row.get("on_device_share"))
        per_1k = "—" if row.get("cost_per_1k") is None else f"{row['cost_per_1k']:.4g}"
        month = "—" if row["breakeven_month"] is None else f"{row['breakeven_month']:.2f} months"
        flag = "" if row["passed"] in (None, True) else " (gate failed)"
        flag += " (does not fit)" if row.get("fits") is False else ""
        lines.append(
            f"{row['model']:<{width}} {row['format'] or '—':<7} {row['mode'] or '—':<14} "
            f"{human_bytes(row['size_bytes']):>10} {accuracy:>9} {drop:>7} {p50:>10} {share:>9} {per_1k:>9} "
            f"{month:>12}{flag}"
        )
    lines.append("")
    recommendation = plan_recommendation(result.out_dir)
    if recommendation:
        lines += [recommendation, ""]
    lines.append(f"{len(result.steps)} steps ({result.reused} reused) in {result.seconds:.1f}s")
    lines.append(f"report: {result.report}")
    return "\n".join(lines)


def plan_recommendation(out_dir: Path) -> str | None:
    """The one sentence of the run's plan (breakeven/plan.json), when the recipe priced it."""
    import json

    try:
        return json.loads((Path(out_dir) / "breakeven" / "plan.json").read_text()).get("recommendation")
    except (OSError, ValueError, AttributeError):
        return None


def result_json(result) -> dict:
    published = {"url": result.url} if getattr(result, "url", None) else {}
    return {"out_dir": str(result.out_dir), **published, "report": str(result.report),
            "seconds": round(result.seconds, 2), "steps": result.steps, "summary": result.rows}


def run_and_print(recipe, out_dir: Path | str, force: bool, dry_run: bool, executor: str = "serial",
                  address: str | None = None, storage_options: dict | None = None) -> None:
    import sys

    from toolkit.console import ProgressDisplay
    from toolkit.pipeline import run

    # the serial executor already logs a line per step; a bar on a terminal, and the Ray
    # executor's steps done / running / failed in any case
    show = executor != "serial" or sys.stderr.isatty()
    with ProgressDisplay() as display:
        result = run(recipe, out_dir, force=force, dry_run=dry_run, executor=executor, address=address,
                     progress=display if show else None, storage_options=storage_options)
    if dry_run:
        emit({"plan": result.steps}, "\n".join(f"{s['status']:>5}  {s['step']}" for s in result.steps))
        return
    emit(result_json(result), summary_text(result))
    if getattr(result, "url", None):
        info(f"published to {result.url} (local copy: {result.out_dir})")
    info(f"open {result.report} in a browser for every stage's report")


def executor_options(function):
    """--executor and --address, shared by `run` and `demo`."""
    function = click.option("--address", default=None, metavar="ADDR",
                            help="With --executor ray: join the Ray cluster at ADDR (default: start a local one)."
                            )(function)
    return click.option("--executor", type=click.Choice(["serial", "ray"]), default="serial", show_default=True,
                        help="serial: one step after another; ray: independent steps as Ray tasks "
                             "(pip install 'edgeward[ray]').")(function)


def check_executor(executor: str, address: str | None) -> None:
    from toolkit.errors import BadInput

    if address and executor != "ray":
        raise BadInput("--address needs --executor ray")


@click.command(
    epilog="""\b
Examples:
  edgeward run recipe.yaml
  edgeward run recipe.yaml --dry-run
  edgeward run recipe.yaml -o exported/my-run --force
  edgeward run recipe.yaml --executor ray                  # a local Ray cluster (2 CPUs)
  edgeward run recipe.yaml --executor ray --address HOST:6379
  edgeward run recipe.yaml -o /mnt/shared/runs/r1          # a path every node sees
  edgeward run recipe.yaml -o s3://bucket/runs/r1 --storage-option endpoint_url=http://10.0.0.5:9000

\b
A step is reused when its folder records the same inputs and options; editing only
the break-even scenario reruns only the report.
"""
)
@click.argument("recipe_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--out", "out_dir", metavar="DIR|URL", default=None,
              help="Output folder, or an fsspec URL such as s3://bucket/prefix (pip install 'edgeward[storage]'; "
                   "default: exported/<recipe name>).")
@click.option("--storage-option", "storage_options", multiple=True, metavar="KEY=VALUE",
              help="With a URL -o: an fsspec storage option, e.g. endpoint_url=http://HOST:9000 (repeatable).")
@click.option("--force", is_flag=True, help="Redo every step, even unchanged ones.")
@click.option("--dry-run", is_flag=True, help="Print the plan (what would run, what would be reused).")
@executor_options
def command(recipe_file: Path, out_dir: str | None, storage_options: tuple[str, ...], force: bool, dry_run: bool,
            executor: str, address: str | None) -> None:
    """Run a recipe: source, distill, export, quantize, validate, bench, break-even."""
    from toolkit.pipeline.recipe import load_recipe
    from toolkit.pipeline.storage import is_url

    options = parse_storage_options(storage_options)
    recipe = load_recipe(recipe_file)
    check_executor(executor, address)
    target = out_dir if out_dir and is_url(out_dir) else Path(out_dir or Path("exported") / recipe.name)
    run_and_print(recipe, target, force, dry_run, executor, address, storage_options=options or None)


def parse_storage_options(pairs: tuple[str, ...]) -> dict[str, str]:
    from toolkit.errors import BadInput

    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise BadInput(f"--storage-option {pair}: give KEY=VALUE, e.g. endpoint_url=http://HOST:9000")
        options[key.strip()] = value
    return options
