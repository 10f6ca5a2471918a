"""Distill a language model (issue 15 item 6): a layers:1 student of a tiny decoder, against the
label-only baseline trained beside it, on real text.

The teacher is `builtin:tiny-lm`'s decoder (toolkit.lm.tiny): two layers trained for a few seconds
on 400 sentences of a small grammar whose choices are random. The students see only 30 sentences,
so the label-only one learns those sentences, while the distilled one also learns the teacher's
spread over the choices the grammar allows: on 80 held-out sentences its perplexity is lower.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    from toolkit.lm.tiny import build_tiny_lm

    return build_tiny_lm(tmp_path_factory.mktemp("lmdistill") / "teacher", steps=80)


@pytest.fixture(scope="module")
def few_sentences(tmp_path_factory) -> Path:
    from toolkit.lm.tiny import grammar_text

    path = tmp_path_factory.mktemp("lmtext") / "few.txt"
    path.write_text("\n".join(grammar_text(30, seed=5)) + "\n", encoding="utf-8")
    return path


def test_distilled_student_beats_the_label_only_baseline(teacher, few_sentences, tmp_path):
    import transformers

    from toolkit.artifacts import read_manifest
    from toolkit.lm.distill import distill_lm
    from toolkit.lm.tiny import HELDOUT_FILE, bundled_text

    out = tmp_path / "student"
    result = distill_lm(teacher, "layers:1", few_sentences, val=bundled_text(HELDOUT_FILE), steps=40,
                        max_length=32, batch_size=4, out_dir=out)
    figures = [result.teacher_perplexity, result.student_perplexity, result.baseline_perplexity]
    assert all(math.isfinite(value) and value >= 1 for value in figures)
    assert result.student_perplexity <= result.baseline_perplexity, result.summary()
    assert result.teacher_perplexity < result.baseline_perplexity  # the teacher saw the whole grammar
    assert result.heldout_tokens > 400 and result.steps == 40
    assert (result.teacher_layers, result.student_layers, result.layers_from_teacher) == (2, 1, [0])
    assert result.student_parameters < result.teacher_parameters

    for name in ("config.json", "model.safetensors", "tokenizer.json", "manifest.json"):
        assert (out / name).is_file(), name
    manifest = read_manifest(out)
    assert manifest["stage"] == "distill" and manifest["kind"] == "language-model"
    assert manifest["perplexity"]["student"] == pytest.approx(result.student_perplexity, rel=1e-5)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    assert reloaded.config.num_hidden_layers == 1 and reloaded.config.vocab_size == 32


def test_distill_command_on_a_language_model(teacher, few_sentences, tmp_path, run_cli):
    from toolkit.lm.tiny import HELDOUT_FILE, bundled_text

    out = tmp_path / "cli-student"
    done = run_cli("--json", "distill", "--teacher", teacher, "--student", "layers:1", "--data", few_sentences,
                   "--val", bundled_text(HELDOUT_FILE), "--steps", "4", "--max-length", "32", "-o", out)
    assert done.exit_code == 0, done.stderr
    record = done.json()
    assert record["kind"] == "language-model" and record["steps"] == 4 and record["window"] == 32
    assert all(record["perplexity"][side] > 1 for side in ("teacher", "student", "baseline"))
    assert json.loads((out / "manifest.json").read_text())["layers"]["student"] == 1


def test_a_student_with_another_vocabulary_is_refused(teacher, few_sentences, tmp_path, run_cli):
    import transformers

    from tests.test_lm import save_tokenizer

    other = tmp_path / "other"
    config = transformers.Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    transformers.Qwen2ForCausalLM(config).save_pretrained(other)
    save_tokenizer(other)  # another word list: token ids mean other words
    out = tmp_path / "never"
    done = run_cli("distill", "--teacher", teacher, "--student", other, "--data", few_sentences, "--steps", "2",
                   "-o", out)
    assert done.exit_code == 2
    assert "vocabulary" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not out.exists()

    (other / "tokenizer.json").unlink()  # no tokenizer to compare: the sizes of the vocabularies still differ
    done = run_cli("distill", "--teacher", teacher, "--student", other, "--data", few_sentences, "--steps", "2",
                   "-o", out)
    assert done.exit_code == 2 and "vocabulary" in done.stderr and not out.exists()


def test_bad_language_model_input(teacher, tmp_path, run_cli):
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    done = run_cli("distill", "--teacher", teacher, "--student", "layers:1", "--data", latin1, "-o", tmp_path / "a")
    assert done.exit_code == 2 and "UTF-8" in done.stderr
    text = tmp_path / "text.txt"
    text.write_text("the cat sat on the mat\n", encoding="utf-8")
    done = run_cli("distill", "--teacher", teacher, "--student", "layers:2", "--data", text, "-o", tmp_path / "b")
    assert done.exit_code == 2 and "layers:2" in done.stderr
    done = run_cli("distill", "--teacher", teacher, "--student", "shrink:0.5", "--data", text, "-o", tmp_path / "c")
    assert done.exit_code == 2 and "layers:N" in done.stderr
    assert not any((tmp_path / name).exists() for name in "abc")
