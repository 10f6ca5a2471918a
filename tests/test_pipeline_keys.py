"""Pipeline step keys follow the content of every input: an edited .npz, device profile,
model folder or scenario redoes the steps that read it, and only those."""

from __future__ import annotations

import json

import numpy as np
import pytest

from toolkit.data import load_data
from toolkit.pipeline import plan, run
from toolkit.pipeline.recipe import load_recipe


def _statuses(result) -> dict[str, str]:
    return {record["step"]: record["status"] for record in result.steps}


def _write_profile(folder, bandwidth_gbps: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "test-board.yaml").write_text(
        "extends: raspberry-pi-5\n"
        f"memory_bandwidth_gbps: {{value: {bandwidth_gbps}, source: 'a test board'}}\n")


def _write_npz(path, count: int) -> None:
    test = load_data("builtin:digits:test")
    np.savez(path, x=test.inputs["x"][:count], labels=test.labels[:count])


@pytest.mark.slow
def test_an_edited_npz_or_profile_redoes_only_the_steps_that_read_it(tmp_path, monkeypatch):
    profiles = tmp_path / "profiles"
    _write_profile(profiles, 17.1)
    monkeypatch.setenv("EDGEWARD_PROFILES", str(profiles))
    data = tmp_path / "eval.npz"
    _write_npz(data, 450)
    recipe = {
        "name": "keys",
        "source": "builtin:digits-cnn",
        "export": ["onnx"],
        "quantize": {"modes": ["dynamic-int8"]},
        "validate": {"data": str(data), "max_drop": 5.0},
        "bench": {"estimate": ["test-board", "pixel-8"]},
    }
    out = tmp_path / "run"
    first = run(load_recipe(recipe), out)
    assert set(_statuses(first).values()) == {"ran"}
    report = json.loads((out / "validate-export-onnx" / "report.json").read_text())
    assert report["samples"] == 450
    estimate = json.loads((out / "bench" / "export-onnx-test-board-estimate" / "bench.json").read_text())
    assert estimate["latency"]["memory_bandwidth_gbps"] == 17.1

    _write_npz(data, 200)  # the same file name, other content
    second = _statuses(run(load_recipe(recipe), out))
    assert second == {
        "export-onnx": "reused", "quantize-onnx-dynamic-int8": "reused",
        "validate-export-onnx": "ran", "validate-quantize-onnx-dynamic-int8": "ran",
        "estimate-export-onnx-test-board": "reused", "estimate-export-onnx-pixel-8": "reused",
        "estimate-quantize-onnx-dynamic-int8-test-board": "reused",
        "estimate-quantize-onnx-dynamic-int8-pixel-8": "reused",
    }
    report = json.loads((out / "validate-export-onnx" / "report.json").read_text())
    assert report["samples"] == 200  # the rerun read the new file

    _write_profile(profiles, 4.0)
    third = _statuses(run(load_recipe(recipe), out))
    ran = sorted(name for name, status in third.items() if status == "ran")
    assert ran == ["estimate-export-onnx-test-board", "estimate-quantize-onnx-dynamic-int8-test-board"]
    estimate = json.loads((out / "bench" / "export-onnx-test-board-estimate" / "bench.json").read_text())
    assert estimate["latency"]["memory_bandwidth_gbps"] == 4.0  # the rerun read the edited profile

    assert set(_statuses(run(load_recipe(recipe), out)).values()) == {"reused"}


def _keys(recipe: dict, out) -> dict[str, str]:
    return {step.name: step.key for step in plan(load_recipe(recipe), out)}


def test_a_model_folder_source_is_hashed_by_its_content(tmp_path):
    folder = tmp_path / "hf"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text('{"hidden_size": 32}')
    (folder / "sub" / "weights.bin").write_bytes(b"\x00" * 64)
    recipe = {"source": str(folder), "export": ["onnx"], "validate": {"data": "builtin:digits:test"}}
    before = _keys(recipe, tmp_path / "out")
    assert _keys(recipe, tmp_path / "out") == before  # deterministic
    (folder / "sub" / "weights.bin").write_bytes(b"\x01" * 64)
    after = _keys(recipe, tmp_path / "out")
    assert after["export-onnx"] != before["export-onnx"]
    assert after["validate-export-onnx"] != before["validate-export-onnx"]
    (folder / "sub" / "weights.bin").rename(folder / "weights.bin")  # same bytes, another place
    assert _keys(recipe, tmp_path / "out")["export-onnx"] != after["export-onnx"]


def test_an_artifact_source_is_hashed_by_its_model_not_by_later_records(tmp_path):
    from toolkit.artifacts import new_manifest, update_manifest, write_manifest

    folder = tmp_path / "artifact"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"model bytes")
    write_manifest(folder, new_manifest("export", folder, source={"spec": "builtin:digits-cnn"}, options={}))
    recipe = {"source": str(folder), "export": ["onnx"]}
    before = _keys(recipe, tmp_path / "out")
    update_manifest(folder, validation={"passed": True, "created": "later"})  # a validate run records on it
    assert _keys(recipe, tmp_path / "out") == before
    (folder / "model.onnx").write_bytes(b"other model bytes")
    assert _keys(recipe, tmp_path / "out") != before


def test_the_calibration_file_and_the_scenario_device_are_inputs(tmp_path, monkeypatch):
    from toolkit.costs.example import EXAMPLE

    profiles = tmp_path / "profiles"
    _write_profile(profiles, 17.1)
    monkeypatch.setenv("EDGEWARD_PROFILES", str(profiles))
    calibration = tmp_path / "calibration.npz"
    _write_npz(calibration, 100)
    import yaml

    scenario = yaml.safe_load(EXAMPLE)
    scenario.setdefault("edge", {})["device"] = "test-board"
    recipe = {"source": "builtin:digits-cnn", "export": ["onnx"],
              "quantize": {"modes": ["static-int8", "dynamic-int8"], "calibration": str(calibration)},
              "breakeven": scenario}
    before = _keys(recipe, tmp_path / "out")
    _write_npz(calibration, 50)
    after = _keys(recipe, tmp_path / "out")
    changed = sorted(name for name in before if before[name] != after[name])
    assert changed == ["quantize-onnx-static-int8"]  # dynamic-int8 reads no calibration data
    _write_profile(profiles, 4.0)
    again = _keys(recipe, tmp_path / "out")
    assert [name for name in after if after[name] != again[name]] == ["breakeven"]


def test_a_data_specs_preprocessor_folder_is_an_input(tmp_path):
    """Editing the preprocessor_config.json a data spec names (preprocessor=DIR) changes the
    tensors, so it redoes the steps that read that data, and only those."""
    from PIL import Image

    images = tmp_path / "images" / "3"
    images.mkdir(parents=True)
    Image.fromarray(np.full((16, 16), 200, np.uint8), "L").save(images / "a.png")
    preprocessor = tmp_path / "preprocessor"
    preprocessor.mkdir()
    config = preprocessor / "preprocessor_config.json"
    config.write_text(json.dumps({"size": {"height": 8, "width": 8}, "image_mean": [0.5], "image_std": [0.5]}))
    spec = f"images:{tmp_path / 'images'}?channels=1&preprocessor={preprocessor}"
    recipe = {"source": "builtin:digits-cnn", "export": ["onnx"], "validate": {"data": spec}}
    before = _keys(recipe, tmp_path / "out")
    assert _keys(recipe, tmp_path / "out") == before  # deterministic
    config.write_text(json.dumps({"size": {"height": 8, "width": 8}, "image_mean": [0.0], "image_std": [1.0]}))
    after = _keys(recipe, tmp_path / "out")
    assert sorted(name for name in before if before[name] != after[name]) == ["validate-export-onnx"]
    (preprocessor / "tokenizer_config.json").write_text("{}")  # any file of the folder counts
    assert _keys(recipe, tmp_path / "out")["validate-export-onnx"] != after["validate-export-onnx"]
