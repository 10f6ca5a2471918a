"""`edgeward validate`: a thin layer over `toolkit.validate.validate`; a failed gate is exit 1."""

from __future__ import annotations

import click

from toolkit.commands.data_options import apply as apply_data_options
from toolkit.commands.data_options import check_used as check_data_flags_used
from toolkit.commands.data_options import data_options
from toolkit.commands.lm_options import LM_GATES, lm_options

EPILOG = """\b
Examples:
  edgeward validate exported/digits-int8 --reference builtin:digits-cnn --data builtin:digits:test
  edgeward validate model-int8.onnx --reference model.onnx --data eval.npz --per-layer -o reports/int8
  edgeward validate exported/bert-tflite --reference exported/bert --data eval.npz \\
      --shapes input_ids=1x64,1x32 --min-agreement 0.98
  edgeward validate exported/digits-int8 --reference builtin:digits-cnn --data builtin:digits:test --device pi5
  edgeward validate model-int8.onnx --reference mypkg.nets:make_net --data eval.npz   # shapes from the data
  edgeward validate exported/qwen2-int4 --reference exported/qwen2-onnx --data text.txt --max-ppl-ratio 1.05
  edgeward validate exported/qwen2-int4 --reference exported/qwen2-onnx --data text.txt --per-layer
  edgeward validate exported/digits-int8 --reference builtin:digits-cnn --data big.npz --workers 4

\b
Gates (a gate that fails is exit 1, naming the figure and the bar):
  --max-drop 1.0       top-1 accuracy may fall by at most 1 point (needs labels)
  --min-agreement 0.99 the candidate's argmax agrees with the reference on 99% of examples
  --min-sqnr 20        every float output's signal-to-quantization-noise ratio is >= 20 dB
Turn one off with --no-gate drop|agreement|sqnr.
A language model (an exported LM folder) is compared on text (.txt lines or .jsonl `text`):
--max-ppl-ratio 1.10, --min-agreement 0.90 (next token), --max-kl 0.10, and optionally
--min-greedy-match; turn one off with --no-gate ppl|agreement|kl|greedy. With --per-layer it
also compares the hidden states after each decoder layer (and the final norm and logits) with
the reference's and names the worst layer; the reference is the float ONNX export or the HF
folder (ONNX candidates only; a TFLite language model exits 3).

\b
CANDIDATE and --reference take an .onnx/.tflite file, an artifact folder, or a PyTorch
source (builtin:digits-cnn, a .pt2, a Hugging Face folder, package.module:factory: its input
shapes come from DATA, or --input-shape). DATA is builtin:digits[:test],
an .npz with one array per model input (named after it) and optional `labels`, an image or
WAV folder (class sub-folders = labels), a .jsonl/.csv/.parquet file or a save_to_disk
folder, with options as 'photos/?size=224&layout=nhwc' or as the data flags
(--image-size, --text-field, --preprocessor ...).
"""


@click.command("validate", epilog=EPILOG.replace(
    "Turn one off with --no-gate drop|agreement|sqnr.",
    "Turn one off with --no-gate drop|agreement|sqnr."))
@click.argument("candidate")
@click.option("--reference", "-r", required=True, metavar="SOURCE", help="The original model to compare against.")
@click.option("--data", "-d", required=True, metavar="DATA", help="builtin:digits[:test], an .npz, an image/WAV folder, .jsonl/.csv/.parquet, a saved dataset.")
@click.option("-o", "--output", "out_dir", type=click.Path(), help="Write report.json, report.md and charts here.")
@click.option("--max-drop", type=float, default=1.0, show_default=True, metavar="PTS",
              help="Largest accuracy drop allowed, in points.")
@click.option("--min-agreement", type=float, default=0.99, show_default=True, metavar="F",
              help="Least argmax agreement with the reference (0..1).")
@click.option("--min-sqnr", type=float, default=20.0, show_default=True, metavar="DB",
              help="Least SQNR of every float output, in dB.")
@click.option("--no-gate", "no_gates", multiple=True, type=click.Choice(["drop", "agreement", "sqnr", *LM_GATES]),
              help="Turn a gate off (repeatable).")
@click.option("--shapes", multiple=True, metavar="NAME=AxB[,CxD]",
              help="Also run both models on random data at these shapes (repeatable).")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=AxB",
              help="Pin a PyTorch side's input shape (repeatable); by default it comes from the data.")
@click.option("--per-layer", is_flag=True, help="Per-node error against the float parent (ONNX or TFLite); for a "
              "language model, the error after each decoder layer against the float ONNX export or the HF folder.")
@click.option("--top", type=int, default=10, show_default=True, help="How many worst nodes to list.")
@click.option("--device", metavar="NAME", help="Run the candidate on this device (see edgeward devices list).")
@click.option("--profiles", type=click.Path(exists=True, file_okay=False), default=None,
              help="Extra folder of device profiles (searched before the builtin ones).")
@click.option("--batch-size", type=int, default=256, show_default=True,
              help="Examples per run (dynamic quantization's scales depend on it; 1 = one request at a time).")
@click.option("--no-record", is_flag=True, help="Do not write the result into the candidate's manifest.")
@click.option("--max-fallback", type=click.FloatRange(0, 100), default=None, metavar="PCT",
              help="With --device: at most PCT percent of the work outside the accelerator (exit 1).")
@click.option("--workers", type=int, default=1, show_default=True, metavar="N",
              help="Shard the data across N workers (processes, or Ray tasks with --executor ray); same figures.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Where the shards run: local processes, or Ray (pip install edgeward[ray]).")
@click.option("--address", metavar="ADDR", default=None,
              help="With --executor ray: join the Ray cluster at ADDR (default: start a local one).")
@data_options
@lm_options
def command(candidate, reference, data, out_dir, max_drop, min_agreement, min_sqnr, no_gates, shapes, input_shapes,
            per_layer, top, device, profiles, batch_size, no_record, max_fallback, data_options,
            workers=1, executor="local", address=None, lm_options=None):
    """Compare CANDIDATE with its reference on DATA: accuracy, agreement, error and gates."""
    import os

    from toolkit.commands.lm_options import is_language_model, refuse_lm_flags, validate_language_model
    from toolkit.speech.folder import is_seq2seq_artifact

    if is_seq2seq_artifact(candidate):  # WAV clips (or T5 text lines) in, output tokens compared
        return validate_speech_model(candidate, reference, data, min_agreement=None if "agreement" in no_gates
                                     else min_agreement, out_dir=out_dir)
    if is_language_model(candidate):  # text in, perplexity / agreement / KL / greedy match out
        return validate_language_model(candidate, reference, data, options=lm_options, min_agreement=min_agreement,
                                       no_gates=no_gates, max_length=data_options["max_length"], out_dir=out_dir,
                                       record=not no_record, per_layer=per_layer, top=top,
                                       unused={"--device": device, "--shapes": shapes, "--workers": workers > 1})
    refuse_lm_flags(lm_options)

    from toolkit.console import emit
    from toolkit.errors import GateFailed
    from toolkit.sources import parse_input_shapes
    from toolkit.validate import validate

    if profiles:  # the device lookup reads $EDGEWARD_PROFILES first (toolkit.devices.profiles)
        os.environ["EDGEWARD_PROFILES"] = os.pathsep.join(filter(None, [profiles, os.environ.get("EDGEWARD_PROFILES")]))
    check_data_flags_used(data_options, data)
    data = apply_data_options(data, data_options, reference, candidate)
    report = validate(
        candidate, reference, data,
        max_drop=None if "drop" in no_gates else max_drop,
        min_agreement=None if "agreement" in no_gates else min_agreement,
        min_sqnr=None if "sqnr" in no_gates else min_sqnr,
        shapes=list(shapes), device=device, per_layer=per_layer, top=top, out_dir=out_dir,
        record=not no_record, batch_size=batch_size, input_shapes=parse_input_shapes(input_shapes),
        workers=workers, executor=executor, address=address,
    )
    placement = device_placement(candidate, device, max_fallback)
    emit({**report.to_dict(), **placement}, summary_text(report, out_dir)
         + (f"\n{placement['placement_line']}" if placement else ""))
    if not report.passed:
        raise GateFailed(f"validation failed: {report.failure_line()}")
    if placement:
        from toolkit.bench.placement import check_fallback

        check_fallback(placement["placement"], max_fallback, device)


def validate_speech_model(candidate, reference, data, *, min_agreement, out_dir) -> None:
    """An encoder-decoder: token agreement and exact-match rate of its transcripts (speech) or greedy outputs
    (T5-style text) against the reference's."""
    from pathlib import Path

    from toolkit.artifacts import atomic_write_json
    from toolkit.console import emit
    from toolkit.errors import GateFailed
    from toolkit.speech.validate import validate_speech

    report = validate_speech(candidate, reference, data, min_agreement=min_agreement)
    if out_dir:
        atomic_write_json(Path(out_dir) / "report.json", report.to_dict())
    emit(report.to_dict(), report.summary())
    if not report.passed:
        raise GateFailed(f"validation failed: {'; '.join(report.failures())}")


def device_placement(candidate, device, max_fallback) -> dict:
    """Where each op ran on the device (one short runner pass); {} without --device."""
    from toolkit.errors import BadInput

    if not device:
        if max_fallback is not None:
            raise BadInput("--max-fallback needs --device: op placement is measured on a device")
        return {}
    from toolkit.bench.placement import placement_line, placement_on_device
    from toolkit.errors import EdgewardError

    try:
        placement = placement_on_device(candidate, device)
    except EdgewardError as error:
        # the short pass feeds inputs made from the model's shapes, not the data: a model that
        # needs real data (a state, a minimum length) may refuse them; the validation stands
        if max_fallback is not None:
            raise
        return {"placement": None, "placement_line": f"op placement: not measured ({error})"}
    return {"placement": placement, "placement_line": placement_line(placement)}


def summary_text(report, out_dir) -> str:
    from toolkit.validate.report import per_layer_text

    lines = [f"{report.candidate} vs {report.reference} on {report.data} ({report.samples} examples)"]
    for m in report.outputs:
        parts = []
        if m.candidate_accuracy is not None:
            parts.append(f"accuracy {m.candidate_accuracy:.2%} vs {m.reference_accuracy:.2%} "
                         f"(drop {m.drop:.2f} points)")
        if m.agreement is not None:
            parts.append(f"agreement {m.agreement:.4f}")
        parts.append(f"SQNR {m.sqnr_db:.2f} dB" if m.sqnr_db == m.sqnr_db else "SQNR nan")
        parts.append(f"max abs error {m.max_abs_error:.4g}")
        parts.append(f"cosine {m.cosine:.6f}")
        if m.nonfinite:
            parts.append(f"{m.nan} NaN, {m.inf} Inf")
        lines.append(f"  {m.name}: " + ", ".join(parts))
    for gate in report.gates:
        lines.append(f"  [{'pass' if gate.passed else 'FAIL'}] {gate.describe()}")
    if report.per_layer is not None:
        lines.append(per_layer_text(report.per_layer))
    if out_dir:
        lines.append(f"report: {out_dir}/report.md")
    lines.append("PASSED" if report.passed else "FAILED")
    return "\n".join(lines)
