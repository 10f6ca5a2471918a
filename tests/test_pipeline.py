"""The pipeline: recipe checks, the plan, reuse of unchanged steps, and the demo end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from toolkit.errors import BadInput
from toolkit.pipeline.recipe import load_recipe


def test_recipe_lists_every_problem_at_once(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({
        "source": "builtin:digits-cnn",
        "export": ["onnx", "coreml"],
        "quantize": {"modes": ["static-int9"]},
        "validate": {"data": "builtin:digits:test", "max_drop": -1},
        "bench": {"devices": ["raspbery-pi-5"]},
        "colour": "blue",
    }))
    with pytest.raises(BadInput) as caught:
        load_recipe(path)
    message = str(caught.value)
    for fragment in ("coreml", "static-int9", "max_drop", "raspbery-pi-5", "raspberry-pi-5", "colour"):
        assert fragment in message, fragment


def test_recipe_cli_bad_input_is_one_line(run_cli, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("export: [onnx]\n")
    result = run_cli("run", path)
    assert result.exit_code == 2
    assert "source" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert run_cli("run", tmp_path / "missing.yaml").exit_code == 2


def test_plan_keys_change_only_downstream(tmp_path):
    from toolkit.pipeline import plan

    data = {
        "name": "t",
        "source": "builtin:digits-cnn",
        "export": ["onnx"],
        "quantize": {"modes": ["dynamic-int8"], "calibration": "builtin:digits:train"},
        "validate": {"data": "builtin:digits:test", "max_drop": 2.0},
    }
    first = {s.name: s.key for s in plan(load_recipe(data), tmp_path)}
    data["validate"]["max_drop"] = 3.0
    second = {s.name: s.key for s in plan(load_recipe(data), tmp_path)}
    assert first["export-onnx"] == second["export-onnx"]
    assert first["quantize-onnx-dynamic-int8"] == second["quantize-onnx-dynamic-int8"]
    assert first["validate-export-onnx"] != second["validate-export-onnx"]


@pytest.mark.slow
def test_demo_runs_end_to_end_and_reuses_everything(run_cli, tmp_path):
    out = tmp_path / "demo"
    first = run_cli("--json", "demo", "-o", out)
    assert first.exit_code == 0, first.stderr[-3000:]
    result = first.json()
    rows = {row["model"]: row for row in result["summary"]}
    assert {"export-onnx", "export-tflite"} <= set(rows)
    assert any(row["format"] == "onnx" and "int8" in (row["mode"] or "") for row in rows.values())
    assert any(row["format"] == "tflite" and "int8" in (row["mode"] or "") for row in rows.values())
    for row in rows.values():
        assert row["size_bytes"] > 0
        assert 0.9 <= row["accuracy"] <= 1.0
        assert row["p50_ms"] is not None and row["p50_ms"] > 0
    # the distilled student is validated against the teacher on the test split
    teacher = json.loads((out / "distill" / "manifest.json").read_text())
    assert teacher["stage"] == "distill"
    index = Path(result["report"]).read_text()
    for stage in ("distill", "export", "quantize", "validate", "bench", "estimate", "breakeven"):
        assert stage in index
    assert (out / "breakeven" / "breakeven.html").is_file()

    second = run_cli("--json", "demo", "-o", out)
    assert second.exit_code == 0
    statuses = {step["status"] for step in second.json()["steps"]}
    assert statuses == {"reused"}
    assert second.json()["summary"] == result["summary"]


def test_editing_only_the_scenario_redoes_only_the_report(run_cli, tmp_path):
    from toolkit.commands.demo import demo_recipe
    from toolkit.pipeline import plan

    recipe = demo_recipe()
    before = {s.name: s.key for s in plan(recipe, tmp_path)}
    recipe.breakeven = {**recipe.breakeven, "name": "edited"}
    after = {s.name: s.key for s in plan(recipe, tmp_path)}
    changed = [name for name in before if before[name] != after[name]]
    assert changed == ["breakeven"]
