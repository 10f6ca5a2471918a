"""The decision: confidence sets the on-device share, fit, one ranking (`edgeward plan`).

Two real variants (the builtin digits CNN and MLP exported to ONNX) are validated against the
CNN on the digits test split; their confidence curves, estimates and costs are real figures.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
import yaml

from toolkit.errors import BadInput

SCENARIO = {
    "name": "lockers",
    "currency": "USD",
    "months": 36,
    "traffic": {"active_users": 2000, "requests_per_user_per_day": 2000, "peak_to_average": 3},
    "cloud": {"price_per_request": 0.0015},
    "edge": {"device": "raspberry-pi-5", "engineering_hours": 320, "hourly_rate": 125, "devices": 2000,
             "hardware_per_device": 80, "updates_per_year": 12, "egress_per_gb": 0.09, "upkeep_per_month": 2500},
}
TINY_PROFILE = """\
extends: arduino-nano-33-ble-sense
description: a board with 20 KB of RAM, smaller than the digits models
ram_mb: {value: 0.02, source: "test profile: smaller than the model"}
"""


@pytest.fixture(scope="module")
def variants_dir(tmp_path_factory) -> Path:
    """Two validated artifact folders: the CNN (the reference itself) and the MLP (a weaker student)."""
    from toolkit.export import export
    from toolkit.validate import validate

    root = tmp_path_factory.mktemp("plan")
    for name in ("digits-cnn", "digits-mlp"):
        export(f"builtin:{name}", "onnx", root / name)
        validate(root / name, "builtin:digits-cnn", "builtin:digits:test", out_dir=root / f"validate-{name}",
                 max_drop=None, min_agreement=None, min_sqnr=None)
    return root


@pytest.fixture(scope="module")
def profiles_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("profiles")
    (folder / "tiny-board.yaml").write_text(TINY_PROFILE)
    return folder


def largest_share_meeting(arrays: dict, floor: float) -> float:
    """The share rule computed independently from confidence.npz: keep the most confident k
    (never splitting a tie) while device-right-on-kept + reference-right-on-routed >= floor."""
    probability = arrays["probability"]
    order = np.argsort(-probability, kind="stable")
    correct, reference = arrays["correct"][order], arrays["reference_correct"][order]
    total, best = len(order), 0
    for kept in range(total + 1):
        if 0 < kept < total and probability[order][kept] == probability[order][kept - 1]:
            continue
        accuracy = (correct[:kept].sum() + reference[kept:].sum()) / total
        if accuracy >= floor - 1e-9:
            best = kept
    return best / total


def test_validation_records_each_examples_confidence(variants_dir):
    report = json.loads((variants_dir / "validate-digits-mlp" / "report.json").read_text())
    curve = report["confidence"]
    arrays = dict(np.load(variants_dir / "validate-digits-mlp" / "confidence.npz"))
    assert curve["examples"] == len(arrays["probability"]) == report["samples"] == 450
    assert curve["against"] == "labels"
    assert np.all((arrays["probability"] > 0.1) & (arrays["probability"] <= 1.0))  # top-1 of 10 classes
    assert np.all(arrays["margin"] >= 0) and np.all(arrays["margin"] <= arrays["probability"])
    assert arrays["correct"].mean() == pytest.approx(report["outputs"][0]["candidate_accuracy"])
    assert arrays["reference_correct"].mean() == pytest.approx(report["outputs"][0]["reference_accuracy"])
    first, last = curve["points"][0], curve["points"][-1]
    assert first[:2] == [None, 0] and last[1] == 450 and last[2] == arrays["correct"].sum()
    assert (variants_dir / "validate-digits-mlp" / "confidence_curve.png").read_bytes()[:4] == b"\x89PNG"
    manifest = json.loads((variants_dir / "digits-mlp" / "manifest.json").read_text())
    assert manifest["validation"]["confidence"]["points"] == curve["points"]


def test_two_variants_get_their_own_share_cost_and_breakeven(variants_dir):
    from toolkit.plan import build_plan, load_variants

    variants = load_variants([variants_dir / "digits-cnn", variants_dir / "digits-mlp"])
    by_name = {v.name: v for v in variants}
    assert by_name["digits-mlp"].accuracy < by_name["digits-cnn"].accuracy  # different measured accuracy
    plan = build_plan(variants, ["raspberry-pi-5"], SCENARIO)
    options = {o.variant.name: o for o in plan.options}
    cnn, mlp = options["digits-cnn"], options["digits-mlp"]
    floor = by_name["digits-cnn"].validation["reference_accuracy"]
    assert plan.floor == pytest.approx(floor)  # default: as accurate as the cloud model alone
    # the CNN is the reference itself: every request can stay on the device
    assert cnn.share.share == 1.0 and cnn.system_accuracy == pytest.approx(floor)
    # the MLP keeps what its confidence allows, as an independent computation from its examples says
    arrays = dict(np.load(variants_dir / "validate-digits-mlp" / "confidence.npz"))
    assert 0.3 < mlp.share.share < 1.0
    assert mlp.share.share == pytest.approx(largest_share_meeting(arrays, floor), abs=1 / 200)
    assert mlp.system_accuracy >= floor - 1e-9
    # so the same scenario gives different money, and the one that keeps more on the device is cheaper
    assert mlp.result.inputs.on_device_share == Decimal(str(mlp.share.share))
    assert cnn.cost_per_1k < mlp.cost_per_1k
    assert cnn.breakeven_month < mlp.breakeven_month
    assert cnn.saving > mlp.saving > 0
    assert cnn.measured.estimate and cnn.measured.device == "raspberry-pi-5"  # the device priced
    assert plan.recommended is cnn
    assert plan.recommendation.startswith("Choose digits-cnn on raspberry-pi-5:")
    assert len(re.findall(r"[.!?](?:\s|$)", plan.recommendation)) == 1  # one sentence


def test_a_model_larger_than_the_device_memory_does_not_fit(variants_dir, profiles_dir, tmp_path):
    from toolkit.plan import build_plan, load_variants
    from toolkit.plan.report import write_plan

    variants = load_variants([variants_dir / "digits-cnn"])
    plan = build_plan(variants, ["tiny-board", "raspberry-pi-5"], SCENARIO, profiles_dir=profiles_dir)
    options = {o.device: o for o in plan.options}
    tiny = options["tiny-board"]
    assert variants[0].size_bytes / 2**20 > 0.02
    assert not tiny.fit.fits and tiny.fit.ram_mb == pytest.approx(0.02, rel=1e-3) and tiny.fit.ram_needed_mb > 0.02
    assert "does not fit" in " ".join(tiny.blockers())
    assert plan.recommended is options["raspberry-pi-5"]
    assert plan.options[-1] is tiny  # never recommended, ranked after every option that can be
    write_plan(plan, tmp_path)
    assert "does not fit" in (tmp_path / "plan.md").read_text()
    assert json.loads((tmp_path / "plan.json").read_text())["options"][-1]["fit"]["fits"] is False


def test_a_share_fixed_by_the_scenario_is_used_and_said(variants_dir):
    from toolkit.plan import build_plan, load_variants

    scenario = {**SCENARIO, "router": {"on_device_share": "50%"}}
    plan = build_plan(load_variants([variants_dir / "digits-mlp"]), ["raspberry-pi-5"], scenario)
    option = plan.options[0]
    assert option.share.share == 0.5 and option.share.how == "fixed"
    assert option.result.inputs.on_device_share == Decimal("0.5")
    assert any("fixed by the scenario" in note for note in plan.notes)


def test_share_rule_on_a_curve_with_known_numbers():
    from toolkit.plan.share import choose_share
    from toolkit.validate.metrics import Confidence

    # 6 examples; the device is wrong on the two least confident, the reference always right
    confidence = Confidence("logits", "labels", probability=np.array([0.99, 0.95, 0.9, 0.9, 0.6, 0.5]),
                            margin=np.zeros(6), correct=np.array([1, 1, 1, 1, 0, 0], bool),
                            reference_correct=np.ones(6, bool))
    curve = confidence.curve()
    assert [row[1] for row in curve["points"]] == [0, 1, 2, 4, 5, 6]  # no cut inside the 0.9 tie
    exact = choose_share(curve, 1.0)
    assert exact.share == pytest.approx(4 / 6) and exact.threshold == 0.9 and exact.meets_floor
    looser = choose_share(curve, 5 / 6)
    assert looser.share == pytest.approx(5 / 6) and looser.threshold == 0.6
    # a cloud model stated to be right 90% of the time: at best (4 + 0.9 × 2) / 6 = 96.7%
    stated = choose_share(curve, 0.95, cloud_accuracy=0.9)
    assert stated.meets_floor and stated.share == pytest.approx(4 / 6)
    unreachable = choose_share(curve, 0.97, cloud_accuracy=0.9)
    assert not unreachable.meets_floor and unreachable.share == pytest.approx(4 / 6)
    assert unreachable.system_accuracy == pytest.approx((4 + 0.9 * 2) / 6)


def test_plan_cli_writes_the_ranking(run_cli, variants_dir, tmp_path):
    scenario = tmp_path / "s.yaml"
    scenario.write_text(yaml.safe_dump({**SCENARIO, "name": "<script>alert(1)</script>"}))
    out = tmp_path / "plan"
    result = run_cli("--json", "plan", variants_dir / "digits-cnn", variants_dir / "digits-mlp",
                     "--devices", "raspberry-pi-5,pixel-8", "--scenario", scenario, "-o", out)
    assert result.exit_code == 0, result.stderr[-2000:]
    data = result.json()
    assert len(data["options"]) == 4 and data["recommended"]["variant"] == "digits-cnn"
    assert {o["latency_ms"]["how"] for o in data["options"]} == {"estimate"}
    assert all(o["cost_per_1k_requests"] > 0 and o["breakeven_month"] > 0 for o in data["options"])
    page = (out / "plan.html").read_text()
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page
    for name in ("plan.md", "plan.json", "cost_accuracy.png", "share_curves.png"):
        assert (out / name).stat().st_size > 0
    assert data["recommendation"] in result.stderr  # the human ranking goes to stderr with --json


@pytest.mark.parametrize("case", ["unknown device", "missing folder", "no validation", "not a run"])
def test_plan_bad_input_is_one_line_and_exit_2(run_cli, variants_dir, tmp_path, case):
    scenario = tmp_path / "s.yaml"
    scenario.write_text(yaml.safe_dump(SCENARIO))
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "manifest.json").write_text(json.dumps({"stage": "export", "model_file": "model.onnx"}))
    args = {
        "unknown device": [variants_dir / "digits-cnn", "--devices", "raspbery-pi-5"],
        "missing folder": [tmp_path / "nowhere", "--devices", "raspberry-pi-5"],
        "no validation": [bare, "--devices", "raspberry-pi-5"],
        "not a run": ["--run", bare, "--devices", "raspberry-pi-5"],
    }[case]
    result = run_cli("plan", *args, "--scenario", scenario, "-o", tmp_path / "out")
    assert result.exit_code == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_accuracy_options_are_checked():
    from toolkit.plan import parse_accuracy

    assert parse_accuracy("98%", "--min-accuracy") == pytest.approx(0.98)
    assert parse_accuracy("0.98", "--min-accuracy") == pytest.approx(0.98)
    for bad in ("1,5", "150%", "-0.1", "high"):
        with pytest.raises(BadInput):
            parse_accuracy(bad, "--min-accuracy")
