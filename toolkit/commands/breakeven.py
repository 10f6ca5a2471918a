"""`edgeward breakeven`: price on-device inference against the cloud, as reports people read."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from toolkit.errors import BadInput


@click.command(
    epilog="""\b
Examples:
  edgeward breakeven --example > scenario.yaml
  edgeward breakeven scenario.yaml -o exported/breakeven
  edgeward breakeven --example | edgeward breakeven - -o /tmp/breakeven
  edgeward breakeven scenario.yaml --bench exported/bench/bench.json --months 24
  edgeward --json breakeven scenario.yaml
  edgeward breakeven --prices
  edgeward breakeven scenario.yaml --catalogue my-prices/

\b
Writes breakeven.md, breakeven.json, breakeven.html (self-contained) and three PNG
charts (cumulative.png, monthly.png, tornado.png) into the output folder. A folder
holding only an earlier break-even report is replaced; anything else needs --force.
Cloud prices come from device_profiles/cloud/*.yaml, each with its date and source;
--catalogue DIR (or $EDGEWARD_CLOUD_CATALOGUE) adds your own. Numbers are written with a
decimal point and no thousands separator ("0,01" is refused, not guessed).
"""
)
@click.argument("scenario", required=False)
@click.option("--bench", "bench_files", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="`edgeward bench --json` output: fills the measured latency (edge) or throughput (cloud "
                   "instance). Repeatable.")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("exported/breakeven"), show_default=True, help="Output folder for the reports.")
@click.option("--months", type=click.IntRange(1, 600), default=None, help="Horizon in months (default: the "
              "scenario's, else 36).")
@click.option("--catalogue", "catalogues", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              help="A folder of your own cloud price entries (YAML, as in device_profiles/cloud/), added to the "
                   "builtin ones; yours win on a name clash and the report says which came from where. "
                   "Repeatable; $EDGEWARD_CLOUD_CATALOGUE adds folders the same way.")
@click.option("--force", is_flag=True, help="Write into an output folder that holds other files.")
@click.option("--example", is_flag=True, help="Print a commented example scenario (valid as it stands) and exit.")
@click.option("--prices", is_flag=True, help="List the cloud price catalogue (names a scenario can use) and exit.")
def command(scenario: str | None, bench_files: tuple[Path, ...], out_dir: Path, months: int | None,
            catalogues: tuple[Path, ...], force: bool, example: bool, prices: bool) -> None:
    """Price on-device inference against recurring cloud spend.

    SCENARIO is a YAML file (see --example), or - to read it from stdin.
    """
    if example:
        from toolkit.console import emit, mode
        from toolkit.costs.example import EXAMPLE

        if mode().json:  # stdout holds only JSON: the YAML text as a string
            emit({"example": EXAMPLE})
        else:
            click.echo(EXAMPLE, nl=False)
        return
    if prices:
        from toolkit.console import emit
        from toolkit.costs.pricing import load_catalogue, table

        rows = table(load_catalogue(extra=list(catalogues)))
        emit(rows, "\n".join(f"{row['name']:<30} {row['kind']:<12} "
                             f"{', '.join(f'{k} {v}' for k, v in row['prices'].items()):<58} "
                             f"{row['currency']} as of {row['as_of']}{' (old)' if row['stale'] else ''}"
                             f"{'' if row['origin'] == 'builtin' else ' from ' + row['origin']}" for row in rows))
        return
    if not scenario:
        raise BadInput("give a scenario file (or - for stdin); start from `edgeward breakeven --example`")

    from toolkit.console import emit, info
    from toolkit.costs import breakeven
    from toolkit.costs import money as fmt
    from toolkit.costs.report import write_reports
    from toolkit.costs.scenario import parse_scenario_text, read_scenario_file

    data = parse_scenario_text(sys.stdin.read(), "scenario (stdin)") if scenario == "-" else \
        read_scenario_file(scenario)
    check_out_dir(out_dir, force)
    result = breakeven(data, bench=list(bench_files), months=months, catalogue=list(catalogues))
    paths = write_reports(result, out_dir)  # rendered whole first, then swapped in: all or nothing
    for note in result.notes:
        info(f"note: {note}")
    for warning in result.warnings:
        info(f"warning: {warning}")
    emit({**result.to_dict(), "reports": {name: str(path) for name, path in paths.items()}},
         summary(result, fmt, paths))


def check_out_dir(out_dir: Path, force: bool) -> None:
    """Refuse a folder with files other than an earlier report's, unless forced."""
    from toolkit.costs.report import REPORT_FILES

    if out_dir.exists() and not out_dir.is_dir():
        raise BadInput(f"{out_dir} exists and is not a folder")
    if force or not out_dir.is_dir():
        return
    others = sorted(item.name for item in out_dir.iterdir() if item.name not in REPORT_FILES)
    if others:
        raise BadInput(f"{out_dir} holds other files ({', '.join(others[:3])}): pass --force, or choose another -o")


def summary(result, fmt, paths) -> str:
    money = lambda value: fmt.money(value, result.currency)  # noqa: E731
    unit = lambda value: fmt.unit_cost(value, result.currency)  # noqa: E731
    first = result.rows[0]
    share = fmt.percent(result.effective_share)
    lines = [
        f"Break-even: {fmt.months(result.breakeven_month)} ({result.reason})",
        f"  cloud only:  {money(first.cloud_only)} in month 1, {unit(result.per_1k['cloud'])} per 1,000 requests",
        f"  on device ({share}): {money(first.edge_total)} in month 1, {unit(result.per_1k['edge'])} per 1,000 "
        f"requests, one-off {money(sum(result.one_off.values()))}",
        "  savings:     " + ", ".join(f"{m} months {money(v)}" for m, v in result.savings.items()),
        f"Reports: {paths['html']} (and .md, .json, 3 PNG charts in {paths['html'].parent})",
    ]
    return "\n".join(lines)
