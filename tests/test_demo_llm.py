"""The language-model recipe (issue 15 item 9): `edgeward demo --llm` builds builtin:tiny-lm from a
config, distills it to one layer, exports it with a KV cache, quantizes it to int4, validates both
models on held-out text, benches tokens/s on this host and prices them per token — all real.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_llm_runs_end_to_end_and_reuses_everything(run_cli, tmp_path):
    import onnx

    out = tmp_path / "demo-llm"
    first = run_cli("--json", "demo", "--llm", "-o", out)
    assert first.exit_code == 0, first.stderr[-3000:]
    result = first.json()
    rows = {row["model"]: row for row in result["summary"]}
    assert set(rows) == {"export-onnx", "quantize-onnx-int4-weight"}
    assert all(row["passed"] for row in rows.values())

    # the student: a 1-layer Hugging Face folder with its manifest, and its distillation figures
    student = out / "distill"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "manifest.json"):
        assert (student / name).is_file(), name
    distilled = json.loads((student / "manifest.json").read_text())
    assert distilled["layers"]["student"] == 1 and distilled["layers"]["teacher"] == 2
    perplexity = distilled["perplexity"]
    assert all(math.isfinite(perplexity[side]) and perplexity[side] > 1 for side in ("teacher", "student", "baseline"))

    # int4: MatMulNBits weights, a smaller file than the float export
    fp32, int4 = out / "export-onnx" / "model.onnx", out / "quantize-onnx-int4-weight" / "model.onnx"
    assert int4.stat().st_size < fp32.stat().st_size / 2
    assert "MatMulNBits" in {node.op_type for node in onnx.load(str(int4)).graph.node}

    # validation against the 2-layer teacher on held-out sentences: figures and gates agree
    for model in rows:
        report = json.loads((out / f"validate-{model}" / "report.json").read_text())
        assert report["kind"] == "language-model" and report["passed"]
        assert report["perplexity_ratio"] == pytest.approx(report["candidate_perplexity"]
                                                           / report["reference_perplexity"], rel=1e-4)
        assert 0.7 <= report["top1_agreement"] <= 1 and 0 <= report["mean_kl"] <= 0.15
        assert report["positions"] > 400

    # the bench: tokens per second measured here; the break-even's time per request comes from it
    breakeven = json.loads((out / "breakeven" / "step.json").read_text())["summary"]
    assert breakeven["chosen_model"] in rows and breakeven["breakeven_month"] is not None
    for model, priced in breakeven["per_model"].items():
        lm = json.loads((out / "bench" / f"{model}-localhost" / "bench.json").read_text())["language_model"]
        assert lm["decode_tokens_per_s"] > 0 and lm["ttft_ms_p50"] > 0
        # 64 tokens in (prefill scaled from the 16 benched), 31 more decode steps for 32 tokens out
        ttft, rate = Decimal(str(lm["ttft_ms_p50"])), Decimal(str(lm["decode_tokens_per_s"]))
        expected = ttft * 64 / 16 + 31 * Decimal(1000) / rate
        assert priced["latency_ms"] == pytest.approx(float(expected), rel=1e-9)
        assert priced["on_device_share"] == 0.9  # well inside the 1-second budget
    priced = json.loads((out / "breakeven" / "breakeven.json").read_text())
    assert priced["breakeven_month"] == pytest.approx(breakeven["breakeven_month"], abs=1e-3)  # JSON: 4 decimals
    assert "index.html" in result["report"] and Path(result["report"]).is_file()

    second = run_cli("--json", "demo", "--llm", "-o", out)
    assert second.exit_code == 0
    assert {step["status"] for step in second.json()["steps"]} == {"reused"}


def test_the_llm_recipe_plans_the_lm_stages(tmp_path, run_cli):
    from toolkit.commands.demo import demo_recipe
    from toolkit.pipeline import plan

    recipe = demo_recipe("demo_llm.yaml")
    assert recipe.source == "builtin:tiny-lm" and recipe.validate["max_ppl_ratio"] == 1.25
    assert Path(recipe.distill["data"]).is_file() and Path(recipe.validate["data"]).is_file()
    stages = [step.stage for step in plan(recipe, tmp_path)]
    assert stages == ["distill", "export", "quantize", "validate", "bench", "validate", "bench", "breakeven"]
    shown = run_cli("demo", "--llm", "--show-recipe")
    assert shown.exit_code == 0 and "builtin:tiny-lm" in shown.stdout
