"""A quantized decoder's gate and up projections run as one MatMulNBits, with the same logits.

Why (toolkit/lm/onnx_merged_matmuls.py): at one token a step each MatMulNBits is a small job whose
dispatch costs about as much as its arithmetic. A tiny Qwen2 decoder built from a config, exported and
quantized for real; the unmerged model is the same quantizer's output without the merge.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_lm_memory import make_decoder

LAYERS = 2  # make_decoder's


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from toolkit.export import export

    root = tmp_path_factory.mktemp("lm-merged")
    return export(str(make_decoder(root / "hf")), "onnx", root / "onnx").out_dir, root


def quantized(exported, name: str, merge: bool):
    from toolkit.quantize import quantize

    folder, root = exported
    if merge:
        return quantize(folder, "int4-weight", root / name, block_size=32)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("toolkit.lm.onnx_merged_matmuls.merge_shared_input_matmuls", lambda model: 0)
        return quantize(folder, "int4-weight", root / name, block_size=32)


def every_logit(model_path, ids):
    from toolkit.lm.decoder import KvDecoder, open_session

    return KvDecoder(open_session(model_path), head_dim=16).all_logits(ids)


def test_gate_and_up_become_one_matmulnbits_and_a_split_in_every_layer(exported):
    import onnx
    from onnx import helper

    result = quantized(exported, "merged", merge=True)
    assert result.manifest["quantization"]["merged_matmulnbits"] == LAYERS
    graph = onnx.load(str(result.model_path)).graph
    nbits = [node for node in graph.node if node.op_type == "MatMulNBits"]
    assert len(nbits) == LAYERS * 4 + 1  # qkv, o, gate+up, down; the LM head
    merged = [node for node in nbits if node.name.endswith("/merged")]
    assert len(merged) == LAYERS and all("gate_proj" in node.name for node in merged)
    widths = {node.name: {a.name: helper.get_attribute_value(a) for a in node.attribute}["N"] for node in merged}
    assert set(widths.values()) == {2 * 128}  # make_decoder's intermediate size, twice
    splits = [node for node in graph.node if node.op_type == "Split"]
    assert sorted(node.input[0] for node in splits) == sorted(node.output[0] for node in merged)


def test_the_merged_model_computes_the_unmerged_ones_logits(exported):
    from toolkit.lm.model import open_lm

    merged, unmerged = quantized(exported, "merged-logits", merge=True), quantized(exported, "unmerged", merge=False)
    assert unmerged.manifest["quantization"]["merged_matmulnbits"] == 0
    ids = open_lm(exported[0]).encode("the cat sat on the mat and looked at the dog")
    ours, reference = every_logit(merged.model_path, ids), every_logit(unmerged.model_path, ids)
    assert np.abs(reference).max() > 0.1  # not a degenerate comparison
    np.testing.assert_allclose(ours, reference, atol=1e-5, rtol=0)
    assert (ours.argmax(axis=1) == reference.argmax(axis=1)).all()
