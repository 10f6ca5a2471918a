"""`edgeward generate MODEL --prompt "..."`: stream tokens from an exported language model."""

from __future__ import annotations

import click


@click.command(epilog="""\b
Examples:
  edgeward export ./qwen2-folder --to onnx -o exported/qwen2-onnx
  edgeward generate exported/qwen2-onnx --prompt "The cat" --max-new-tokens 20
  edgeward generate exported/qwen2-int4 --prompt "The cat" --temperature 0.8 --top-p 0.9 --seed 1
  edgeward --json generate exported/qwen2-onnx --prompt "The cat"

\b
MODEL: a folder written by `edgeward export` from a Hugging Face causal LM (or by
`edgeward quantize` from one): model.onnx with its KV cache, config.json and the tokenizer.
Greedy by default; --temperature > 0 samples (with --top-k / --top-p, --seed for
repeatable runs). Tokens are printed as they come; --json prints the whole text at the end.
A prompt longer than the model's context, or a folder with no tokenizer, exits 2.""")
@click.argument("model", type=click.Path())
@click.option("--prompt", required=True, help="The text to continue.")
@click.option("--max-new-tokens", default=32, show_default=True, type=click.IntRange(min=1),
              help="Stop after this many new tokens (or at the end-of-sequence token).")
@click.option("--temperature", default=0.0, show_default=True, type=float, help="0 = greedy; > 0 samples.")
@click.option("--top-k", default=0, show_default=True, type=click.IntRange(min=0), help="Sample among the k likeliest (0 = all).")
@click.option("--top-p", default=1.0, show_default=True, type=float, help="Sample within this probability mass.")
@click.option("--seed", default=None, type=int, help="Random seed for sampling.")
@click.option("--threads", default=None, type=click.IntRange(min=1), help="onnxruntime threads (default: all).")
def command(model, prompt, max_new_tokens, temperature, top_k, top_p, seed, threads) -> None:
    """Generate text from an exported language model, streamed as it comes."""
    from toolkit.console import emit, mode, stream
    from toolkit.lm.generate import generate

    pieces = generate(model, prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                      top_p=top_p, seed=seed, threads=threads)
    text = ""
    for piece in pieces:
        text += piece
        if not mode().json:
            stream(piece)
    if mode().json:
        emit({"model": str(model), "prompt": prompt, "text": text,
              "sampling": {"temperature": temperature, "top_k": top_k, "top_p": top_p, "seed": seed}})
    else:
        stream("\n")
