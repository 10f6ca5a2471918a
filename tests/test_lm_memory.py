"""A quantized language model keeps its weights in model.onnx.data and can return only its last logits.

Why (benchmarks/results/lm_memory.md): onnxruntime maps an external-data file where it keeps an inline
model's parsed initializers beside MatMulNBits' prepacked copies, and a prefill that returns every
position's logits holds prompt x vocabulary floats twice. A tiny Qwen2 decoder built from a config
(hidden 64: its int4 blocks pass the 1 KiB external-data threshold), exported and quantized for real.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.test_lm import save_tokenizer


def make_decoder(folder: Path) -> Path:
    import torch
    import transformers

    config = transformers.Qwen2Config(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      eos_token_id=1, bos_token_id=1)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # weights of a realistic scale, so that the logits differ between positions
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.normal_(0, 1.0 / parameter.shape[1] ** 0.5)
    model.save_pretrained(folder)
    save_tokenizer(folder)
    return folder


@pytest.fixture(scope="module")
def int4(tmp_path_factory):
    from toolkit.export import export
    from toolkit.quantize import quantize

    root = tmp_path_factory.mktemp("lm-memory")
    exported = export(str(make_decoder(root / "hf")), "onnx", root / "onnx")
    return exported.out_dir, quantize(exported.out_dir, "int4-weight", root / "int4", block_size=32)


def test_the_quantized_folder_holds_model_onnx_data_listed_in_its_manifest(int4):
    import onnx

    from toolkit.artifacts import sha256_file
    from toolkit.safety.onnx import check_onnx_file, external_locations

    _, result = int4
    graph_file, data_file = result.out_dir / "model.onnx", result.out_dir / "model.onnx.data"
    assert graph_file.is_file() and data_file.is_file()
    assert data_file.stat().st_size > 4 * graph_file.stat().st_size  # the weights left the protobuf
    assert set(external_locations(check_onnx_file(graph_file))) == {"model.onnx.data"}
    listed = result.manifest["files"]["model.onnx.data"]
    assert listed == {"bytes": data_file.stat().st_size, "sha256": sha256_file(data_file)}
    assert result.size_bytes == graph_file.stat().st_size + data_file.stat().st_size
    model = onnx.load(str(graph_file))  # the weights load back from the data file
    ops = [node.op_type for node in model.graph.node]
    # every layer's (q, k and v in one, gate and up in one: toolkit/lm/onnx_merged_matmuls.py) and the LM head's
    assert ops.count("MatMulNBits") >= 2 * 4 + 1 and "MatMul" not in ops


def test_generate_and_bench_run_from_the_external_data_folder(int4, run_cli):
    from toolkit.lm.generate import generate
    from toolkit.lm.model import open_lm

    _, result = int4
    text = run_cli("generate", result.out_dir, "--prompt", "the cat sat", "--max-new-tokens", "6")
    assert text.exit_code == 0, text.stderr
    assert text.stdout.strip() == "".join(generate(open_lm(result.out_dir), "the cat sat", max_new_tokens=6)).strip()
    bench = run_cli("--json", "bench", result.out_dir, "--prompt-tokens", "8", "--new-tokens", "4", "--runs", "1")
    assert bench.exit_code == 0, bench.stderr
    measured = bench.json()["language_model"]
    assert measured["decode_tokens_per_s"] > 0 and measured["peak_rss_mb"] > 0
    assert bench.json()["model"]["size_bytes"] == result.size_bytes  # graph + data file


def test_every_position_by_default_the_last_one_when_asked(int4):
    """Validation reads every position (KvDecoder.all_logits feeds no logits_to_keep); generation may ask for one."""
    from toolkit.lm.decoder import KvDecoder, open_session, zero_cache
    from toolkit.lm.model import open_lm

    float_dir, result = int4
    session = open_session(result.model_path)
    assert "logits_to_keep" not in [item.name for item in session.get_inputs()]  # optional: decode loops work as before
    assert [item.name for item in session.get_overridable_initializers()] == ["logits_to_keep"]
    ids = open_lm(float_dir).encode("the cat sat on the mat")
    every = KvDecoder(session, head_dim=16).all_logits(ids)
    assert every.shape == (len(ids), 1000)
    assert np.abs(every[0] - every[-1]).max() > 0.1  # positions differ: a slice would be noticed
    names = [item.name for item in session.get_inputs()]
    feeds = {"input_ids": np.asarray([ids], np.int64),  # an empty cache
             **{item.name: zero_cache(item, 16) for item in session.get_inputs() if item.name.startswith("past_")}}
    if "attention_mask" in names:
        feeds["attention_mask"] = np.ones((1, len(ids)), np.int64)
    if "position_ids" in names:
        feeds["position_ids"] = np.arange(len(ids), dtype=np.int64).reshape(1, -1)
    last = session.run(["logits"], {**feeds, "logits_to_keep": np.ones(1, np.int64)})[0]
    assert last.shape == (1, 1, 1000)
    np.testing.assert_allclose(last[0, 0], every[-1], atol=1e-4)


def test_external_data_outside_the_folder_is_still_refused(int4, run_cli, tmp_path):
    import onnx

    _, result = int4
    inner = tmp_path / "outer" / "model"
    shutil.copytree(result.out_dir, inner)
    shutil.move(inner / "model.onnx.data", tmp_path / "outer" / "model.onnx.data")
    model = onnx.load(str(inner / "model.onnx"), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../model.onnx.data"
    onnx.save(model, str(inner / "model.onnx"))
    refused = run_cli("generate", inner, "--prompt", "the cat")
    assert refused.exit_code == 2
    assert "refused: external data location '../model.onnx.data' leaves the model's folder" in refused.stderr


def test_a_model_that_is_not_a_language_model_stays_one_file(digits_cnn_onnx, tmp_path):
    from toolkit.quantize import quantize

    result = quantize(digits_cnn_onnx, "dynamic-int8", tmp_path / "int8")
    assert sorted(p.name for p in result.out_dir.iterdir()) == ["manifest.json", "model.onnx"]


def mapped_resident_kib(folder: Path) -> int:
    """Resident KiB of this process's mappings of files inside `folder` (/proc/self/smaps)."""
    prefix, total, inside = str(folder.resolve()) + "/", 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) >= 5 and "-" in fields[0] and ":" in fields[3]:  # a mapping's header line: range perms offset dev inode [path]
            inside = len(fields) == 6 and fields[5].startswith(prefix)
        elif inside and fields[0] == "Rss:":
            total += int(fields[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux's /proc/self/smaps")
def test_resident_pages_of_a_mapped_weights_file_are_given_back_and_still_read_right(tmp_path):
    # onnxruntime maps model.onnx.data where its tensors are aligned (onnx aligns those of 1 MiB and
    # more, so the tiny test models are read, not mapped): a numpy mapping stands in for it here
    from toolkit.lm.mapped_pages import page_out_mappings

    weights = np.random.default_rng(0).standard_normal(1 << 20).astype(np.float32)  # 4 MiB
    weights.tofile(tmp_path / "model.onnx.data")
    mapped = np.memmap(tmp_path / "model.onnx.data", dtype=np.float32, mode="r")
    assert float(mapped.sum()) == pytest.approx(float(weights.sum()), rel=1e-4)  # every page touched
    before = mapped_resident_kib(tmp_path)
    assert before >= 3 * 1024
    assert page_out_mappings(tmp_path) >= 4 << 20
    assert mapped_resident_kib(tmp_path) < before / 2
    np.testing.assert_array_equal(np.asarray(mapped), weights)  # read again from the file


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux's /proc/self/smaps")
def test_rows_read_after_the_page_out_come_back_without_readahead(tmp_path):
    # the int4 embedding table is read a row per token: with MADV_RANDOM each row's fault brings its
    # page back, not the pages around it
    from toolkit.lm.mapped_pages import page_out_mappings

    path = tmp_path / "model.onnx.data"
    with open(path, "wb") as handle:
        handle.write(np.random.default_rng(0).standard_normal(4 << 20).astype(np.float32).tobytes())  # 16 MiB
        handle.flush()
        os.fsync(handle.fileno())
    mapped = np.memmap(path, dtype=np.float32, mode="r")
    float(mapped.sum())  # every page touched, then given back
    assert page_out_mappings(tmp_path) >= 16 << 20
    rows = [int(mapped[offset]) for offset in range(0, mapped.size, (1 << 20) // 4)]  # one value a MiB
    assert len(rows) == 16
    # its own page each (4 KiB; 64 measured here), where without the advice each read maps 64 KiB or more
    # around it (864-1024 KiB measured for the 16)
    assert mapped_resident_kib(tmp_path) <= 16 * 16


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux's /proc/self/smaps")
def test_pages_read_while_loading_are_given_back_before_loading_ends(tmp_path):
    # onnxruntime keeps the int4 blocks it has prepacked mapped to the end of loading: pages read early
    # in the body are paged out while it still runs, and read right afterwards
    import time

    from toolkit.lm.mapped_pages import paged_out_while_loading

    weights = np.random.default_rng(0).standard_normal(4 << 20).astype(np.float32)  # 16 MiB
    weights.tofile(tmp_path / "model.onnx.data")
    with paged_out_while_loading(tmp_path, interval_s=0.002):
        mapped = np.memmap(tmp_path / "model.onnx.data", dtype=np.float32, mode="r")
        assert float(mapped.sum()) == pytest.approx(float(weights.sum()), rel=1e-4)  # every page touched
        deadline = time.monotonic() + 5
        while mapped_resident_kib(tmp_path) > 4 * 1024 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert mapped_resident_kib(tmp_path) <= 4 * 1024  # of 16 MiB, with the body still running
    np.testing.assert_array_equal(np.asarray(mapped), weights)


def test_decoding_after_open_session_pages_out_is_unchanged(int4):
    from toolkit.lm.decoder import KvDecoder, open_session
    from toolkit.lm.model import open_lm

    folder = int4[1].out_dir
    reference = open_lm(folder).decoder  # through open_session: paged out after loading
    prompt = np.random.default_rng(1).integers(2, 1000, size=7)
    session = open_session(folder / "model.onnx")
    again = KvDecoder(session, context=reference.context, head_dim=reference.head_dim)
    np.testing.assert_array_equal(again.forward(prompt), reference.forward(prompt))
