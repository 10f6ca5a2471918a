#!/usr/bin/env python3
"""Fuzz the cost model: mutated scenarios and catalogue entries through `toolkit.costs.breakeven`
and the report writers. Every case must end in a report or one BadInput line, with:

* no traceback (any exception other than BadInput),
* no partial report folder (a refused case leaves no folder and no staging leftovers),
* no silently reinterpreted number: a value that could be read two ways ("0,01", "1,000",
  "1:30", "0x10") is refused, and every figure that was accepted is the one written.

    .venv/bin/python scripts/fuzz_costs.py --cases 2000 --seed 1 --json benchmarks/results/fuzz_costs.json

The quick version runs in tests/test_costs_fuzz.py.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import tempfile
import time
import traceback
from decimal import Decimal
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

AMBIGUOUS = ["0,01", "1,000", "1,0,0,0", "1.000,5", "1:30", "0x10", "0o17", "1 000", "٣", "1e22", "1e-20",
             "12,5%", "$1,50", "1,000 EUR"]
JUNK = [None, True, "x", "", [], [1], {"a": 1}, {"value": "0,5"}, {"value": 1, "currency": "XYZ"},
        {"value": 1, "currency": "EUR"}, "nan", "inf", "-inf", float("nan"), float("inf"), -1, 0, -0.0,
        10**30, 1e300, 1e-300, "1e15", "1e16", "5%", "95 USD", "95 EUR", "USD 3", "€3", 2**63, 3.5, "7"]
EXTRA_KEYS = {"traffic": ["active_user", "peak_rps"], "cloud": ["price_per_1k_requests", "price_per_1k_input_tokens",
                                                                "purchase", "scaling", "small_model"],
              "edge": ["devices", "lifetime_months", "latency_budget_ms", "fee_per_device_per_month", "latncy_ms"],
              "": ["discount_rate", "on_device_share", "currency"]}
CATALOGUE_JUNK = ["0,0015", "1,50", -1, 0, 1e22, "1e-20", None, "USD", [], {"value": "2"}, "1:30", True]
SCENARIO_DIRECT = {  # dotted key -> Inputs field (factor 1) for the "what was written is what was used" check
    "traffic.active_users": "active_users", "traffic.requests_per_user_per_day": "requests_per_user_per_day",
    "edge.engineering_hours": "engineering_hours", "edge.hourly_rate": "hourly_rate",
    "edge.upkeep_per_month": "upkeep_per_month", "edge.power_w": "power_w", "edge.latency_ms": "latency_ms",
    "cloud.price_per_request": "price_per_request", "router.on_device_share": "on_device_share",
}


def seeds() -> list[dict]:
    from toolkit.costs.example import EXAMPLE

    demo = yaml.safe_load((ROOT / "toolkit" / "pipeline" / "demo.yaml").read_text())["breakeven"]
    return [
        yaml.safe_load(EXAMPLE), demo,
        {"traffic": {"active_users": 1_000_000, "requests_per_user_per_day": 5},
         "cloud": {"price_per_request": 0.01}, "edge": {"engineering_hours": 0, "hourly_rate": 0},
         "router": {"on_device_share": 0.2}},
        {"traffic": {"active_users": 20_000, "requests_per_user_per_day": 30, "peak_to_average": 3,
                     "hourly_load": [1] * 8 + [3] * 8 + [2] * 8},
         "cloud": {"instance": "aws-g4dn-xlarge", "throughput_rps": 400, "utilisation": "60%", "min_instances": 2,
                   "scaling": "autoscaled"},
         "edge": {"engineering_hours": 400, "hourly_rate": 120, "devices": "traffic", "latency_ms": 20,
                  "hardware_per_device": 80, "lifetime_months": 24, "fee_per_device_per_month": 2},
         "router": {"on_device_share": 0.9}, "discount_rate": "8%", "months": 24},
        {"traffic": {"active_users": 50_000, "requests_per_user_per_day": 10, "tokens_in_per_request": 500,
                     "tokens_out_per_request": 200, "installs": 120_000},
         "cloud": {"api": "openai-gpt-4o", "small_model": {"api": "openai-gpt-4o-mini", "share": "70%"}},
         "edge": {"engineering_hours": 300, "hourly_rate": 100, "latency_ms": 40, "latency_p95_ms": 90,
                  "latency_budget_ms": 60, "model_size_mb": 30, "egress_per_gb": 0.09},
         "router": {"on_device_share": 0.6}},
    ]


def _places(node, prefix=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield prefix + (key,)
            yield from _places(value, prefix + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield prefix + (index,)
            yield from _places(value, prefix + (index,))


def mutate_scenario(base: dict, rng: random.Random) -> tuple[dict, list[str]]:
    """A mutant and the ambiguous texts planted in it (each must be refused)."""
    mutant, planted = copy.deepcopy(base), []
    for _ in range(rng.choice((1, 1, 1, 2))):
        roll = rng.random()
        if roll < 0.15:  # an unknown or doubled key
            section = rng.choice(list(EXTRA_KEYS))
            node = mutant if not section else mutant.setdefault(section, {})
            if isinstance(node, dict):
                node[rng.choice(EXTRA_KEYS[section])] = copy.deepcopy(rng.choice(JUNK + [0.5, 2, "traffic"]))
            continue
        places = list(_places(mutant))
        if not places:
            break
        path, node = rng.choice(places), mutant
        try:
            for key in path[:-1]:
                node = node[key]
            if roll < 0.35:
                value = rng.choice(AMBIGUOUS)
                planted.append(value)
            elif roll < 0.55:
                value = copy.deepcopy(rng.choice(JUNK))
            else:
                old = node[path[-1]]
                value = old * rng.choice([10**9, 10**6, -1, 0.5, 1e-9, 2, 3, 0.1, 1.5, 7]) if isinstance(old, int | float) and \
                    not isinstance(old, bool) else rng.choice(JUNK)
            node[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            pass
    return mutant, planted


def mutate_entry(rng: random.Random) -> tuple[dict, list[str]]:
    """A user's catalogue entry (an api or instance) with junk or ambiguous values."""
    entry = rng.choice([
        {"name": "my-api", "kind": "api", "currency": "USD", "as_of": "2026-10", "source": "a quote",
         "price_per_1k_requests": 1.2},
        {"name": "google-cloud-vision-labels", "kind": "api", "currency": "USD", "as_of": "2026-10", "source": "q",
         "tiers": [{"up_to": 1000, "price_per_1k_requests": 0}, {"up_to": 5_000_000, "price_per_1k_requests": 1.5},
                   {"price_per_1k_requests": 0.8}]},
        {"name": "aws-g4dn-xlarge", "kind": "instance", "currency": "USD", "as_of": "2026-10", "source": "quote",
         "price_per_hour": 0.5, "price_per_hour_reserved": 0.33, "price_per_hour_spot": 0.2},
    ])
    planted = []
    for _ in range(rng.randint(0, 2)):
        key = rng.choice(list(entry) + ["price_per_request", "currency", "as_of", "tiers", "colour"])
        value = rng.choice(CATALOGUE_JUNK + ["XYZ", "2001-01", "someday", [{"up_to": 5, "price_per_request": 1},
                                                                              {"up_to": 2, "price_per_request": 1}]])
        if isinstance(value, str) and value in AMBIGUOUS + ["0,0015", "1,50"]:
            planted.append(value)
        entry[key] = copy.deepcopy(value)
    return entry, planted


def _lookup(data: dict, dotted: str):
    node = data
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def run_case(index: int, rng: random.Random, work: Path, seed_list: list[dict], write_every: int) -> dict:
    from toolkit.costs import breakeven
    from toolkit.costs.report import html_page, markdown, sections, write_reports
    from toolkit.costs.scenario import parse_scenario_text
    from toolkit.errors import BadInput

    scenario, planted = mutate_scenario(rng.choice(seed_list), rng)
    catalogue = work / f"catalogue-{index}"
    use_catalogue = rng.random() < 0.3
    if use_catalogue:
        entry, entry_planted = mutate_entry(rng)
        planted += entry_planted
        catalogue.mkdir()
        (catalogue / f"{entry.get('name', 'x')}.yaml").write_text(yaml.safe_dump(entry))
    out = work / f"report-{index}"
    text = yaml.safe_dump(scenario, sort_keys=False, allow_unicode=True)
    record = {"case": index, "planted": planted, "catalogue": use_catalogue}
    try:
        data = parse_scenario_text(text, "fuzz")  # the same reading `edgeward breakeven FILE` does
        result = breakeven(data, catalogue=[catalogue] if use_catalogue else ())
        json.dumps(result.to_dict())
        tables = sections(result)
        markdown(result, tables)
        html_page(result, tables, {})
        if index % write_every == 0:
            write_reports(result, out)
            record["written"] = True
        record["outcome"] = "ok"
        wrong = _reinterpreted(data, result)
        if planted and not wrong:
            wrong = [f"accepted a case with {planted!r} planted"] if _reached(planted, data, result) else []
        if wrong:
            record["outcome"], record["message"] = "reinterpreted", "; ".join(wrong)
    except BadInput as error:
        message = str(error)
        record["outcome"] = "bad_input"
        record["message"] = message[:300]
        if "\n" in message:
            record["outcome"] = "multi_line"
        if out.exists() or list(work.glob(f".report-{index}.stage-*")):
            record["outcome"] = "partial_folder"
    except Exception as error:  # noqa: BLE001 - the point is to catch anything else
        record["outcome"] = "traceback"
        record["message"] = f"{type(error).__name__}: {error}"[:300]
        record["traceback"] = traceback.format_exc()[-1500:]
        record["scenario"] = text[:3000]
    return record


def _reached(planted: list[str], data: dict, result) -> bool:
    """Did a planted ambiguous text end up in a place that is read as a number? (A text in a
    description or name is allowed to say anything.)"""
    text_fields = (result.scenario.name, result.scenario.description, result.scenario.cloud_label,
                   result.scenario.edge_label)
    blob = json.dumps(data, default=str)
    return any(value in blob and not any(value in field for field in text_fields) for value in planted)


def _reinterpreted(data: dict, result) -> list[str]:
    """Each direct figure the scenario wrote, where the result says it came from the scenario,
    must be exactly the number written."""
    from toolkit.costs.values import ValueProblem, read_value

    wrong = []
    for dotted, field in SCENARIO_DIRECT.items():
        raw = _lookup(data, dotted)
        if raw is None or not result.scenario.sources.get(field, "").startswith("scenario"):
            continue
        try:
            written = read_value(raw, percent=True, money=True)[0]
        except ValueProblem:
            wrong.append(f"{dotted}={raw!r} was accepted but cannot be read")
            continue
        used = getattr(result.inputs, field)
        if used is None or Decimal(used) != written:
            wrong.append(f"{dotted}: wrote {raw!r}, used {used}")
    return wrong


def fuzz(cases: int, seed: int, write_every: int = 25, log=print) -> dict:
    rng = random.Random(seed)
    seed_list = seeds()
    counts: dict[str, int] = {}
    findings = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fuzz-costs-") as folder:
        work = Path(folder)
        for index in range(cases):
            record = run_case(index, rng, work, seed_list, write_every)
            counts[record["outcome"]] = counts.get(record["outcome"], 0) + 1
            if record["outcome"] not in ("ok", "bad_input"):
                findings.append(record)
            if log and (index + 1) % 250 == 0:
                log(f"{index + 1}/{cases}: {counts}")
        leftovers = [p.name for p in work.iterdir() if ".stage-" in p.name]
    return {
        "cases": cases, "seed": seed, "seconds": round(time.perf_counter() - started, 1), "outcomes": counts,
        "reports_written": cases // write_every + (1 if cases % write_every else 0),
        "staging_leftovers": leftovers, "findings": findings,
        "bad": sum(counts.get(kind, 0) for kind in ("traceback", "partial_folder", "reinterpreted", "multi_line"))
        + len(leftovers),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--write-every", type=int, default=25, help="write the full report folder every N cases")
    parser.add_argument("--json", type=Path, help="write the summary here (and a .md beside it)")
    args = parser.parse_args()
    summary = fuzz(args.cases, args.seed, args.write_every)
    print(json.dumps({k: v for k, v in summary.items() if k != "findings"}, indent=2))
    for finding in summary["findings"][:20]:
        print(f"{finding['outcome']} case {finding['case']}: {finding.get('message', '')}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2, default=str) + "\n")
        lines = [f"# Cost-model fuzz run ({summary['cases']} cases, seed {summary['seed']})", "",
                 "`scripts/fuzz_costs.py`: mutated scenarios (ambiguous numbers such as \"0,01\", \"1:30\", "
                 "junk types, overflows, unknown and doubled keys) and users' catalogue entries through "
                 "`breakeven` and the report writers.", "", "| outcome | cases |", "|---|---|"]
        lines += [f"| {kind} | {count} |" for kind, count in sorted(summary["outcomes"].items())]
        lines += ["", f"Full report folders written: {summary['reports_written']}; staging leftovers: "
                  f"{len(summary['staging_leftovers'])}; findings (traceback, partial folder, reinterpreted "
                  f"number, multi-line error): {summary['bad']}. Time: {summary['seconds']} s.", ""]
        args.json.with_suffix(".md").write_text("\n".join(lines))
    return 1 if summary["bad"] else 0


if __name__ == "__main__":
    sys.exit(main())
