"""Distillation of the builtin digits CNN: size, accuracy measured from the saved weights,
the label-only baseline, determinism, the export → quantize → validate chain, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch.nn as nn


def five_class_student():
    """A student whose output (5 classes) cannot match the digits teacher (10)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 5))


def tiny_linear_student():
    """A factory student: a linear classifier on the 64 pixels."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    """`edgeward distill` digits-cnn → shrink:0.5 with --baseline, through the CLI (one run, shared)."""
    import contextlib
    import io

    from toolkit.cli import main

    out = tmp_path_factory.mktemp("distill") / "digits-student"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["--json", "distill", "--teacher", "builtin:digits-cnn", "--student", "shrink:0.5", "--baseline",
                     "-o", str(out)])
    assert code == 0
    return out, json.loads(stdout.getvalue())


@pytest.mark.slow
def test_shrunk_student_is_small_accurate_and_beats_labels_alone(distilled, digits_cnn, digits_test):
    from toolkit.artifacts import read_manifest
    from toolkit.models.digits import accuracy
    from toolkit.models.registry import rebuild

    out, summary = distilled
    manifest = read_manifest(out)
    assert manifest["stage"] == "distill"
    assert manifest["rebuild"] == {"kind": "digits", "family": "digits-cnn", "width": 0.5}
    assert manifest["teacher"] == "builtin:digits-cnn" and manifest["student_spec"] == "shrink:0.5"
    assert manifest["hyper"]["temperature"] == 4.0 and manifest["hyper"]["alpha"] == 0.7
    assert manifest["data"] == {"train": "builtin:digits:train", "val": "builtin:digits:test",
                                "train_examples": 1347, "val_examples": 450}

    # measured independently: rebuild from the saved weights, score on the test split
    student = rebuild(manifest["rebuild"], out / "model.safetensors")
    x, y = digits_test.inputs["x"], digits_test.labels
    student_accuracy = accuracy(student, x, y)
    teacher_accuracy = accuracy(digits_cnn, x, y)
    teacher_params = sum(p.numel() for p in digits_cnn.parameters())
    student_params = sum(p.numel() for p in student.parameters())

    assert student_params / teacher_params <= 0.30
    assert manifest["parameters"] == {"teacher": teacher_params, "student": student_params}
    assert teacher_accuracy - student_accuracy <= 0.015, (teacher_accuracy, student_accuracy)
    assert manifest["accuracy"]["student"] == pytest.approx(student_accuracy)
    assert manifest["accuracy"]["teacher"] == pytest.approx(teacher_accuracy)
    assert summary["accuracy"]["baseline"] is not None
    assert student_accuracy >= summary["accuracy"]["baseline"], summary["accuracy"]
    assert manifest["accuracy"]["baseline"] == summary["accuracy"]["baseline"]
    assert len(manifest["history"]) >= manifest["best_epoch"] >= 1


@pytest.mark.slow
def test_distilled_student_goes_through_export_quantize_validate(distilled, tmp_path):
    from toolkit.export import export
    from toolkit.quantize import quantize
    from toolkit.validate import validate

    student_dir, _ = distilled
    onnx = export(str(student_dir), "onnx", tmp_path / "onnx", dynamic_batch=True)
    assert onnx.max_abs_error < 1e-4
    int8 = quantize(onnx.out_dir, "static-int8", tmp_path / "int8", calibration="builtin:digits:train")
    report = validate(int8.out_dir, str(student_dir), "builtin:digits:test", max_drop=1.5, min_agreement=0.97)
    assert report.passed, report.failure_line()
    assert report.outputs[0].candidate_accuracy >= 0.95

    tflite = export(str(student_dir), "tflite", tmp_path / "tflite")
    assert tflite.max_abs_error < 1e-4
    report = validate(tflite.out_dir, str(student_dir), "builtin:digits:test")
    assert report.passed, report.failure_line()


def test_factory_student_and_pure_distillation_are_deterministic(tmp_path):
    """Unlabeled data → pure distillation; the same seed gives the same weights; the artifact rebuilds."""
    import torch

    from toolkit.data import Dataset, load_data
    from toolkit.distill import distill
    from toolkit.models.registry import rebuild

    train = load_data("builtin:digits:train")
    unlabeled = Dataset(train.inputs, None, "digits-train-unlabeled")
    kwargs = dict(val="builtin:digits:test", epochs=3)
    events = []
    first = distill("builtin:digits-cnn", "test_distill:tiny_linear_student", unlabeled, out_dir=tmp_path / "a",
                    progress=events.append, **kwargs)
    second = distill("builtin:digits-cnn", "test_distill:tiny_linear_student", unlabeled, **kwargs)
    assert [(e.task, e.completed, e.total) for e in events] == [("distill", 1, 3), ("distill", 2, 3), ("distill", 3, 3)]
    assert events[-1].status.startswith("loss ") and "val acc" in events[-1].status  # the val data has labels
    for key, value in first.student.state_dict().items():
        assert torch.equal(value, second.student.state_dict()[key])
    assert first.history == second.history
    assert first.student_accuracy > 0.8  # learnt digits from the teacher's outputs alone
    record = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert record["hyper"]["alpha"] == 1.0
    assert record["rebuild"]["factory"] == "test_distill:tiny_linear_student"
    rebuilt = rebuild(record["rebuild"], tmp_path / "a" / "model.safetensors")
    x = torch.as_tensor(train.inputs["x"][:16])
    assert torch.equal(rebuilt(x), first.student(x).detach())


def _one_error_line(result) -> str:
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert result.exit_code == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--student", "test_distill:five_class_student"], "outputs differ"),
        (["--student", "shrink:0.5", "--temperature", "0"], "temperature"),
        (["--student", "shrink:0.5", "--alpha", "1.5"], "alpha"),
        (["--student", "shrink:0.5", "--alpha", "-0.1"], "alpha"),
        (["--student", "layers:2"], "layers:2 applies to Hugging Face"),
        (["--student", "shrink:2"], "width factor"),
        (["--student", "nonsense"], "unknown student spec"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(run_cli, tmp_path, extra, needle):
    out = tmp_path / "out"
    result = run_cli("distill", "--teacher", "builtin:digits-cnn", *extra, "-o", out)
    assert needle in _one_error_line(result)
    assert not out.exists()


def test_empty_data_and_onnx_teacher_with_shrink_are_refused(run_cli, tmp_path, digits_cnn_onnx):
    empty = tmp_path / "empty.npz"
    np.savez(empty, x=np.zeros((0, 1, 8, 8), np.float32), labels=np.zeros((0,), np.int64))
    result = run_cli("distill", "--teacher", "builtin:digits-cnn", "--student", "shrink:0.5", "--data", empty,
                     "-o", tmp_path / "a")
    assert "no examples" in _one_error_line(result)

    result = run_cli("distill", "--teacher", digits_cnn_onnx, "--student", "shrink:0.5", "--data",
                     "builtin:digits:train", "-o", tmp_path / "b")
    assert "ONNX/TFLite" in _one_error_line(result)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_existing_output_is_not_overwritten(run_cli, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = run_cli("distill", "--teacher", "builtin:digits-cnn", "--student", "shrink:0.5", "-o", out)
    assert "--force" in _one_error_line(result)
    assert (out / "keep.txt").read_text() == "mine"


def test_onnx_teacher_distils_into_a_builtin_student(tmp_path, digits_cnn_onnx, digits_test):
    """A teacher that only exists as an ONNX file: its outputs are computed once by onnxruntime."""
    from toolkit.distill import distill

    result = distill(str(digits_cnn_onnx), "builtin:digits-mlp", "builtin:digits:train",
                     val="builtin:digits:test", epochs=4)
    assert result.teacher_parameters > result.student_parameters > 0
    assert result.teacher_accuracy > 0.95
    assert result.student_accuracy > 0.85


def test_help_has_examples(run_cli):
    result = run_cli("distill", "--help")
    assert result.exit_code == 0
    assert "Examples:" in result.stdout and "shrink:0.5" in result.stdout
