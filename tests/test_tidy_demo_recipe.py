"""`edgeward demo --llm --show-recipe` prints a recipe that runs from any folder: its texts are
builtin specs (builtin:tiny-lm:train, :heldout) the recipe loader resolves to the bundled files."""

from __future__ import annotations

import pytest
import yaml

LM_STAGES = ["distill", "export", "quantize", "validate", "bench", "validate", "bench", "breakeven"]


def _show_llm_recipe(run_cli, folder):
    shown = run_cli("demo", "--llm", "--show-recipe")
    assert shown.exit_code == 0, shown.stderr
    recipe = folder / "lm.yaml"
    recipe.write_text(shown.stdout)
    return recipe


def test_the_shown_llm_recipe_plans_from_another_folder(run_cli, tmp_path, monkeypatch):
    from toolkit.lm.tiny import HELDOUT_FILE, TRAIN_FILE, bundled_text

    monkeypatch.chdir(tmp_path)
    recipe = _show_llm_recipe(run_cli, tmp_path)
    written = yaml.safe_load(recipe.read_text())
    assert written["distill"]["data"] == "builtin:tiny-lm:train"
    assert written["validate"]["data"] == written["distill"]["val"] == "builtin:tiny-lm:heldout"

    planned = run_cli("--json", "run", recipe, "--dry-run")
    assert planned.exit_code == 0, planned.stderr
    steps = planned.json()["plan"]
    assert [step["stage"] for step in steps] == LM_STAGES
    assert {step["status"] for step in steps} == {"run"}
    distill, validate = steps[0]["options"], steps[3]["options"]
    assert distill["data"] == str(bundled_text(TRAIN_FILE)) and distill["val"] == str(bundled_text(HELDOUT_FILE))
    assert validate["data"] == str(bundled_text(HELDOUT_FILE))
    assert bundled_text(TRAIN_FILE).is_file() and bundled_text(HELDOUT_FILE).is_file()


def test_an_unknown_builtin_text_is_bad_input_naming_the_known_ones(run_cli, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"name": "x", "source": "builtin:tiny-lm",
                                      "validate": {"data": "builtin:tiny-lm:test"}}))
    result = run_cli("run", recipe, "--dry-run")
    assert result.exit_code == 2
    assert "builtin:tiny-lm:test" in result.stderr and "builtin:tiny-lm:heldout" in result.stderr


@pytest.mark.slow
def test_the_shown_llm_recipe_runs_from_another_folder_as_the_demo_does(run_cli, tmp_path, monkeypatch):
    """A real run (about a minute) of the printed recipe from a temporary folder; the demo then
    finds every step done: the printed recipe is the demo's, step for step."""
    monkeypatch.chdir(tmp_path)
    recipe = _show_llm_recipe(run_cli, tmp_path)
    out = tmp_path / "out"
    ran = run_cli("--json", "run", recipe, "-o", out)
    assert ran.exit_code == 0, ran.stderr[-3000:]
    assert {step["status"] for step in ran.json()["steps"]} == {"ran"}
    assert all(row["passed"] for row in ran.json()["summary"])
    demo = run_cli("--json", "demo", "--llm", "-o", out, "--dry-run")
    assert demo.exit_code == 0, demo.stderr
    assert {step["status"] for step in demo.json()["plan"]} == {"reuse"}
