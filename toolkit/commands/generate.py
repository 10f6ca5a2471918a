"""`edgeward generate MODEL --prompt "..."`: stream tokens from an exported language model."""

from __future__ import annotations

import click


@click.command(epilog="""\b
Examples:
  edgeward export ./qwen2-folder --to onnx -o exported/qwen2-onnx
  edgeward generate exported/qwen2-onnx --prompt "The cat" --max-new-tokens 20
  edgeward generate exported/qwen2-int4 --prompt "The cat" --temperature 0.8 --top-p 0.9 --seed 1
  edgeward --json generate exported/qwen2-onnx --prompt "The cat"
  edgeward generate exported/whisper-onnx --audio clip.wav

\b
MODEL: a folder written by `edgeward export` from a Hugging Face causal LM (or by
`edgeward quantize` from one): model.onnx with its KV cache, config.json and the tokenizer.
Greedy by default; --temperature > 0 samples (with --top-k / --top-p, --seed for
repeatable runs). Tokens are printed as they come; --json prints the whole text at the end.
A prompt longer than the model's context, or a folder with no tokenizer, exits 2.
A speech model (Whisper, exported with `edgeward export DIR --to onnx`) transcribes --audio
FILE.wav through its feature extractor, greedy, through the cached decoder; an exported
T5-style encoder-decoder answers --prompt greedily.""")
@click.argument("model", type=click.Path())
@click.option("--prompt", default=None, help="The text to continue (language models).")
@click.option("--audio", type=click.Path(dir_okay=False), default=None,
              help="A WAV file to transcribe (speech models).")
@click.option("--max-new-tokens", default=32, show_default=True, type=click.IntRange(min=1),
              help="Stop after this many new tokens (or at the end-of-sequence token).")
@click.option("--temperature", default=0.0, show_default=True, type=float, help="0 = greedy; > 0 samples.")
@click.option("--top-k", default=0, show_default=True, type=click.IntRange(min=0), help="Sample among the k likeliest (0 = all).")
@click.option("--top-p", default=1.0, show_default=True, type=float, help="Sample within this probability mass.")
@click.option("--seed", default=None, type=int, help="Random seed for sampling.")
@click.option("--threads", default=None, type=click.IntRange(min=1), help="onnxruntime threads (default: all).")
def command(model, prompt, audio, max_new_tokens, temperature, top_k, top_p, seed, threads) -> None:
    """Generate text from an exported language model, streamed as it comes (or transcribe --audio)."""
    from toolkit.console import emit, mode, stream
    from toolkit.errors import BadInput

    if (prompt is None) == (audio is None):
        raise BadInput("give --prompt TEXT (a language model) or --audio FILE.wav (a speech model), one of them")
    if audio is not None:
        return transcribe_audio(model, audio, max_new_tokens, threads)
    from toolkit.speech.folder import is_seq2seq_artifact

    if is_seq2seq_artifact(model):  # a T5-style encoder-decoder: greedy, not streamed
        if temperature > 0:
            raise BadInput("--temperature: an encoder-decoder is decoded greedily here (give 0)")
        from toolkit.speech.transcribe import generate_text

        done = generate_text(model, prompt, max_new_tokens=max_new_tokens, threads=threads)
        return emit({"model": str(model), "prompt": prompt, **done.to_dict()}, done.text)
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


def transcribe_audio(model, audio, max_new_tokens, threads) -> None:
    from toolkit.console import emit
    from toolkit.speech.transcribe import DEFAULT_MAX_NEW_TOKENS, transcribe

    if click.get_current_context().get_parameter_source("max_new_tokens") == click.core.ParameterSource.DEFAULT:
        max_new_tokens = DEFAULT_MAX_NEW_TOKENS  # a transcript runs longer than a text continuation

    transcript = transcribe(model, audio, max_new_tokens=max_new_tokens, threads=threads)
    emit({"model": str(model), "audio": str(audio), **transcript.to_dict()}, transcript.text)
