"""Export a Hugging Face encoder-decoder to ONNX: an encoder plus a decoder with past.

Whisper goes through optimum's `automatic-speech-recognition-with-past`, T5-style text models
through `text2text-generation-with-past`; both write encoder_model.onnx,
decoder_model.onnx, decoder_with_past_model.onnx and decoder_model_merged.onnx (the two decoders
in one graph behind an If). The merged graph repeats the decoder's weights and adds nothing the
two plain decoders do not do, so it is left out. Right after export the graphs are checked
against transformers on seeded random features: the encoder's hidden states, and the decoder's
logits at every position of a greedy continuation, the later ones fed through the cache
(random features for speech, random token ids for text).

TFLite: not supported. Edgeward's TFLite export converts one graph (or a decoder-only LM);
litert-torch 0.10 ships an experimental Whisper wrapper (generative/export_hf/model_ext/whisper)
that recomputes the whole decoder every token (no KV cache) and is not wired in here.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolkit.common.quiet import quiet
from toolkit.common.text import first_line
from toolkit.errors import Unsupported
from toolkit.speech.folder import GRAPH_FILES, TASKS, copy_speech_side_files

logger = logging.getLogger(__name__)

CHECK_TOKENS = 8
LIBRARIES = ("torch", "onnx", "onnxruntime", "optimum", "optimum-onnx", "transformers", "tokenizers")
TFLITE_WHY = ("TFLite export of an encoder-decoder (speech or text) is not supported: litert-torch 0.10 has no "
              "encoder plus cached-decoder path Edgeward uses (its experimental Whisper wrapper recomputes the "
              "decoder every token); export it with --to onnx")


@dataclass
class SpeechExport:
    out_dir: Path
    model_path: Path  # the encoder; the decoders lie beside it
    max_abs_error: float
    manifest: dict = field(default_factory=dict)


def export_speech_onnx(folder, out_dir, *, opset: int = 18, force: bool = False,
                       trust_remote_code: bool = False) -> SpeechExport:
    """`folder` (a Whisper HF folder with its feature extractor and tokenizer, or a T5-style one with its
    tokenizer) -> `out_dir` with the encoder, both decoders, the side files and a manifest."""
    from toolkit.artifacts import check_writable, new_manifest, staged_folder, write_manifest
    from toolkit.lm.folder import require_tokenizer
    from toolkit.sources.hf import check_folder

    folder, out_dir = Path(folder), Path(out_dir)
    check_writable(out_dir, force)
    config = check_folder(folder, trust_remote_code=trust_remote_code)
    require_tokenizer(folder)
    task = TASKS[config.get("model_type")]
    if task.startswith("automatic-speech") and not (folder / "preprocessor_config.json").is_file():
        from toolkit.errors import BadInput

        raise BadInput(f"{folder}: no preprocessor_config.json (the feature extractor): save one beside the model "
                       "with WhisperFeatureExtractor(...).save_pretrained(folder)")
    what = f"{(config.get('architectures') or ['?'])[0]} ({config.get('model_type')})"
    with tempfile.TemporaryDirectory(prefix="edgeward-speech-") as scratch, staged_folder(out_dir, force) as stage:
        run_optimum(folder, Path(scratch), task, opset=opset, trust_remote_code=trust_remote_code, what=what)
        for name in GRAPH_FILES:
            for part in Path(scratch).glob(name + "*"):  # the graph and any external-data file
                part.replace(stage / part.name)
        copy_speech_side_files(folder, stage)
        error = check_against_transformers(folder, stage, config, trust_remote_code)
        manifest = new_manifest(
            "export", stage, source={"spec": str(folder), "kind": "hf"},
            options={"to": "onnx", "opset": opset, "task": task, "exporter": "optimum",
                     "route": "optimum.exporters.onnx.main_export"},
            libraries=LIBRARIES, model_file=GRAPH_FILES[0], format="onnx", export_error=error,
            seq2seq={"kind": "speech" if task.startswith("automatic-speech") else "text",
                     "model_type": config.get("model_type"), "graphs": list(GRAPH_FILES),
                     "encoder_layers": config.get("encoder_layers") or config.get("num_layers"),
                     "decoder_layers": config.get("decoder_layers") or config.get("num_decoder_layers"),
                     "max_target_positions": config.get("max_target_positions")},
        )
        write_manifest(stage, manifest)
    return SpeechExport(out_dir, out_dir / GRAPH_FILES[0], error["max_abs_error"], manifest)


def run_optimum(folder: Path, scratch: Path, task: str, *, opset: int, trust_remote_code: bool, what: str) -> None:
    try:
        from optimum.exporters.onnx import main_export
    except ImportError:
        from toolkit.errors import missing_library

        raise missing_library("optimum-onnx") from None
    try:
        with quiet():
            main_export(str(folder), output=str(scratch), task=task, opset=opset, do_validation=False,
                        local_files_only=True, trust_remote_code=trust_remote_code, library_name="transformers")
    except Exception as error:
        raise Unsupported(f"optimum cannot export the {what} encoder-decoder with a decoder cache: "
                          f"{first_line(error)}") from None
    missing = [name for name in GRAPH_FILES if not (scratch / name).is_file()]
    if missing:
        raise Unsupported(f"optimum wrote no {', '.join(missing)} for the {what} encoder-decoder")


def check_against_transformers(folder: Path, stage: Path, config: dict, trust_remote_code: bool) -> dict:
    """Largest differences to transformers on seeded random inputs (features for speech, token ids for
    text): encoder states and decoder logits."""
    import torch

    from toolkit.sources.hf import load_model
    from toolkit.speech.transcribe import SpeechModel

    reference = load_model(folder, config, trust_remote_code=trust_remote_code)
    seq2seq = SpeechModel(stage)
    rng = np.random.default_rng(0)
    if seq2seq.speech:
        frames = 2 * int(config.get("max_source_positions") or 1500)
        features = rng.standard_normal((1, int(config.get("num_mel_bins") or 80), frames), dtype=np.float32)
        hidden, mask = seq2seq.encode(features), None
        inputs = {"input_features": torch.from_numpy(features)}
    else:
        ids = rng.integers(0, int(config.get("vocab_size") or 2), size=CHECK_TOKENS + 4).tolist()
        hidden, mask = seq2seq.encode_text(ids)
        inputs = {"input_ids": torch.tensor([ids]), "attention_mask": torch.from_numpy(mask)}
    prompt = seq2seq.decoder_prompt(hidden)
    logits, cache = seq2seq.first_step(prompt, hidden, mask)
    steps = [logits]
    tokens = list(prompt)
    for _ in range(CHECK_TOKENS):
        token = int(np.argmax(steps[-1][-1]))
        tokens.append(token)
        steps.append(seq2seq.next_step(token, cache, mask)[None])
    got = np.concatenate(steps)[: len(tokens)]
    with torch.no_grad():
        expected_hidden = reference.get_encoder()(**inputs).last_hidden_state.numpy()
        expected = reference(**inputs, decoder_input_ids=torch.tensor([tokens]), use_cache=False).logits[0].numpy()
    encoder_error = float(np.max(np.abs(hidden - expected_hidden)))
    decoder_error = float(np.max(np.abs(got - expected)))
    if not np.isfinite(encoder_error + decoder_error):
        raise Unsupported(f"the exported {config.get('model_type')} model gives non-finite outputs")
    scale = float(np.max(np.abs(expected)))
    worst = max(encoder_error, decoder_error)
    return {"encoder": encoder_error, "decoder_through_cache": decoder_error, "tokens": len(tokens),
            "max_abs_error": worst, "output_scale": scale,
            "relative_error": worst / scale if scale else None, "float": True}
