"""Recipe checks beyond test_pipeline's: unknown keys in a section, paths read from the
recipe's folder, numbers kept as written."""

from __future__ import annotations

import pytest
import yaml

from toolkit.errors import BadInput
from toolkit.pipeline.recipe import load_recipe


def _problems(data: dict) -> str:
    with pytest.raises(BadInput) as caught:
        load_recipe(data)
    return str(caught.value)


def test_unknown_key_in_a_section_is_refused_with_a_suggestion():
    message = _problems({"source": "builtin:digits-cnn", "distill": {"student": "shrink:0.5", "epoch": 3}})
    assert "unknown key 'distill.epoch' (did you mean epochs?)" in message


def test_wrong_types_are_named_and_numbers_are_not_read_from_text():
    message = _problems({"source": "builtin:digits-cnn", "validate": {"data": "builtin:digits:test", "max_drop": "2"},
                         "bench": {"runs": 1.5}, "quantize": "auto"})
    assert "validate.max_drop must be a number, not '2'" in message
    assert "bench.runs must be an integer, not 1.5" in message
    assert message.startswith("recipe: 2 problem(s)")  # validate is given, so mode auto has its data


def test_auto_without_validation_data_is_refused():
    message = _problems({"source": "builtin:digits-cnn", "quantize": {"modes": ["auto"]}})
    assert "quantize mode 'auto' needs validation data" in message


def test_relative_paths_are_read_from_the_recipe_folder(tmp_path, monkeypatch):
    folder = tmp_path / "recipes"
    folder.mkdir()
    (folder / "calibration.npz").write_bytes(b"placeholder: only its presence is checked here")
    (folder / "held-out.npz").write_bytes(b"placeholder")
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump({
        "source": "builtin:digits-cnn",
        "quantize": {"modes": ["static-int8"], "calibration": "calibration.npz"},
        "validate": {"data": "held-out.npz", "max_drop": 2},
    }))
    monkeypatch.chdir(tmp_path)  # not the recipe's folder
    recipe = load_recipe(path)
    assert recipe.calibration == str(folder / "calibration.npz")
    assert recipe.validate == {"data": str(folder / "held-out.npz"), "max_drop": 2}
    assert isinstance(recipe.validate["max_drop"], int)  # as written: step keys do not change
    assert recipe.name == "digits-cnn" and recipe.export == ["onnx"] and recipe.bench_runs == 50
