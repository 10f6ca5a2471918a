"""Export a decoder through onnxruntime-genai's model builder, when it is installed and knows the family.

Why it is the first choice: its graph fuses attention (GroupQueryAttention with rotary
embeddings inside), the RMS norms and the residual adds, so one decode step runs far fewer
kernels than optimum's op-by-op export. Measured here on a 55M-parameter Qwen2-style model,
int4 (block 32, int8 compute), 1 thread, through the same Python decode loop: 58 tokens/s on the
builder's graph against 31 on optimum's (benchmarks/bench_lm_genai.py has the whole comparison).
The graph keeps optimum's input and output names (input_ids, attention_mask, past_key_values.N.*
-> logits, present.N.*), so generation, bench and validation run either.

The builder runs in a child process: it imports every model family it knows and logs freely,
and a failure there (a family it lacks, a config it rejects) is a reason to use optimum instead,
not an error. Remote code is never trusted here (`hf_remote=false`), nothing is downloaded
(`hf_token=false`, a local folder as input).

A builder bug (onnxruntime-genai 0.15.2) is why export checks the builder's graph against
transformers and falls back to optimum: `builders/base.py` finds the LM head as *any*
`torch.nn.Linear` whose `out_features == vocab_size` (`has_lm_head`), while `make_model` walks
`model.modules()`, which descends into each decoder layer after `make_layer`. When the vocabulary
size equals the width of a projection inside a layer (q/o: heads x head size, k/v: KV heads x head
size, gate/up: the MLP width, down: hidden), the first such projection is taken for the head:
`make_node` keeps the nodes of that first match (it skips names already made), so `/lm_head/MatMul`
reads layer 0's last norm and the layers after it and the final norm feed nothing, while
`make_initializer` re-registers the weights at every match, so the head's weight ends up the real
`lm_head` and its bias the last biased projection's. Measured on `builtin:tiny-lm` (Qwen2, vocab
32 = 2 KV heads x 16): logits 1.35x the logits' scale off; the same weights with the vocabulary
padded to 48 (no layer is 48 wide): 2.9e-6 off. Real vocabularies (tens of thousands) do not
collide with a layer's width; toy ones (32, 64) do, and take the optimum route.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import subprocess
import sys
from pathlib import Path

from toolkit.common.text import first_line

logger = logging.getLogger(__name__)

MODULE = "onnxruntime_genai.models.builder"
TIMEOUT_S = 3600
# The families whose builder graph was exported and checked against transformers here.
CHECKED_FAMILIES = ("llama", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3")
# What the builder writes that the artifact keeps: the graph, its weights, and genai_config.json
# (so onnxruntime-genai's own runtime can run the folder too). The tokenizer comes from the source.
GRAPH_FILES = ("model.onnx", "model.onnx.data", "genai_config.json")


def builder_version() -> str | None:
    """The installed onnxruntime-genai's version, or None when its builder cannot be imported."""
    if importlib.util.find_spec("onnxruntime_genai") is None:
        return None
    try:
        return importlib.metadata.version("onnxruntime-genai")
    except importlib.metadata.PackageNotFoundError:
        return None


def cannot_build(config: dict, trust_remote_code: bool) -> str | None:
    """Why the builder is not tried for this config (None: try it)."""
    from toolkit.lm.folder import head_dim

    if trust_remote_code:
        return "the builder never runs a folder's remote code"
    size = head_dim(config)
    if size is not None and size % 16:
        # onnxruntime's CPU GroupQueryAttention refuses it at run time ("head_size shall be a multiple of 16")
        return f"its attention head size {size} is not a multiple of 16"
    return None


def vocabulary_collision(config: dict) -> str | None:
    """Why the builder would take a layer for the LM head (the 0.15.2 bug above), or None."""
    from toolkit.lm.folder import head_dim

    vocab = config.get("vocab_size")
    size = head_dim(config)
    heads, kv_heads = config.get("num_attention_heads"), config.get("num_key_value_heads")
    widths = {"hidden": config.get("hidden_size"), "MLP": config.get("intermediate_size"),
              "attention": heads * size if isinstance(heads, int) and size else None,
              "key/value": kv_heads * size if isinstance(kv_heads, int) and size else None}
    for name, width in widths.items():
        if isinstance(vocab, int) and vocab == width:
            return (f"its vocabulary size {vocab} equals the {name} width, which the builder takes "
                    "for the LM head")
    return None


def build_with_genai(folder: Path, stage: Path, scratch: Path) -> str | None:
    """Write `stage/model.onnx` (+ its weights file and genai_config.json; fp32, CPU) with the builder.
    Returns None on success, else why not (the stage is left as it was)."""
    if builder_version() is None:
        return "onnxruntime-genai is not installed"
    out = scratch / "genai-out"
    command = [sys.executable, "-m", MODULE, "-i", str(folder), "-o", str(out), "-p", "fp32", "-e", "cpu",
               "-c", str(scratch / "cache"), "--extra_options", "hf_token=false", "hf_remote=false"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
                              cwd=scratch)
    except subprocess.TimeoutExpired:
        return f"the builder ran past {TIMEOUT_S} s"
    if done.returncode != 0 or not (out / "model.onnx").is_file():
        lines = [line for line in done.stderr.splitlines() if line.strip() and "Warning" not in line]
        return f"the builder failed: {first_line(lines[-1]) if lines else 'no output'}"
    for name in GRAPH_FILES:
        if (out / name).is_file():
            (out / name).replace(stage / name)
    return None
