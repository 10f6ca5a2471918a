"""`edgeward distill` on the data adapters: an image folder written with Pillow (class sub-folders
give the labels) and JSONL text tokenized by a tiny BERT folder built from a config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

WORDS = "the a movie film good bad great awful plot actor is was very not".split()


def write_digit_images(folder: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """8x8 grayscale PNGs in one sub-folder per class; pixels are the digits' [0, 1] values times 255."""
    from PIL import Image

    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray((image[0] * 255).round().astype(np.uint8), "L").save(folder / str(label) / f"{index:04d}.png")


@pytest.fixture(scope="module")
def digit_images(tmp_path_factory) -> tuple[Path, Path]:
    from toolkit.data import digits_split

    x_train, x_test, y_train, y_test = digits_split()
    root = tmp_path_factory.mktemp("distill-images")
    write_digit_images(root / "train", x_train[:600], y_train[:600])
    write_digit_images(root / "val", x_test[:200], y_test[:200])
    return root / "train", root / "val"


def test_distill_on_an_image_folder(run_cli, tmp_path, digit_images):
    train, val = digit_images
    result = run_cli("--json", "distill", "--teacher", "builtin:digits-cnn", "--student", "shrink:0.5",
                     "--data", train, "--val", val, "--channels", "1", "--epochs", "8", "--lr", "0.01",
                     "--batch-size", "32", "--patience", "8",
                     "-o", tmp_path / "student")
    assert result.exit_code == 0, result.stderr
    summary = result.json()
    # the labels came from the class folders: the builtin teacher scores on them as on the digits
    assert summary["accuracy"]["teacher"] > 0.93
    assert summary["accuracy"]["student"] > 0.85  # measured 0.94 with 400 images
    assert summary["agreement"]["student"] > 0.85
    assert summary["parameters"]["student"] < summary["parameters"]["teacher"] / 2
    manifest = json.loads((tmp_path / "student" / "manifest.json").read_text())
    assert manifest["data"]["train_examples"] == 600 and manifest["data"]["val_examples"] == 200
    assert manifest["data"]["classes"] == [str(digit) for digit in range(10)]

    # the student is a SOURCE like any other: validated on the same folder against its labels
    check = run_cli("--json", "validate", tmp_path / "student", "--reference", "builtin:digits-cnn",
                    "--data", val, "--channels", "1", "--no-gate", "drop", "--no-gate", "agreement",
                    "--no-gate", "sqnr", "--no-record")
    assert check.exit_code == 0, check.stderr
    (figures,) = check.json()["outputs"]
    assert figures["candidate_accuracy"] == pytest.approx(summary["accuracy"]["student"], abs=1e-6)
    assert figures["reference_accuracy"] == pytest.approx(summary["accuracy"]["teacher"], abs=1e-6)


def test_distill_names_image_data_that_does_not_fit_the_teacher(run_cli, tmp_path, digit_images):
    train, val = digit_images
    nhwc = run_cli("distill", "--teacher", "builtin:digits-cnn", "--student", "shrink:0.5", "--data", train,
                   "--val", val, "--channels", "1", "--layout", "nhwc", "-o", tmp_path / "a")
    assert nhwc.exit_code == 2
    assert "NHWC" in nhwc.stderr and "--layout nchw" in nhwc.stderr
    rgb = run_cli("distill", "--teacher", "builtin:digits-cnn", "--student", "shrink:0.5", "--data", train,
                  "--val", val, "-o", tmp_path / "b")
    assert rgb.exit_code == 2
    assert "--channels 1" in rgb.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def reviews(count: int, seed: int) -> tuple[list[str], list[str]]:
    """Short sentences; a review is good when it holds the word "good"."""
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 9)))) for _ in range(count)]
    return texts, ["good" if "good" in text.split() else "bad" for text in texts]


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory) -> Path:
    """A 2-layer, hidden-32 BERT classifier from a config with its WordPiece tokenizer, trained for
    60 steps on the reviews task (class 0 = bad, 1 = good), so that agreeing with it means something."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    root = tmp_path_factory.mktemp("distill-bert")
    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab), model_max_length=16)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=5 + len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=32, num_labels=2,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = BertForSequenceClassification(config)
    texts, labels = reviews(400, seed=1)
    encoded = tokenizer(texts, padding="max_length", max_length=16, truncation=True, return_tensors="pt")
    targets = torch.tensor([int(label == "good") for label in labels])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    try:
        model.train()
        for _ in range(60):
            index = torch.randperm(len(texts), generator=generator)[:64]
            optimizer.zero_grad()
            model(**{name: tensor[index] for name, tensor in encoded.items()}, labels=targets[index]).loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    model.eval().save_pretrained(root / "bert")
    tokenizer.save_pretrained(root / "bert")
    return root / "bert"


def test_distill_on_jsonl_text_with_a_bert_folder(run_cli, tmp_path, bert_folder):
    texts, labels = reviews(120, seed=0)
    lines = [json.dumps({"review": text, "stars": label}) for text, label in zip(texts, labels, strict=True)]
    lines.insert(5, "{not json")
    data = tmp_path / "reviews.jsonl"
    data.write_text("\n".join(lines) + "\n")

    result = run_cli("--json", "distill", "--teacher", bert_folder, "--student", "layers:1", "--data", data,
                     "--text-field", "review", "--label-field", "stars", "--epochs", "3", "-o", tmp_path / "student")
    assert result.exit_code == 0, result.stderr
    assert "line 6" in result.stderr  # the line that is not JSON is listed, not fatal
    summary = result.json()
    # "bad" < "good": sorted class names index the teacher's classes as it was trained
    assert summary["accuracy"]["teacher"] > 0.9
    assert summary["agreement"]["student"] > 0.8
    assert summary["parameters"]["student"] < summary["parameters"]["teacher"]
    manifest = json.loads((tmp_path / "student" / "manifest.json").read_text())
    assert manifest["data"]["train_examples"] + manifest["data"]["val_examples"] == 120
    assert manifest["data"]["val_examples"] == 12  # 10% held out
    assert manifest["data"]["classes"] == ["bad", "good"]
    assert len(manifest["student_layers_from_teacher"]) == 1
    # the student folder carries the tokenizer, so it reads the same JSONL on its own
    from toolkit.data import load_data

    options = "text_field=review&label_field=stars"
    tokens = load_data(f"{data}?{options}&preprocessor={tmp_path / 'student'}")
    teacher_tokens = load_data(f"{data}?{options}&preprocessor={bert_folder}")
    for name in teacher_tokens.inputs:
        np.testing.assert_array_equal(tokens.inputs[name], teacher_tokens.inputs[name])


def test_text_flags_with_builtin_or_npz_data_are_refused(run_cli, tmp_path):
    result = run_cli("distill", "--teacher", "builtin:digits-cnn", "--student", "shrink:0.5", "--image-size", "8",
                     "-o", tmp_path / "a")
    assert result.exit_code == 2
    assert "--image-size would be ignored for builtin:digits:train" in result.stderr
    assert not (tmp_path / "a").exists()
