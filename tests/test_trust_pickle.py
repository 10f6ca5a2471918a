"""A pickled whole-model .pt is refused by default and loads only with --trust-pickle."""

import torch


def test_pickled_model_needs_trust_pickle(run_cli, tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    path = tmp_path / "whole.pt"
    torch.save(model, path)
    refused = run_cli("export", path, "--to", "onnx", "-o", tmp_path / "out")
    assert refused.exit_code == 2
    assert "--trust-pickle" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "out").exists()
    trusted = run_cli("--json", "export", path, "--to", "onnx", "-o", tmp_path / "out", "--trust-pickle",
                      "--input-shape", "1x4")
    assert trusted.exit_code == 0, trusted.stderr
    assert trusted.json()["max_abs_error"] <= 1e-5


def test_pickled_state_dict_is_not_a_model_even_when_trusted(run_cli, tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(torch.nn.Linear(4, 3).state_dict(), path)
    result = run_cli("export", path, "--to", "onnx", "-o", tmp_path / "out", "--trust-pickle")
    assert result.exit_code == 2
    assert "not a model" in result.stderr
