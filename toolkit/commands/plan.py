"""`edgeward plan ARTIFACT... --devices A,B --scenario S.yaml`: every variant × device, ranked by cost."""

from __future__ import annotations

from pathlib import Path

import click


def ranking_text(result, out_dir: Path) -> str:
    from toolkit.plan.report import HEADER, table

    keep = [HEADER.index(name) for name in ("#", "variant", "device", "system accuracy", "on device", "p50", "fits",
                                            "per 1,000 requests", "break-even", "verdict")]
    rows = [[HEADER[i] for i in keep], *([row[i] for i in keep] for row in table(result))]
    widths = [max(len(row[i]) for row in rows) for i in range(len(keep) - 1)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1]
             for row in rows]
    lines += ["", result.recommendation, "", f"plan: {out_dir / 'plan.html'} (and plan.md, plan.json, PNG charts)"]
    return "\n".join(lines)


@click.command(epilog="""\b
Examples:
  edgeward plan exported/digits-int8 exported/digits-fp16 --devices raspberry-pi-5,pixel-8 --scenario s.yaml
  edgeward plan --run exported/digits-demo --devices raspberry-pi-5 --scenario s.yaml --min-accuracy 98%
  edgeward plan exported/digits-int8 --devices pixel-8 --scenario s.yaml --latency-budget-ms 20 -o exported/plan

\b
Each ARTIFACT is a model folder written by export, quantize or distill and validated with
`edgeward validate` (its manifest records accuracy and each example's confidence); bench
results beside the model (bench*.json) or given with --bench are used on the device they
measured, and any other device gets an estimate from its profile (marked as such). --run
takes every model of a finished `edgeward run`.

For each variant on each device: the share of requests kept on the device (the largest
whose least confident requests, sent to the cloud model, keep the whole system at the
accuracy floor; the scenario's router.on_device_share fixes it by hand instead), system
accuracy, p50/p95, whether it fits (model + working memory against RAM and storage), cost
per 1,000 requests, one-off cost, break-even month and saving over the horizon. The
cheapest option that fits and meets the floor (and budget) is named first, in one
sentence. Writes plan.md, plan.json, plan.html and two PNG charts. Exit 1 when no option
can be recommended (the report is still written).""")
@click.argument("artifacts", nargs=-1, type=click.Path(path_type=Path))
@click.option("--run", "run_dir", type=click.Path(path_type=Path), default=None,
              help="A finished `edgeward run` output folder: rank every model in it.")
@click.option("--devices", default=None,
              help="Device profiles to price, comma-separated (default: the scenario's edge.device).")
@click.option("--scenario", "scenario_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The break-even scenario (YAML; see `edgeward breakeven --example`).")
@click.option("--min-accuracy", default=None,
              help="Accuracy floor of the whole system, 0.98 or 98% (default: the cloud model's own accuracy).")
@click.option("--cloud-accuracy", default=None,
              help="Accuracy of the cloud model (default: the reference's, example by example, on the validation data).")
@click.option("--latency-budget-ms", type=float, default=None,
              help="An option must answer within this many ms at p95 (p50 where only that is known).")
@click.option("--bench", "bench_files", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="`edgeward bench --json` output of one of the models (repeatable).")
@click.option("--catalogue", "catalogues", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              help="A folder of your own cloud price entries, added to the builtin ones (repeatable).")
@click.option("--profiles", "profiles_dir", type=click.Path(file_okay=False), default=None,
              help="A folder of extra device profiles.")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("exported/plan"), show_default=True, help="Output folder.")
@click.option("--force", is_flag=True, help="Replace an output folder that already holds files.")
def command(artifacts, run_dir, devices, scenario_file, min_accuracy, cloud_accuracy, latency_budget_ms,
            bench_files, catalogues, profiles_dir, out_dir, force) -> None:
    """Rank every variant × device by cost at the accuracy floor."""
    from toolkit.artifacts import check_writable, staged_folder
    from toolkit.console import emit
    from toolkit.errors import BadInput, GateFailed
    from toolkit.plan import build_plan, load_variants, read_scenario
    from toolkit.plan.report import write_plan

    check_writable(out_dir, force)  # before any work: an existing folder needs --force
    scenario = read_scenario(scenario_file)
    if devices is None:
        edge = scenario.get("edge") if isinstance(scenario.get("edge"), dict) else {}
        if not edge.get("device"):
            raise BadInput("--devices: name the device profiles to price (the scenario names no edge.device)")
        devices = str(edge["device"])
    variants = load_variants(artifacts, run=run_dir, bench=bench_files)
    result = build_plan(variants, devices, scenario, min_accuracy=min_accuracy, cloud_accuracy=cloud_accuracy,
                        latency_budget_ms=latency_budget_ms, catalogue=list(catalogues), profiles_dir=profiles_dir)
    with staged_folder(out_dir, force=True) as stage:
        write_plan(result, stage)
    data = {"out_dir": str(out_dir), **result.to_dict()}
    emit(data, ranking_text(result, out_dir))
    if result.recommended is None:
        raise GateFailed(result.recommendation)
