"""Inputs that cannot lie: ambiguous numbers, two prices for one thing, impossible figures,
currencies, the user's catalogue, stale prices; and a quick run of scripts/fuzz_costs.py."""

from __future__ import annotations

import importlib
import sys

import pytest
import yaml

from tests.conftest import ROOT
from tests.test_breakeven_cli import base_scenario, write_yaml

sys.path.insert(0, str(ROOT / "scripts"))


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"cloud.price_per_request": "0,01"}, "cloud.price_per_request has a comma (got '0,01')"),
        ({"traffic.active_users": "1,0,0,0"}, "traffic.active_users has a comma"),
        ({"traffic.active_users": "1,000"}, "traffic.active_users has a comma"),
        ({"cloud.price_per_1k_requests": 2}, "price_per_request and price_per_1k_requests are two prices for one "
                                             "thing"),
        ({"edge.power_w": 1e22}, "edge.power_w is too large to be real"),
        ({"edge.power_w": 2e6}, "edge.power_w must be at most 1000000"),
        ({"currency": "XYZ"}, "currency must be a three-letter ISO code"),
        ({"edge.hourly_rate": "95 XYZ"}, "not an ISO 4217 code"),
        ({"traffic.monthly_growth": 400}, "traffic.monthly_growth must be at most 10"),
    ],
)
def test_ambiguous_or_impossible_figures_exit_2_before_any_file(run_cli, tmp_path, changes, expected):
    path = write_yaml(tmp_path, base_scenario(**changes))
    out = tmp_path / "out"
    result = run_cli("breakeven", path, "-o", out)
    assert result.exit_code == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and expected in result.stderr
    assert not out.exists() and not list(tmp_path.glob(".out.stage-*"))


def test_base_60_and_hex_numbers_in_yaml_are_refused(run_cli, tmp_path):
    text = yaml.safe_dump(base_scenario()).replace("engineering_hours: 200", "engineering_hours: 3:20")
    (tmp_path / "s.yaml").write_text(text)
    result = run_cli("breakeven", tmp_path / "s.yaml", "-o", tmp_path / "out")
    assert result.exit_code == 2 and "edge.engineering_hours must be a number (got '3:20')" in result.stderr


def test_runaway_growth_leaves_no_partial_report(run_cli, tmp_path):
    out = tmp_path / "out"
    path = write_yaml(tmp_path, base_scenario(**{"traffic.monthly_growth": 9, "traffic.active_users": 1e9}))
    result = run_cli("breakeven", path, "-o", out)
    assert result.exit_code == 2 and "check traffic" in result.stderr
    assert not out.exists()


def test_a_user_catalogue_adds_to_the_builtin_one_and_wins(run_cli, tmp_path, monkeypatch):
    mine = tmp_path / "prices"
    mine.mkdir()
    (mine / "vision.yaml").write_text(
        "name: google-cloud-vision-labels\nkind: api\ncurrency: USD\nas_of: '2026-10'\nsource: our contract\n"
        "price_per_1k_requests: 0.5\n")
    path = write_yaml(tmp_path, base_scenario(**{"cloud.price_per_request": None,
                                                 "cloud.api": "google-cloud-vision-labels",
                                                 "edge.egress": "aws-internet-egress"}))
    result = run_cli("--json", "breakeven", path, "--catalogue", mine, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    data = result.json()
    assert data["inputs"]["price_per_request"] == 0.0005  # 3M requests x $0.0005
    assert data["first_month"]["cloud"] == 1500.0
    origins = {entry["name"]: entry["origin"] for entry in data["catalogue"]}
    assert origins == {"google-cloud-vision-labels": str(mine), "aws-internet-egress": "builtin"}
    assert f"your catalogue {mine}" in (tmp_path / "out" / "breakeven.md").read_text()
    monkeypatch.setenv("EDGEWARD_CLOUD_CATALOGUE", str(mine))
    from toolkit.costs.pricing import load_catalogue

    catalogue = load_catalogue()
    assert catalogue["google-cloud-vision-labels"].origin.endswith(str(mine))
    assert "openai-gpt-4o-mini" in catalogue  # added, not replaced
    monkeypatch.setenv("EDGEWARD_CLOUD_CATALOGUE", str(tmp_path / "missing"))
    with pytest.raises(Exception, match="folder not found"):
        load_catalogue()
    monkeypatch.delenv("EDGEWARD_CLOUD_CATALOGUE")
    missing = run_cli("breakeven", path, "--catalogue", tmp_path / "nope", "-o", tmp_path / "out2")
    assert missing.exit_code == 2 and "folder not found" in missing.stderr


def test_bad_catalogue_entries_are_refused_with_the_file_named(tmp_path):
    from toolkit.costs.pricing import load_catalogue
    from toolkit.errors import BadInput

    (tmp_path / "a.yaml").write_text("name: a\nkind: api\ncurrency: USD\nas_of: '2026'\nsource: quote\n"
                                     "price_per_request: 0.001\nprice_per_1k_requests: 1\n")
    with pytest.raises(BadInput, match="two prices for one thing"):
        load_catalogue(extra=[tmp_path])
    (tmp_path / "a.yaml").write_text("name: a\nkind: api\ncurrency: ABC\nas_of: '2026'\nsource: quote\n"
                                     "price_per_request: '0,001'\n")
    with pytest.raises(BadInput, match=r"a.yaml: .*not an ISO 4217 code.*has a comma"):
        load_catalogue(extra=[tmp_path])


def test_an_old_price_is_flagged_in_the_report():
    from datetime import date

    from toolkit.costs import breakeven
    from toolkit.costs.pricing import months_since

    assert months_since("2024", date(2026, 11, 30)) == 23
    result = breakeven(base_scenario(**{"cloud.price_per_request": None, "cloud.api": "google-cloud-vision-labels"}))
    assert any("google-cloud-vision-labels is priced as of 2024, more than 18 months ago" in w
               for w in result.warnings)


@pytest.mark.timeout(120)
def test_quick_fuzz_of_scenarios_and_catalogue_entries():
    fuzz_costs = importlib.import_module("fuzz_costs")
    summary = fuzz_costs.fuzz(300, seed=3, write_every=100, log=None)
    assert summary["outcomes"].get("ok", 0) > 20 and summary["outcomes"].get("bad_input", 0) > 100
    assert summary["findings"] == [] and summary["staging_leftovers"] == []
    assert summary["bad"] == 0
