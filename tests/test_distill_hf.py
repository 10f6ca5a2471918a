"""A BERT-like teacher built from a config and trained here on a synthetic text task,
distilled with layers:N into half its layers; the student keeps the teacher's answers
and exports to ONNX and TFLite."""

from __future__ import annotations

import numpy as np
import pytest

SEQUENCE = 12
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "a", "b", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(7, 32)]
TOKEN_A, TOKEN_B = 3, 4


def order_task(count: int, seed: int):
    """Token sequences holding one `a` and one `b`; the label says whether a comes first."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, len(VOCAB), size=(count, SEQUENCE))
    ids[:, 0] = 2  # [CLS]
    places = np.array([rng.choice(np.arange(1, SEQUENCE), 2, replace=False) for _ in range(count)])
    ids[np.arange(count), places[:, 0]] = TOKEN_A
    ids[np.arange(count), places[:, 1]] = TOKEN_B
    labels = (places[:, 0] < places[:, 1]).astype(np.int64)
    return ids.astype(np.int64), np.ones_like(ids), labels


@pytest.fixture(scope="module")
def bert_teacher(tmp_path_factory):
    """A 4-layer, hidden-32 BERT trained for a few seconds; saved as an HF folder with a tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    root = tmp_path_factory.mktemp("bert")
    ids, mask, labels = order_task(2000, seed=0)
    np.savez(root / "train.npz", input_ids=ids, attention_mask=mask, labels=labels)
    held_ids, held_mask, held_labels = order_task(500, seed=1)
    np.savez(root / "held.npz", input_ids=held_ids, attention_mask=held_mask, labels=held_labels)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=16, num_labels=2,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = BertForSequenceClassification(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    x, m, y = map(torch.as_tensor, (ids, mask, labels))
    try:
        model.train()
        for _ in range(8):
            order = torch.randperm(len(x), generator=generator)
            for start in range(0, len(x), 64):
                index = order[start : start + 64]
                optimizer.zero_grad()
                model(input_ids=x[index], attention_mask=m[index], labels=y[index]).loss.backward()
                optimizer.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    folder = root / "teacher"
    model.save_pretrained(folder, safe_serialization=True)
    (root / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    BertTokenizer(str(root / "vocab.txt")).save_pretrained(folder)
    with torch.no_grad():
        predicted = model(input_ids=torch.as_tensor(held_ids), attention_mask=torch.as_tensor(held_mask)).logits
    teacher_accuracy = float((predicted.argmax(1).numpy() == held_labels).mean())
    assert teacher_accuracy > 0.9, teacher_accuracy  # the task was learnt, so agreement means something
    return root, folder


@pytest.mark.slow
def test_layers_student_keeps_the_teacher_answers_and_exports(bert_teacher, run_cli, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from toolkit.artifacts import read_manifest
    from toolkit.export import export
    from toolkit.runtime import open_model, run_batched

    root, teacher_dir = bert_teacher
    out = tmp_path / "student"
    result = run_cli("distill", "--teacher", teacher_dir, "--student", "layers:2", "--data", root / "train.npz",
                     "--val", root / "held.npz", "--epochs", "10", "-o", out)
    assert result.exit_code == 0, result.stderr
    assert "epoch 1/10" in result.stderr  # progress, a line per epoch off a terminal

    manifest = read_manifest(out)
    assert manifest["student_spec"] == "layers:2" and manifest["student_layers_from_teacher"] == [0, 2]
    assert "vocab.txt" in manifest["tokenizer_files"]
    assert manifest["parameters"]["student"] < manifest["parameters"]["teacher"]

    # measured independently: reload both folders and compare their answers on held-out data
    held = np.load(root / "held.npz")
    feeds = {"input_ids": torch.as_tensor(held["input_ids"]), "attention_mask": torch.as_tensor(held["attention_mask"])}
    load = dict(use_safetensors=True, trust_remote_code=False, attn_implementation="eager")
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir, **load).eval()
    student = AutoModelForSequenceClassification.from_pretrained(out, **load).eval()
    assert student.config.num_hidden_layers == 2
    with torch.no_grad():
        teacher_pred = teacher(**feeds).logits.argmax(1).numpy()
        student_logits = student(**feeds).logits.numpy()
    agreement = float((student_logits.argmax(1) == teacher_pred).mean())
    assert agreement >= 0.9, agreement
    assert manifest["agreement"]["student"] == pytest.approx(agreement)
    assert AutoTokenizer.from_pretrained(out)("a w9 b")["input_ids"][1] == TOKEN_A

    shapes = {"input_ids": [1, SEQUENCE], "attention_mask": [1, SEQUENCE]}
    sample = {name: held[name][:64] for name in ("input_ids", "attention_mask")}
    for to in ("onnx", "tflite"):
        exported = export(str(out), to, tmp_path / to, input_shapes=shapes)
        assert exported.max_abs_error < 1e-4, (to, exported.max_abs_error)
        runner = open_model(exported.model_path)
        feeds_np = {spec.name: sample.get(spec.name, np.zeros_like(sample["input_ids"])) for spec in runner.inputs}
        logits = run_batched(runner, feeds_np)[0]
        assert np.abs(logits - student_logits[:64]).max() < 1e-3, to


def test_shrink_does_not_apply_to_a_hf_teacher(bert_teacher, run_cli, tmp_path):
    root, teacher_dir = bert_teacher
    result = run_cli("distill", "--teacher", teacher_dir, "--student", "shrink:0.5", "--data", root / "train.npz",
                     "-o", tmp_path / "out")
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and "use layers:N" in lines[0], result.stderr
    assert not (tmp_path / "out").exists()


def test_layers_beyond_the_teacher_are_refused(bert_teacher, run_cli, tmp_path):
    root, teacher_dir = bert_teacher
    result = run_cli("distill", "--teacher", teacher_dir, "--student", "layers:4", "--data", root / "train.npz",
                     "-o", tmp_path / "out")
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and "1 <= N < 4" in lines[0], result.stderr
