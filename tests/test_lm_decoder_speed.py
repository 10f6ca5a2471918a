"""KvDecoder's share-buffer loop (issue 15's decode speed): the same tokens and logits as the plain loop.

onnxruntime-genai's builder graphs (GroupQueryAttention) run with one preallocated cache buffer per
layer bound through IOBinding as both past and present; the plain loop feeds each step's grown
present back as the next past. Both run here on the same session, float and int4, including the
buffers growing mid-sequence; optimum's graphs keep the plain loop. No timing is asserted here
(benchmarks/bench_lm_genai.py measures the speed).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_lm import make_lm
from tests.test_lm_genai import make_decoder

STEPS = 12


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict:
    """name -> exported folder: the builder's graph (float and int4) and an optimum graph."""
    from toolkit.export import export
    from toolkit.lm.export import export_lm_onnx
    from toolkit.quantize import quantize

    root = tmp_path_factory.mktemp("decoder-speed")
    builder = export(str(make_decoder(root / "hf", "qwen2")), "onnx", root / "onnx").out_dir
    int4 = quantize(builder, "int4-weight", root / "int4", block_size=32).out_dir
    optimum = export_lm_onnx(make_lm(root / "hf-optimum", "qwen2"), root / "optimum", exporter="optimum").out_dir
    return {"builder": builder, "int4": int4, "optimum": optimum}


def open_decoder(folder, shared: bool | None = None):
    from toolkit.lm.model import open_lm

    decoder = open_lm(folder).decoder
    if shared is not None:
        decoder.shares_buffer = shared
        decoder.reset()
    return decoder


def greedy(decoder, prompt, steps: int = STEPS) -> tuple[np.ndarray, list[int]]:
    """The logits of the prompt's last token and of each greedy step, and the tokens chosen."""
    decoder.reset()
    logits = [decoder.forward(prompt)]
    tokens = [int(np.argmax(logits[-1]))]
    for _ in range(steps):
        logits.append(decoder.forward([tokens[-1]]))
        tokens.append(int(np.argmax(logits[-1])))
    return np.stack(logits), tokens


def prompt_of(decoder, length: int = 9) -> np.ndarray:
    vocab = decoder.session.get_outputs()[0].shape[-1]
    return np.random.default_rng(0).integers(2, vocab, size=length)


@pytest.mark.parametrize("name", ["builder", "int4"])
def test_share_buffer_loop_equals_the_plain_loop(folders, name):
    fast, plain = open_decoder(folders[name]), open_decoder(folders[name], shared=False)
    assert fast.shares_buffer and fast.cache is not None and plain.cache is None
    prompt = prompt_of(fast)
    fast_logits, fast_tokens = greedy(fast, prompt)
    plain_logits, plain_tokens = greedy(plain, prompt)
    assert fast_tokens == plain_tokens
    np.testing.assert_allclose(fast_logits, plain_logits, atol=1e-4)
    assert fast.past_length == plain.past_length == len(prompt) + STEPS
    for key, value in plain.past.items():  # the cache as the plain loop holds it, in the buffers' first rows
        np.testing.assert_allclose(fast.past[key], value, atol=1e-4)


def test_buffers_grow_mid_sequence_without_changing_a_token(folders, monkeypatch):
    from toolkit.lm.decoder import CacheBuffers

    plain = open_decoder(folders["builder"], shared=False)
    prompt = prompt_of(plain, length=5)
    plain_logits, plain_tokens = greedy(plain, prompt, steps=30)
    monkeypatch.setattr(CacheBuffers, "MIN_CAPACITY", 4)  # 4 -> 8 (prefill) -> 16 -> 32 -> 64 (the context)
    fast = open_decoder(folders["builder"])
    fast_logits, fast_tokens = greedy(fast, prompt, steps=30)
    assert fast.cache.capacity == 64 == fast.context
    assert fast_tokens == plain_tokens
    np.testing.assert_allclose(fast_logits, plain_logits, atol=1e-4)


def test_a_reserved_cache_holds_the_context_used_and_decodes_alike(folders):
    from toolkit.lm.generate import generate_ids
    from toolkit.lm.model import open_lm

    plain = open_decoder(folders["int4"], shared=False)
    prompt = prompt_of(plain)
    plain_logits, plain_tokens = greedy(plain, prompt)
    fast = open_decoder(folders["int4"])
    fast.reserve(len(prompt) + STEPS + 1)
    fast_logits, fast_tokens = greedy(fast, prompt)
    assert fast.cache.capacity == len(prompt) + STEPS + 1  # not the 256 it doubles from unreserved
    assert fast_tokens == plain_tokens
    np.testing.assert_allclose(fast_logits, plain_logits, atol=1e-4)
    lm = open_lm(folders["int4"])  # generation reserves the prompt plus the tokens asked for
    assert list(generate_ids(lm, list(prompt), 5, stop_at_eos=False)) == plain_tokens[:5]
    assert lm.decoder.cache.capacity == len(prompt) + 5


def test_reset_all_logits_and_returned_logits_are_the_callers(folders):
    decoder = open_decoder(folders["int4"])
    prompt = prompt_of(decoder)
    first_logits, first_tokens = greedy(decoder, prompt)
    kept = decoder.forward([first_tokens[-1]])
    snapshot = kept.copy()
    decoder.forward([int(np.argmax(kept))])  # the next step reuses the logits buffer, not the array handed out
    np.testing.assert_array_equal(kept, snapshot)
    length = decoder.past_length
    whole = decoder.all_logits(prompt)
    assert decoder.past_length == length  # all_logits leaves the cache alone
    np.testing.assert_allclose(whole[-1], first_logits[0], atol=1e-4)
    again_logits, again_tokens = greedy(decoder, prompt)  # reset: the same run again from an empty cache
    assert again_tokens == first_tokens
    np.testing.assert_allclose(again_logits, first_logits, atol=1e-4)


def test_uncopied_logits_are_the_bound_buffers_row_and_read_as_the_copies(folders):
    """copy=False hands out one view of the logits buffer, made where it is bound (CacheBuffers.bind_step),
    which each step refills: greedy decoding through it picks what the copies pick."""
    decoder = open_decoder(folders["int4"])
    prompt = prompt_of(decoder)
    copied_logits, copied_tokens = greedy(decoder, prompt)
    decoder.reset()
    token = int(decoder.forward(prompt, copy=False).argmax())
    tokens, views = [token], []
    for step in range(STEPS):
        view = decoder.forward([token], copy=False)
        np.testing.assert_allclose(view, copied_logits[step + 1], atol=1e-4)
        assert np.shares_memory(view, decoder.cache.logits)
        views.append(view)
        token = int(view.argmax())
        tokens.append(token)
    assert tokens == copied_tokens
    assert all(view is views[0] for view in views)  # not a new view a step


def test_optimum_graphs_keep_the_plain_loop(folders):
    decoder = open_decoder(folders["optimum"])
    assert not decoder.shares_buffer and decoder.cache is None
    prompt = prompt_of(decoder)
    logits, tokens = greedy(decoder, prompt, steps=3)
    whole = decoder.all_logits([*prompt, *tokens[:3]])
    np.testing.assert_allclose(logits, whole[len(prompt) - 1:], atol=1e-4)


def test_a_concatenating_graph_forced_into_share_buffer_falls_back_at_the_first_step(folders, caplog):
    plain = open_decoder(folders["optimum"])
    forced = open_decoder(folders["optimum"], shared=True)
    assert forced.cache is not None
    prompt = prompt_of(plain)
    plain_logits, plain_tokens = greedy(plain, prompt, steps=3)
    with caplog.at_level("WARNING", logger="toolkit.lm.decoder"):
        forced_logits, forced_tokens = greedy(forced, prompt, steps=3)
    assert "share-buffer KV cache refused" in caplog.text
    assert not forced.shares_buffer and forced.cache is None
    assert forced_tokens == plain_tokens
    np.testing.assert_allclose(forced_logits, plain_logits, atol=1e-4)


@pytest.mark.parametrize("shared", [True, False])
def test_the_int4_model_computes_only_the_last_logits_and_they_equal_every_positions(folders, shared):
    decoder = open_decoder(folders["int4"], shared=shared)
    assert decoder.keeps_last  # quantize added the optional logits_to_keep input
    prompt = prompt_of(decoder)
    every = decoder.all_logits(prompt)  # validation's path feeds no logits_to_keep: every position
    assert every.shape[0] == len(prompt)
    logits, tokens = greedy(decoder, prompt, steps=3)
    np.testing.assert_allclose(logits[0], every[-1], atol=1e-4)
    sequence = np.concatenate([prompt, tokens[:-1]])
    np.testing.assert_allclose(logits[1:], decoder.all_logits(sequence)[len(prompt):], atol=1e-3)
    if shared:  # the prompt ran unbound with one row of logits; only single steps were bound
        assert list(decoder.cache.steps) == [1]
