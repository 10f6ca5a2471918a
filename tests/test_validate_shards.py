"""Sharded validation: the same figures as one process, on the real digits models.

Accuracy, agreement, counts and the max abs error must be identical to the last digit;
the sums (mean abs error, SQNR, cosine) equal within 1e-9 relative (summation order).
The shards are cut on batch bounds, so dynamic int8 (whose scales depend on the batch)
sees the very batches it sees in one process.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from toolkit.validate.metrics import (
    compare_outputs,
    compare_stats,
    confidence_of,
    join_confidences,
    merge_stats,
)
from toolkit.validate.shards import shard_bounds

EXACT = ("candidate_accuracy", "reference_accuracy", "drop", "agreement", "max_abs_error", "nonfinite", "nan", "inf",
         "reference_nonfinite", "identical", "shape", "classification")
SUMMED = ("mean_abs_error", "sqnr_db", "cosine")


def assert_same_figures(sharded: list[dict], whole: list[dict]) -> None:
    assert [item["name"] for item in sharded] == [item["name"] for item in whole]
    for got, want in zip(sharded, whole, strict=True):
        for key in EXACT:
            assert got[key] == want[key], (got["name"], key, got[key], want[key])
        for key in SUMMED:
            if want[key] is None or not math.isfinite(want[key]):
                same_nan = got[key] is not None and want[key] is not None and math.isnan(got[key]) == math.isnan(want[key])
                assert got[key] == want[key] or same_nan, (key, got[key], want[key])
            else:
                assert got[key] == pytest.approx(want[key], rel=1e-9, abs=0), (key, got[key], want[key])


def test_shard_bounds_fall_on_batch_bounds():
    assert shard_bounds(450, 2, 32) == [(0, 256), (256, 450)]
    assert shard_bounds(450, 4, 32) == [(0, 128), (128, 256), (256, 384), (384, 450)]
    assert shard_bounds(10, 4, 32) == [(0, 10)]  # fewer batches than workers: one shard
    assert shard_bounds(450, 1, 64) == [(0, 450)]
    for start, _stop in shard_bounds(1000, 3, 48):
        assert start % 48 == 0


def test_bad_shard_options_are_bad_input():
    from toolkit.errors import BadInput
    from toolkit.validate.shards import sharded_figures

    for options, words in (({"workers": 0}, "--workers 0"), ({"executor": "dask"}, "unknown executor"),
                           ({"address": "10.0.0.1:6379"}, "--executor ray")):
        with pytest.raises(BadInput, match=words):
            sharded_figures(None, None, None, candidate_spec="a.onnx", reference_spec="b.onnx", source_options={},
                            batch_size=32, **options)


def test_merged_stats_equal_the_whole_on_awkward_outputs():
    """Token-level labels with ignored positions, NaN and Inf, a zero reference row: merging the
    stats of uneven shards gives the whole data's figures."""
    rng = np.random.default_rng(7)
    ref = rng.normal(size=(37, 5, 11)).astype(np.float32)
    cand = (ref + rng.normal(scale=0.05, size=ref.shape)).astype(np.float32)
    ref[3] = 0.0
    labels = rng.integers(0, 11, size=(37, 5))
    labels[rng.random(labels.shape) < 0.2] = -100
    pairs = [("logits", cand, "logits", ref)]
    whole, whole_errors = compare_outputs(pairs, labels)

    cuts = [0, 5, 6, 20, 37]
    parts = [compare_stats([("logits", cand[a:b], "logits", ref[a:b])], labels[a:b]) for a, b in zip(cuts, cuts[1:])]
    merged = [item.metrics() for item in merge_stats([stats for stats, _ in parts])]
    assert_same_figures([m.to_dict() for m in merged], [m.to_dict() for m in whole])
    assert whole[0].candidate_accuracy == merged[0].candidate_accuracy
    np.testing.assert_array_equal(np.concatenate([errors["logits"] for _, errors in parts]), whole_errors["logits"])

    confidence = join_confidences([confidence_of([("logits", cand[a:b], "logits", ref[a:b])], labels[a:b])
                                   for a, b in zip(cuts, cuts[1:])])
    assert confidence.curve() == confidence_of(pairs, labels).curve()

    broken = cand.copy()
    broken[30, 0, 0], broken[2, 1, 1] = np.nan, np.inf
    whole = compare_outputs([("logits", broken, "logits", ref)], None)[0]
    parts = [compare_stats([("logits", broken[a:b], "logits", ref[a:b])], None)[0] for a, b in zip(cuts, cuts[1:])]
    merged = [item.metrics() for item in merge_stats(parts)]
    assert_same_figures([m.to_dict() for m in merged], [m.to_dict() for m in whole])
    assert merged[0].nan == 1 and merged[0].inf == 1 and merged[0].max_abs_error == math.inf


@pytest.fixture(scope="module")
def dynamic_int8(tmp_path_factory, digits_cnn_onnx):
    from toolkit.quantize import quantize

    out = tmp_path_factory.mktemp("shards") / "dynamic-int8"
    return quantize(digits_cnn_onnx, "dynamic-int8", out).out_dir


def _figures(report) -> list[dict]:
    return report.to_dict()["outputs"]


@pytest.mark.parametrize("variant", ["float", "dynamic-int8"])
def test_two_processes_give_the_figures_of_one(variant, digits_cnn_onnx, dynamic_int8):
    from toolkit.validate import validate

    candidate = digits_cnn_onnx if variant == "float" else dynamic_int8
    options = {"data": "builtin:digits:test", "record": False, "batch_size": 32}
    whole = validate(candidate, "builtin:digits-cnn", **options)
    sharded = validate(candidate, "builtin:digits-cnn", workers=2, **options)
    assert (whole.shards, sharded.shards) == (1, 2)
    assert sharded.samples == whole.samples == 450
    assert_same_figures(_figures(sharded), _figures(whole))
    assert [g.passed for g in sharded.gates] == [g.passed for g in whole.gates]
    assert sharded.confidence.curve() == whole.confidence.curve()
    logits = _figures(whole)[0]
    assert logits["reference_accuracy"] > 0.95 and logits["agreement"] > 0.9
    if variant == "dynamic-int8":
        assert logits["max_abs_error"] > 0  # a real quantization error, not a copy of the reference


def test_shards_cut_on_batch_bounds_see_the_batches_of_one_run(dynamic_int8):
    """Dynamic int8's outputs depend on the batch: cut on batch bounds, each shard's outputs are
    exactly the one-process outputs of its examples."""
    from toolkit.data import load_data
    from toolkit.runtime import run_batched
    from toolkit.sources import open_any

    runner = open_any(str(dynamic_int8 / "model.onnx"))
    x = load_data("builtin:digits:test").inputs["x"]
    name = runner.inputs[0].name
    whole = run_batched(runner, {name: x}, batch_size=32)[0]
    joined = np.concatenate([run_batched(runner, {name: x[a:b]}, batch_size=32)[0]
                             for a, b in shard_bounds(len(x), 2, 32)])
    np.testing.assert_array_equal(joined, whole)


def test_cli_workers(run_cli, digits_cnn_onnx, dynamic_int8):
    common = ("--reference", "builtin:digits-cnn", "--data", "builtin:digits:test", "--no-record", "--batch-size", "64")
    one = run_cli("--json", "validate", dynamic_int8, *common)
    two = run_cli("--json", "validate", dynamic_int8, *common, "--workers", "2")
    assert two.exit_code == one.exit_code, two.stderr
    assert (one.json()["shards"], two.json()["shards"]) == (1, 2)
    assert_same_figures(two.json()["outputs"], one.json()["outputs"])

    bad = run_cli("validate", digits_cnn_onnx, *common, "--workers", "0")
    assert bad.exit_code == 2 and "--workers 0" in bad.stderr
    on_device = run_cli("validate", digits_cnn_onnx, *common, "--workers", "2", "--device", "localhost")
    assert on_device.exit_code == 2 and "--device" in on_device.stderr


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("EDGEWARD_TEST_LOOPBACK_ONLY") != "1",
                    reason="Ray tests run in a loopback-only network namespace: use scripts/test")
def test_ray_shards_give_the_figures_of_one(digits_cnn_onnx, dynamic_int8):
    pytest.importorskip("ray")
    from toolkit.validate import validate

    options = {"data": "builtin:digits:test", "record": False, "batch_size": 32}
    for candidate in (digits_cnn_onnx, dynamic_int8):
        whole = validate(candidate, "builtin:digits-cnn", **options)
        sharded = validate(candidate, "builtin:digits-cnn", workers=2, executor="ray", **options)
        assert sharded.shards == 2
        assert_same_figures(_figures(sharded), _figures(whole))
