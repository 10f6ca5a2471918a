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
