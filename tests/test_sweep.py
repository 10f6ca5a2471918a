"""Sweeps: a recipe with several sources runs every source × quantize mode × device not excluded,
and the break-even step ranks all of them in one plan; serially here, and on a local Ray cluster
(2 CPUs) in the loopback-only namespace, with the same ranking.

The third source is a logistic regression on the digits, trained here with scikit-learn and
written as an ONNX file, so the sweep mixes builtin torch models with a model from a file.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import yaml

from toolkit.errors import BadInput
from toolkit.pipeline import plan, run
from toolkit.pipeline.recipe import load_recipe

MODES = ["dynamic-int8", "static-int8", "fp16"]
SOURCES = ["digits-cnn", "digits-mlp", "logreg"]
DEVICES = ["localhost", "raspberry-pi-5"]
EXCLUDE = [
    {"source": "digits-mlp", "mode": "fp16"},  # the model itself: no fp16 digits-mlp anywhere
    {"mode": "static-int8", "device": "raspberry-pi-5"},  # one device only: still built and benched on localhost
]


def excluded(source: str, mode: str, device: str) -> bool:
    return (source, mode) == ("digits-mlp", "fp16") or (mode, device) == ("static-int8", "raspberry-pi-5")


EXPECTED = {(f"{source}-{'export-onnx' if mode == 'fp32' else f'quantize-onnx-{mode}'}", device)
            for source in SOURCES for mode in ["fp32", *MODES] for device in DEVICES
            if not excluded(source, mode, device)}


def write_logreg_onnx(path: Path) -> Path:
    """A logistic regression on the digits' 64 pixels, as an ONNX graph (Flatten, MatMul, Add)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from sklearn.linear_model import LogisticRegression

    from toolkit.data import load_data

    train = load_data("builtin:digits:train")
    pixels = train.inputs["x"].reshape(len(train.labels), -1)
    classifier = LogisticRegression(max_iter=500).fit(pixels, train.labels)
    weights = numpy_helper.from_array(classifier.coef_.T.astype(np.float32), "weights")
    bias = numpy_helper.from_array(classifier.intercept_.astype(np.float32), "bias")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["flat"], axis=1),
         helper.make_node("MatMul", ["flat", "weights"], ["scores"]),
         helper.make_node("Add", ["scores", "bias"], ["logits"])],
        "logreg",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [weights, bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def sweep_scenario() -> dict:
    """The demo's parcel-locker scenario, with no edge.device: each option is priced on its own device."""
    demo = yaml.safe_load(resources.files("toolkit.pipeline").joinpath("demo.yaml").read_text())
    scenario = demo["breakeven"]
    del scenario["edge"]["device"]
    return scenario


def sweep_recipe(folder: Path) -> dict:
    write_logreg_onnx(folder / "logreg.onnx")
    return {
        "name": "digits-sweep",
        "source": ["builtin:digits-cnn", "builtin:digits-mlp", "logreg.onnx"],
        "export": ["onnx"],
        "quantize": {"modes": MODES, "calibration": "builtin:digits:train"},
        "validate": {"data": "builtin:digits:test", "max_drop": 2.0, "min_agreement": 0.95},
        "bench": {"devices": ["localhost"], "estimate": ["raspberry-pi-5"], "runs": 10},
        "exclude": EXCLUDE,
        "breakeven": sweep_scenario(),
    }


def write_recipe(folder: Path, data: dict) -> Path:
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def ranking(out_dir: Path) -> list[dict]:
    return json.loads((out_dir / "breakeven" / "plan.json").read_text())["options"]


@pytest.fixture(scope="module")
def sweep_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sweep")
    write_recipe(folder, sweep_recipe(folder))
    return folder


@pytest.fixture(scope="module")
def serial_sweep(sweep_folder):
    return run(load_recipe(sweep_folder / "recipe.yaml"), sweep_folder / "serial")


# ---------------------------------------------------------------- the recipe and its plan


def test_a_sweep_is_planned_per_source_with_stable_step_names(sweep_folder):
    recipe = load_recipe(sweep_folder / "recipe.yaml")
    assert recipe.sweep == {"digits-cnn": "builtin:digits-cnn", "digits-mlp": "builtin:digits-mlp",
                            "logreg": str(sweep_folder / "logreg.onnx")}
    steps = plan(recipe, sweep_folder / "out")
    names = [step.name for step in steps]
    assert len(names) == len(set(names))
    models = {step.name for step in steps if step.stage in ("export", "quantize")}
    assert models == {model for model, _ in EXPECTED}
    measured = {(s.inputs[0], s.options["device"]) for s in steps if s.stage in ("bench", "estimate")}
    assert measured == EXPECTED
    breakeven = next(step for step in steps if step.stage == "breakeven")
    assert sorted(map(tuple, breakeven.options["skip"])) == sorted(
        (model, "raspberry-pi-5") for model in models if "static-int8" in model)

    # a source dropped from (or added to) the sweep leaves every other source's steps and keys as they were
    bigger = load_recipe({**yaml.safe_load((sweep_folder / "recipe.yaml").read_text()),
                          "source": ["builtin:digits-mlp", str(sweep_folder / "logreg.onnx")]}, sweep_folder)
    keys = {step.name: step.key for step in steps}
    for step in plan(bigger, sweep_folder / "out"):
        if step.stage != "breakeven":
            assert keys[step.name] == step.key, step.name


def test_one_source_keeps_its_plain_step_names():
    recipe = load_recipe({"source": "builtin:digits-cnn", "quantize": ["fp16"],
                          "exclude": [{"mode": "fp32"}]})
    assert recipe.sweep is None
    steps = plan(recipe, Path("out"))
    assert [step.name for step in steps] == ["export-onnx", "quantize-onnx-fp16"]
    assert not steps[0].deployable  # excluded as a model, kept as the input of its quantize step


def test_sources_may_be_named_in_a_mapping():
    recipe = load_recipe({"source": {"cnn": "builtin:digits-cnn", "mlp": "builtin:digits-mlp"},
                          "exclude": [{"source": "builtin:digits-mlp", "format": "onnx"}]})
    assert [step.name for step in plan(recipe, Path("out"))] == ["cnn-export-onnx"]


def problems(data: dict) -> str:
    with pytest.raises(BadInput) as caught:
        load_recipe(data)
    return str(caught.value)


def test_bad_sweeps_are_refused_with_every_problem_named():
    message = problems({"source": ["builtin:digits-cnn", "builtin:digits-cnn"], "quantize": ["fp16"],
                        "bench": {"estimate": ["raspberry-pi-5"]},
                        "exclude": [{"modes": "fp16"}, {"device": "pixel-8"}, {"mode": "int4"}, {}]})
    assert message.startswith("recipe: 5 problem(s)")
    assert "2 sources are named 'digits-cnn': name them" in message
    assert "exclude[0]: unknown key 'modes' (did you mean mode?)" in message
    assert "exclude[1]: device 'pixel-8' is not in the sweep (choose from raspberry-pi-5)" in message
    assert "exclude[2]: mode 'int4' is not in the sweep (choose from fp32, fp16)" in message
    assert "exclude[3] must name one or more of source, format, mode, device" in message
    message = problems({"source": "builtin:digits-cnn", "exclude": [{"source": "digits-mlp"}]})
    assert "exclude[0]: source 'digits-mlp' is not in the sweep (did you mean digits-cnn?)" in message
    assert "not in the sweep (the recipe names no device)" in problems(
        {"source": "builtin:digits-cnn", "exclude": [{"device": "localhost"}]})
    assert "'source' lists no model" in problems({"source": []})


def test_an_exclusion_that_matches_nothing_is_bad_input():
    # fp16 models are excluded outright, so no fp16 model is ever benched on localhost
    recipe = load_recipe({"source": ["builtin:digits-cnn"], "quantize": ["fp16"], "bench": {"devices": ["localhost"]},
                          "exclude": [{"mode": "fp16"}, {"mode": "fp16", "device": "localhost"}]})
    with pytest.raises(BadInput, match=r"exclude\[1\] .* matches nothing the recipe would run"):
        plan(recipe, Path("out"))


def test_sweep_cli_bad_input_is_one_line(run_cli, tmp_path):
    path = write_recipe(tmp_path, {"source": ["builtin:digits-cnn"], "exclude": [{"mode": "int4"}]})
    result = run_cli("run", path, "--dry-run")
    assert result.exit_code == 2
    assert "exclude[0]: mode 'int4' is not in the sweep" in result.stderr and "Traceback" not in result.stderr


# ---------------------------------------------------------------- running it


@pytest.mark.slow
def test_serial_sweep_ranks_every_combination_not_excluded(serial_sweep):
    options = ranking(serial_sweep.out_dir)
    assert len(options) == len(EXPECTED) == 19
    assert {(option["variant"], option["device"]) for option in options} == EXPECTED
    assert [option["rank"] for option in options] == list(range(1, len(options) + 1))
    for option in options:  # each priced with its own figures: measured on localhost, estimated for the Pi
        assert option["cost_per_1k_requests"] is not None and option["cost_per_1k_requests"] > 0
        assert option["latency_ms"]["how"] == ("measured" if option["device"] == "localhost" else "estimate")
        assert 0.85 < option["accuracy_on_device"] <= 1
    rows = {row["model"]: row for row in serial_sweep.rows}
    assert set(rows) == {model for model, _ in EXPECTED}
    # the three sources are three different models: their fp32 sizes differ
    assert len({rows[f"{source}-export-onnx"]["size_bytes"] for source in SOURCES}) == 3


@pytest.mark.slow
def test_a_second_run_of_the_sweep_reuses_every_step(serial_sweep, sweep_folder):
    again = run(load_recipe(sweep_folder / "recipe.yaml"), serial_sweep.out_dir)
    assert {step["status"] for step in again.steps} == {"reused"}
    assert ranking(again.out_dir) == ranking(serial_sweep.out_dir)


# Ray binds its servers to the machine's own address: its tests run only in the loopback-only
# network namespace that scripts/test makes (see tests/test_ray_executor.py)
in_loopback_namespace = pytest.mark.skipif(os.environ.get("EDGEWARD_TEST_LOOPBACK_ONLY") != "1",
                                           reason="Ray tests run in a loopback-only network namespace: use scripts/test")


@pytest.mark.slow
@in_loopback_namespace
def test_the_sweep_on_a_local_ray_cluster_gives_the_same_ranking(serial_sweep, sweep_folder):
    pytest.importorskip("ray")
    on_ray = run(load_recipe(sweep_folder / "recipe.yaml"), sweep_folder / "ray", executor="ray")
    assert {step["status"] for step in on_ray.steps} == {"ran"}
    serial_options, ray_options = ranking(serial_sweep.out_dir), ranking(on_ray.out_dir)
    assert len(ray_options) == len(EXPECTED) and {(o["variant"], o["device"]) for o in ray_options} == EXPECTED

    def figures(option, root: Path) -> dict:
        """What does not depend on a timing: the model, its accuracy and share, its fit, and on the Pi
        (an estimate, not a measurement) its latency and every cost figure."""
        keep = ["model", "accuracy_on_device", "system_accuracy", "on_device_share"]
        if option["device"] == "raspberry-pi-5":
            keep += ["fit", "latency_ms", "cost_per_1k_requests", "one_off", "breakeven_month", "saving_over_horizon"]
        figures = {key: option[key] for key in keep} | {"fits": option["fit"]["fits"]}  # localhost: RSS measured
        return json.loads(json.dumps(figures).replace(str(root), "ROOT"))

    serial_figures = {(o["variant"], o["device"]): figures(o, serial_sweep.out_dir) for o in serial_options}
    ray_figures = {(o["variant"], o["device"]): figures(o, on_ray.out_dir) for o in ray_options}
    assert ray_figures == serial_figures


@pytest.mark.slow
@in_loopback_namespace
def test_demo_runs_on_a_local_ray_cluster(run_cli, tmp_path):
    pytest.importorskip("ray")
    result = run_cli("--json", "demo", "-o", tmp_path / "demo", "--executor", "ray")
    assert result.exit_code == 0, result.stderr
    summary = result.json()
    assert summary["steps"] and {step["status"] for step in summary["steps"]} == {"ran"}
    options = ranking(tmp_path / "demo")
    assert {option["device"] for option in options} == {"raspberry-pi-5"}  # the demo's scenario prices its Pi
    assert {option["variant"] for option in options} == {row["model"] for row in summary["summary"]}


def test_demo_takes_the_executor_options(run_cli):
    result = run_cli("demo", "--help")
    assert result.exit_code == 0 and "--executor" in result.stdout and "--address" in result.stdout
    result = run_cli("demo", "--address", "127.0.0.1:6379")
    assert result.exit_code == 2 and "--address needs --executor ray" in result.stderr
