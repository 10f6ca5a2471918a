"""Data adapters on data the tests make: image folders, JSONL/CSV text, Parquet, saved datasets, WAV.

Each goes through calibration (static int8), validation and auto, through the CLI where cheap.
The text model is a tiny BERT built from a config with a WordPiece tokenizer written here;
the audio model is a tiny convolution net fed by a Wav2Vec2 feature extractor made in code.
"""

from __future__ import annotations

import json
import math
import wave
from pathlib import Path

import numpy as np
import pytest

WORDS = "the a movie film good bad great awful plot actor is was very not".split()


# ------------------------------------------------------------------ data the tests make


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory) -> Path:
    """The digits test split as 16x16 grayscale PNGs in class folders, plus one broken file.

    Pixels keep the digits' own 0..16 levels, so `scale=0.0625` gives back the exact values."""
    from PIL import Image

    from toolkit.data import digits_split

    _, x_test, _, y_test = digits_split()
    root = tmp_path_factory.mktemp("digit-images")
    for index, (image, label) in enumerate(zip(x_test, y_test, strict=True)):
        folder = root / str(label)
        folder.mkdir(exist_ok=True)
        pixels = (image[0] * 16).round().astype(np.uint8)
        Image.fromarray(pixels, "L").resize((16, 16), Image.NEAREST).save(folder / f"{index:04d}.png")
    (root / "3" / "broken.png").write_bytes(b"this is not a png")
    return root


def image_spec(folder: Path) -> str:
    # box downscaling of a 2x nearest upscale gives the 8x8 digits back
    return f"{folder}?resample=box&scale=0.0625"


IMAGE_FLAGS = ("--image-size", "8", "--channels", "1")


@pytest.fixture(scope="module")
def bert_onnx(tmp_path_factory) -> Path:
    """A tiny BERT classifier from a config, its WordPiece tokenizer, exported by Edgeward to ONNX."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    from toolkit.export import export

    root = tmp_path_factory.mktemp("bert")
    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=5 + len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=32, num_labels=2)
    BertForSequenceClassification(config).eval().save_pretrained(root / "bert")
    BertTokenizerFast(vocab_file=str(vocab), model_max_length=16).save_pretrained(root / "bert")
    export(str(root / "bert"), to="onnx", out_dir=root / "bert-onnx")
    return root / "bert-onnx"


def sentences(count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(3, 9))) for _ in range(count)]


def float_predictions(model: Path, dataset) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(model / "model.onnx"))
    names = [node.name for node in session.get_inputs()]
    return session.run(None, {name: dataset.inputs[name] for name in names})[0].argmax(axis=1)


@pytest.fixture(scope="module")
def text_files(tmp_path_factory, bert_onnx):
    """reviews.jsonl (one line not JSON) labelled with the float model's own answers; pairs.csv."""
    from toolkit.data import load_data

    root = tmp_path_factory.mktemp("text")
    texts = sentences(24, seed=1)
    unlabelled = root / "unlabelled.jsonl"
    unlabelled.write_text("".join(json.dumps({"review": text}) + "\n" for text in texts))
    labels = float_predictions(bert_onnx, load_data(f"{unlabelled}?text_field=review&preprocessor={bert_onnx}"))
    names = ["negative", "positive"]
    lines = [json.dumps({"review": text, "stars": names[label]}) for text, label in zip(texts, labels, strict=True)]
    lines.insert(2, "{this line is not json")
    jsonl = root / "reviews.jsonl"
    jsonl.write_text("\n".join(lines) + "\n")
    pairs = root / "pairs.csv"
    second = sentences(24, seed=2)
    pairs.write_text("premise,hypothesis,label\n" + "".join(
        f"{a},{b},{label}\n" for a, b, label in zip(texts, second, labels, strict=True)))
    return {"jsonl": jsonl, "csv": pairs, "texts": texts, "pairs": second, "labels": labels}


# ------------------------------------------------------------------ images


def test_image_folder_calibrates_validates_and_auto_quantizes(tmp_path, run_cli, digit_folder, digits_cnn_onnx):
    spec = image_spec(digit_folder)
    result = run_cli("quantize", digits_cnn_onnx, "--mode", "static-int8", "--calibration", spec, *IMAGE_FLAGS,
                     "-o", tmp_path / "int8")
    assert result.exit_code == 0, result.stderr
    assert "skipped 1 unreadable" in result.stderr and "3/broken.png" in result.stderr

    on_images = run_cli("--json", "validate", tmp_path / "int8", "--reference", digits_cnn_onnx,
                        "--data", spec, *IMAGE_FLAGS)
    on_builtin = run_cli("--json", "validate", tmp_path / "int8", "--reference", digits_cnn_onnx,
                         "--data", "builtin:digits:test")
    assert on_images.exit_code == on_builtin.exit_code == 0, on_images.stderr
    images, builtin = on_images.json(), on_builtin.json()
    assert images["samples"] == builtin["samples"] == 450
    # the same pixels, in another order: the same accuracy to the example
    for key in ("reference_accuracy", "candidate_accuracy"):
        assert images["outputs"][0][key] == pytest.approx(builtin["outputs"][0][key])
    assert images["outputs"][0]["reference_accuracy"] > 0.9
    assert images["outputs"][0]["agreement"] == pytest.approx(builtin["outputs"][0]["agreement"])

    auto = run_cli("quantize", digits_cnn_onnx, "--mode", "auto", "--data", spec, *IMAGE_FLAGS,
                   "--calibration", spec, "-o", tmp_path / "auto")
    assert auto.exit_code == 0, auto.stderr
    assert (tmp_path / "auto" / "manifest.json").is_file()


def test_image_labels_come_from_sorted_class_folders(digit_folder):
    from toolkit.data import digits_split, load_data
    from toolkit.errors import EdgewardWarning

    with pytest.warns(EdgewardWarning, match="skipped 1 unreadable: 3/broken.png"):
        dataset = load_data(f"{image_spec(digit_folder)}&size=8&channels=1", ["x"])
    _, x_test, _, y_test = digits_split()
    assert dataset.meta["classes"] == [str(digit) for digit in range(10)]
    assert dataset.inputs["x"].shape == (450, 1, 8, 8) and dataset.inputs["x"].dtype == np.float32
    order = np.argsort([f"{label}/{index:04d}" for index, label in enumerate(y_test)], kind="stable")
    np.testing.assert_array_equal(dataset.labels, y_test[order])
    np.testing.assert_allclose(dataset.inputs["x"], x_test[order], atol=1e-6)


def test_layout_mismatch_is_named(run_cli, digit_folder, digits_cnn_onnx):
    result = run_cli("validate", digits_cnn_onnx, "--reference", digits_cnn_onnx, "--data", image_spec(digit_folder),
                     *IMAGE_FLAGS, "--layout", "nhwc")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert "NHWC" in lines[-1] and "NCHW" in lines[-1] and "--layout nchw" in lines[-1], result.stderr


def test_nothing_usable_is_exit_2_listing_the_files(tmp_path, run_cli, digits_cnn_onnx):
    for index in range(7):
        (tmp_path / "bad" / "cats").mkdir(parents=True, exist_ok=True)
        (tmp_path / "bad" / "cats" / f"{index}.jpg").write_bytes(b"\xff\xd8 truncated")
    result = run_cli("validate", digits_cnn_onnx, "--reference", digits_cnn_onnx, "--data", tmp_path / "bad")
    assert result.exit_code == 2
    line = result.stderr.strip().splitlines()[-1]
    assert "nothing usable, 7 unreadable" in line and "cats/0.jpg" in line and "and 2 more" in line


def test_preprocessed_tensors_are_cached_by_content_and_options(tmp_path, digit_folder):
    import shutil

    from toolkit.data import load_data
    from toolkit.paths import cache_dir

    folder = tmp_path / "digits"
    shutil.copytree(digit_folder / "4", folder / "4")
    first = load_data(f"{folder}?size=8&channels=1")
    again = load_data(f"{folder}?size=8&channels=1")
    assert again.meta["cache_key"] == first.meta["cache_key"]
    assert (cache_dir() / "data" / f"{first.meta['cache_key']}.npz").is_file()
    np.testing.assert_array_equal(again.inputs["pixel_values"], first.inputs["pixel_values"])
    other_options = load_data(f"{folder}?size=4&channels=1")
    assert other_options.meta["cache_key"] != first.meta["cache_key"]
    assert other_options.inputs["pixel_values"].shape[2:] == (4, 4)
    next(folder.rglob("*.png")).write_bytes((digit_folder / "7" / next(iter(sorted(
        p.name for p in (digit_folder / "7").iterdir())))).read_bytes())
    changed = load_data(f"{folder}?size=8&channels=1")
    assert changed.meta["cache_key"] != first.meta["cache_key"]


def test_preprocessor_config_preprocesses_as_transformers_does(tmp_path):
    from PIL import Image
    from transformers import CLIPImageProcessor, ViTImageProcessor

    from toolkit.data import load_data

    rng = np.random.default_rng(0)
    images = tmp_path / "photos"
    images.mkdir()
    for index, (width, height) in enumerate([(40, 30), (25, 50), (64, 64)]):
        pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels, "RGB").save(images / f"{index}.png")
    decoded = [np.asarray(Image.open(path).convert("RGB")) for path in sorted(images.iterdir())]
    processors = {
        "vit": ViTImageProcessor(size={"height": 24, "width": 24}),
        "clip": CLIPImageProcessor(size={"shortest_edge": 20}, crop_size={"height": 16, "width": 16}),
    }
    for name, processor in processors.items():
        processor.save_pretrained(tmp_path / name)
        expected = processor(decoded, return_tensors="np")["pixel_values"]
        ours = load_data(f"{images}?preprocessor={tmp_path / name}").inputs["pixel_values"]
        assert ours.shape == expected.shape, name
        np.testing.assert_allclose(ours, expected, atol=1e-5, err_msg=name)


# ------------------------------------------------------------------ text


def test_text_jsonl_calibrates_validates_and_lists_bad_lines(tmp_path, run_cli, bert_onnx, text_files):
    spec = f"{text_files['jsonl']}?label_field=stars"
    # the tokenizer comes from the model's artifact folder (the export keeps it beside model.onnx)
    result = run_cli("quantize", bert_onnx, "--mode", "static-int8", "--calibration", spec, "--text-field", "review",
                     "-o", tmp_path / "int8")
    assert result.exit_code == 0, result.stderr
    assert "line 3 (not JSON)" in result.stderr

    report = run_cli("--json", "validate", tmp_path / "int8", "--reference", bert_onnx, "--data", spec,
                     "--text-field", "review", "--no-gate", "drop", "--no-gate", "agreement", "--no-gate", "sqnr")
    assert report.exit_code == 0, report.stderr
    figures = report.json()
    assert figures["samples"] == 24
    # labels are the float model's own answers: the float reference scores 100% on them
    assert figures["outputs"][0]["reference_accuracy"] == 1.0
    assert 0.0 <= figures["outputs"][0]["agreement"] <= 1.0


def test_text_pairs_from_csv_tokenize_as_the_tokenizer_does(bert_onnx, text_files):
    from transformers import AutoTokenizer

    from toolkit.data import load_data

    dataset = load_data(f"{text_files['csv']}?preprocessor={bert_onnx}&text_field=premise"
                        "&text_pair_field=hypothesis&max_length=24", ["input_ids", "attention_mask", "token_type_ids"])
    tokenizer = AutoTokenizer.from_pretrained(bert_onnx, local_files_only=True)
    expected = tokenizer(text_files["texts"], text_files["pairs"], padding="max_length", truncation=True,
                         max_length=24, return_tensors="np")
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        np.testing.assert_array_equal(dataset.inputs[name], expected[name])
    assert dataset.inputs["token_type_ids"].max() == 1  # the second sentence is there
    np.testing.assert_array_equal(dataset.labels, text_files["labels"])


def test_text_needs_a_tokenizer(run_cli, tmp_path, digits_cnn_onnx, text_files):
    result = run_cli("validate", digits_cnn_onnx, "--reference", digits_cnn_onnx, "--data", text_files["jsonl"])
    assert result.exit_code == 2
    assert "needs a tokenizer" in result.stderr and "--preprocessor" in result.stderr


def test_text_csv_auto_quantizes(tmp_path, run_cli, bert_onnx, text_files):
    result = run_cli("quantize", bert_onnx, "--mode", "auto", "--data", text_files["csv"], "--text-field", "premise",
                     "--max-drop", "5", "--min-agreement", "0.9", "--budget", "120", "-o", tmp_path / "auto")
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((tmp_path / "auto" / "manifest.json").read_text())
    assert manifest["stage"] == "quantize"


# ------------------------------------------------------------------ tables


def test_parquet_of_arrays_validates_like_the_builtin_data(tmp_path, run_cli, digits_cnn_onnx):
    import pyarrow
    import pyarrow.parquet as parquet

    from toolkit.data import digits_split

    _, x_test, _, y_test = digits_split()
    table = pyarrow.table({"x": x_test.tolist(), "label": y_test.tolist()})
    parquet.write_table(table, tmp_path / "digits.parquet")
    on_parquet = run_cli("--json", "validate", digits_cnn_onnx, "--reference", digits_cnn_onnx,
                         "--data", tmp_path / "digits.parquet")
    on_builtin = run_cli("--json", "validate", digits_cnn_onnx, "--reference", digits_cnn_onnx,
                         "--data", "builtin:digits:test")
    assert on_parquet.exit_code == 0, on_parquet.stderr
    assert on_parquet.json()["samples"] == 450
    assert on_parquet.json()["outputs"][0]["reference_accuracy"] == on_builtin.json()["outputs"][0]["reference_accuracy"]


def test_parquet_and_saved_dataset_text_equal_the_jsonl(tmp_path, run_cli, bert_onnx, text_files):
    import datasets
    import pyarrow
    import pyarrow.parquet as parquet

    from toolkit.data import load_data
    from toolkit.errors import EdgewardWarning

    stars = [["negative", "positive"][label] for label in text_files["labels"]]
    columns = {"review": text_files["texts"], "stars": stars}
    parquet.write_table(pyarrow.table(columns), tmp_path / "reviews.parquet")
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(columns),
                          "test": datasets.Dataset.from_dict(columns)}).save_to_disk(str(tmp_path / "saved"))
    options = f"?preprocessor={bert_onnx}&text_field=review&label_field=stars"
    with pytest.warns(EdgewardWarning, match="line 3"):
        from_jsonl = load_data(f"{text_files['jsonl']}{options}")
    for spec in (f"{tmp_path / 'reviews.parquet'}{options}", f"{tmp_path / 'saved'}{options}"):
        dataset = load_data(spec)
        assert sorted(dataset.inputs) == sorted(from_jsonl.inputs)
        for name in from_jsonl.inputs:
            np.testing.assert_array_equal(dataset.inputs[name], from_jsonl.inputs[name])
        np.testing.assert_array_equal(dataset.labels, from_jsonl.labels)
    assert from_jsonl.meta["classes"] == sorted(set(stars))  # sorted class names, labels index them
    assert [from_jsonl.meta["classes"][label] for label in from_jsonl.labels] == stars

    calibrated = run_cli("quantize", bert_onnx, "--mode", "static-int8", "--calibration", tmp_path / "saved",
                         "--text-field", "review", "--label-field", "stars", "-o", tmp_path / "int8")
    assert calibrated.exit_code == 0, calibrated.stderr
    report = run_cli("--json", "validate", tmp_path / "int8", "--reference", bert_onnx, "--data",
                     tmp_path / "reviews.parquet", "--text-field", "review", "--label-field", "stars",
                     "--no-gate", "drop", "--no-gate", "agreement", "--no-gate", "sqnr")
    assert report.exit_code == 0, report.stderr
    assert report.json()["samples"] == 24 and report.json()["outputs"][0]["reference_accuracy"] == 1.0


# ------------------------------------------------------------------ audio

RATE = 8000
SECONDS = 0.5


def write_wav(path: Path, frequency: float, rate: int, width: int = 2, channels: int = 1) -> None:
    times = np.arange(int(rate * SECONDS)) / rate
    signal = 0.5 * np.sin(2 * math.pi * frequency * times)
    if width == 2:
        frames = (signal * 32767).astype("<i2")
    else:
        frames = ((signal + 1) * 127.5).astype(np.uint8)
    frames = np.repeat(frames[:, None], channels, axis=1)
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(width)
        writer.setframerate(rate)
        writer.writeframes(frames.tobytes())


@pytest.fixture(scope="module")
def audio_case(tmp_path_factory):
    """WAV files of two tones in class folders (16 kHz mono and 8 kHz 8-bit stereo), one broken;
    a Wav2Vec2 feature extractor; a tiny 1-D convolution classifier in ONNX."""
    import torch
    from transformers import Wav2Vec2FeatureExtractor

    root = tmp_path_factory.mktemp("audio")
    for label, base in (("high", 1500.0), ("low", 300.0)):
        (root / "clips" / label).mkdir(parents=True)
        for index in range(6):
            if index % 2:
                write_wav(root / "clips" / label / f"{index}.wav", base + 20 * index, 16000)
            else:
                write_wav(root / "clips" / label / f"{index}.wav", base + 20 * index, RATE, width=1, channels=2)
    (root / "clips" / "low" / "broken.wav").write_bytes(b"RIFF\x00\x00not a wave")
    Wav2Vec2FeatureExtractor(sampling_rate=RATE, do_normalize=True).save_pretrained(root / "extractor")

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Unflatten(1, (1, -1)), torch.nn.Conv1d(1, 8, 64, stride=16), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten(), torch.nn.Linear(8, 2)).eval()
    model = root / "tone.onnx"
    torch.onnx.export(net, (torch.zeros(2, int(RATE * SECONDS)),), str(model), dynamo=True, external_data=False,
                      input_names=["input_values"], output_names=["logits"],
                      dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    return root


def test_wav_folder_through_the_feature_extractor(tmp_path, run_cli, audio_case):
    from transformers import Wav2Vec2FeatureExtractor

    from toolkit.data import load_data
    from toolkit.data.audio import read_wav
    from toolkit.errors import EdgewardWarning

    spec = f"{audio_case / 'clips'}?preprocessor={audio_case / 'extractor'}"
    with pytest.warns(EdgewardWarning, match="low/broken.wav"):
        dataset = load_data(spec)
    assert dataset.inputs["input_values"].shape == (12, int(RATE * SECONDS))  # 16 kHz files resampled to 8 kHz
    assert dataset.meta["classes"] == ["high", "low"] and dataset.labels.tolist() == [0] * 6 + [1] * 6
    samples, rate = read_wav(audio_case / "clips" / "high" / "0.wav")  # 8-bit stereo at the extractor's rate
    extractor = Wav2Vec2FeatureExtractor.from_pretrained(audio_case / "extractor")
    expected = extractor(samples, sampling_rate=rate, return_tensors="np")["input_values"][0]
    np.testing.assert_allclose(dataset.inputs["input_values"][0], expected, atol=1e-5)

    model = audio_case / "tone.onnx"
    flags = ("--preprocessor", audio_case / "extractor")
    calibrated = run_cli("quantize", model, "--mode", "static-int8", "--calibration", audio_case / "clips", *flags,
                         "-o", tmp_path / "int8")
    assert calibrated.exit_code == 0, calibrated.stderr
    assert "skipped 1 unreadable" in calibrated.stderr and "low/broken.wav" in calibrated.stderr
    report = run_cli("--json", "validate", tmp_path / "int8", "--reference", model, "--data", audio_case / "clips",
                     *flags, "--no-gate", "drop", "--no-gate", "agreement")
    assert report.exit_code == 0, report.stderr
    figures = report.json()
    assert figures["samples"] == 12 and figures["outputs"][0]["sqnr_db"] > 20
    auto = run_cli("quantize", model, "--mode", "auto", "--data", audio_case / "clips", *flags,
                   "--max-drop", "100", "--min-agreement", "0.5", "-o", tmp_path / "auto")
    assert auto.exit_code == 0, auto.stderr


# ------------------------------------------------------------------ specs and recipes


def test_spec_options_and_flags_read_the_same(tmp_path):
    from toolkit.data import parse_spec, with_options
    from toolkit.errors import BadInput

    spec = with_options("images:photos?size=224", size="32", layout="nhwc", preprocessor=None)
    parsed = parse_spec(spec)
    assert parsed.kind == "images" and parsed.path == "photos"
    assert parsed.options == {"size": "224", "layout": "nhwc"}  # the spec's own option wins
    assert with_options("builtin:digits:test", size="8") == "builtin:digits:test"
    with pytest.raises(BadInput, match="unknown data option.*colour"):
        parse_spec("photos?colour=red")


def test_recipe_accepts_data_specs_relative_to_its_folder(tmp_path, digit_folder):
    import shutil

    from toolkit.errors import BadInput
    from toolkit.pipeline.recipe import load_recipe

    shutil.copytree(digit_folder / "1", tmp_path / "images" / "1")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("name: r\nsource: builtin:digits-cnn\nexport: [onnx]\n"
                      "validate: {data: 'images:images?size=8&channels=1'}\n")
    loaded = load_recipe(recipe)
    assert loaded.validate["data"] == f"images:{tmp_path / 'images'}?size=8&channels=1"
    recipe.write_text("name: r\nsource: builtin:digits-cnn\nexport: [onnx]\n"
                      "validate: {data: 'images?tint=red'}\n")
    with pytest.raises(BadInput, match="tint"):
        load_recipe(recipe)
