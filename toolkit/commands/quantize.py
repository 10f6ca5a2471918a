"""`edgeward quantize`: a thin layer over `toolkit.quantize.quantize` (and E3's auto mode)."""

from __future__ import annotations

import click

from toolkit.commands.data_options import apply as apply_data_options
from toolkit.commands.data_options import check_used as check_data_flags_used
from toolkit.commands.data_options import data_options
from toolkit.commands.lm_options import lm_options
from toolkit.common.units import human_bytes
from toolkit.errors import BadInput

EPILOG = """\b
Examples:
  edgeward quantize --list-modes
  edgeward quantize exported/digits-onnx --mode dynamic-int8
  edgeward quantize exported/digits-onnx --mode static-int8 --calibration builtin:digits:train -o exported/digits-int8
  edgeward quantize model.onnx --mode static-int8 --calibration calib.npz --method entropy
  edgeward quantize exported/digits-tflite --mode weight-int4 --force
  edgeward quantize exported/digits-onnx --mode auto --data builtin:digits:test --max-drop 1
  edgeward quantize model.onnx --mode auto --data eval.npz --objective latency
  edgeward quantize builtin:digits --mode auto --data builtin:digits:test --formats onnx,tflite
  edgeward quantize exported/qwen2-onnx --mode auto --data text.txt --max-ppl-ratio 1.05   # language model
  edgeward quantize exported/whisper-onnx --mode dynamic-int8   # encoder + both decoders (also T5)

\b
MODEL is an .onnx/.tflite file or an artifact folder. An .npz for --calibration holds
one array per model input, named after it, first axis = examples; DATA may also be an
image or WAV folder, a .jsonl/.csv/.parquet file or a save_to_disk folder, with options
as 'photos/?size=224' or as the data flags (--image-size, --text-field, --preprocessor ...). The default output
folder is exported/<name>-<mode>. auto keeps the smallest model that passes
(--objective size, the default: the file is what must fit the device); --objective
latency times every passing try (1 thread, batch 1) and keeps the fastest, the
smaller one when two are within 3%.
"""


@click.command("quantize", epilog=EPILOG)
@click.argument("model", required=False)
@click.option("--mode", "-m", help="Quantization mode (see --list-modes), or auto.")
@click.option("--calibration", "-c", metavar="DATA", help="Calibration data: builtin:digits:train or an .npz.")
@click.option("--method", default="minmax", show_default=True,
              type=click.Choice(["minmax", "entropy", "percentile"]), help="Calibration method (static modes).")
@click.option("--per-tensor", is_flag=True, help="One scale per tensor instead of per channel.")
@click.option("--calibration-size", default=256, show_default=True, type=int, help="Calibration examples used.")
@click.option("--block-size", type=click.Choice(["32", "64", "128"]), default=None,
              help="int4-weight: quantization block (default 32).")
@click.option("--exclude", "exclude_nodes", multiple=True, metavar="NODE", help="Keep this node in float (repeatable).")
@click.option("--allow-unchanged", is_flag=True,
              help="A mode that would change no weight keeps the model as it is (a warning and `unchanged` "
                   "in the manifest) instead of exit 3.")
@click.option("-o", "--output", "out_dir", type=click.Path(), help="Output artifact folder.")
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
@click.option("--list-modes", is_flag=True, help="Print which modes apply to which format, and exit.")
@click.option("--data", metavar="DATA", help="auto: labelled evaluation data (builtin:digits:test or an .npz).")
@click.option("--max-drop", type=float, default=1.0, show_default=True, help="auto: accuracy points it may lose.")
@click.option("--min-agreement", type=float, help="auto: least top-1 agreement with the original (0..1).")
@click.option("--budget", "budget_s", type=float, default=300, show_default=True, help="auto: seconds to spend.")
@click.option("--objective", type=click.Choice(["size", "latency"]), default="size", show_default=True,
              help="auto: keep the smallest passing model, or the fastest (p50, 1 thread, batch 1).")
@click.option("--formats", metavar="onnx,tflite",
              help="auto: formats to search (default: both for a source such as builtin:digits or a Hugging Face "
                   "folder, the file's own for an .onnx/.tflite model).")
@click.option("--device", metavar="NAME", help="auto: the device profile whose CPU the int8 check uses (default: this host).")
@click.option("--workers", type=int, default=1, show_default=True, metavar="N",
              help="auto: shard each try's validation across N workers (processes, or Ray tasks); same figures.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="auto: where the shards run: local processes, or Ray (pip install edgeward[ray]).")
@click.option("--address", metavar="ADDR", default=None,
              help="auto with --executor ray: join the Ray cluster at ADDR (default: start a local one).")
@data_options
@lm_options
def command(model, mode, calibration, method, per_tensor, calibration_size, block_size, exclude_nodes, allow_unchanged,
            out_dir, force,
            list_modes, data, max_drop, min_agreement, budget_s, objective, formats, device, data_options,
            workers=1, executor="local", address=None, lm_options=None):
    """Quantize an ONNX or TFLite model (int8, fp16, int4, auto) into an artifact folder."""
    from toolkit.console import emit, verbose

    if list_modes:
        from toolkit.quantize.modes import modes_table

        rows = modes_table()
        emit({"modes": rows}, _modes_text(rows))
        return
    if not model:
        raise BadInput("give a MODEL (an .onnx/.tflite file or artifact folder), or --list-modes")
    if not mode:
        raise BadInput("give --mode (edgeward quantize --list-modes shows them)")
    from toolkit.speech.folder import is_seq2seq_artifact

    if is_seq2seq_artifact(model):  # Whisper / T5: the encoder and both decoders, one mode
        return _quantize_seq2seq(model, mode, out_dir, force, block_size, exclude_nodes, allow_unchanged,
                                 per_tensor, calibration or data)
    from toolkit.commands.lm_options import auto_language_model, is_language_model, refuse_lm_flags

    sharding = {"workers": workers, "executor": executor, "address": address}
    sharded = workers != 1 or executor != "local" or address is not None
    if sharded and (mode != "auto" or is_language_model(model)):
        raise BadInput("--workers, --executor and --address shard the validations of --mode auto (not a language model)")
    if mode == "auto" and is_language_model(model):  # gated on text: perplexity, agreement, KL
        return auto_language_model(model, out_dir, data, options=lm_options, min_agreement=min_agreement,
                                   max_length=data_options["max_length"], force=force)
    refuse_lm_flags(lm_options)
    check_data_flags_used(data_options, calibration, data)
    calibration = apply_data_options(calibration, data_options, model)
    data = apply_data_options(data, data_options, model)
    if mode == "auto":
        _auto(model, out_dir, data, calibration, max_drop, min_agreement, budget_s, force, objective, formats, device,
              sharding)
        return
    if formats or device:
        raise BadInput("--formats and --device are for --mode auto")
    if objective != "size":
        raise BadInput("--objective is for --mode auto")
    if data:
        raise BadInput("--data is for --mode auto; static modes take --calibration DATA")
    from toolkit.quantize import quantize

    if exclude_nodes:
        _warn_unknown_nodes(model, exclude_nodes)
    verbose(f"quantizing {model} ({mode}) ...")
    result = quantize(
        model, mode, out_dir, calibration=calibration, method=method, per_channel=not per_tensor,
        calibration_size=calibration_size, exclude_nodes=list(exclude_nodes), force=force,
        block_size=int(block_size) if block_size else None, allow_unchanged=allow_unchanged,
    )
    emit(
        result.as_dict(),
        f"{result.mode} {result.format}: {result.model_path} "
        f"({human_bytes(result.size_bytes)} vs {human_bytes(result.float_size_bytes)} float, {result.size_ratio:.2f}x)",
    )


def _quantize_seq2seq(model, mode, out_dir, force, block_size, exclude_nodes, allow_unchanged, per_tensor,
                      data) -> None:
    from toolkit.console import emit, verbose
    from toolkit.speech.quantize import human_summary, quantize_seq2seq

    if data:
        raise BadInput("an encoder-decoder is quantized without data: drop --calibration / --data")
    verbose(f"quantizing the encoder and decoders of {model} ({mode}) ...")
    result = quantize_seq2seq(model, mode, out_dir, force=force, block_size=int(block_size) if block_size else None,
                              exclude_nodes=list(exclude_nodes), allow_unchanged=allow_unchanged,
                              per_channel=not per_tensor)
    emit(result.as_dict(), human_summary(result))


def _auto(model, out_dir, data, calibration, max_drop, min_agreement, budget_s, force, objective="size",
          formats=None, device=None, sharding=None) -> None:
    """Hand over to the accuracy-gated search; nothing passing the gates is exit 1."""
    from toolkit.console import emit
    from toolkit.errors import GateFailed
    from toolkit.quantize import default_out_dir

    if not data:
        raise BadInput("--mode auto needs --data DATA (labelled data to compare against the original)")
    from toolkit.quantize.auto import auto_quantize

    result = auto_quantize(
        model, out_dir or default_out_dir(str(model).replace(":", "-"), "auto"), data=data, max_drop=max_drop,
        min_agreement=min_agreement, budget_s=budget_s, calibration=calibration, force=force, objective=objective,
        formats=[name.strip() for name in formats.split(",") if name.strip()] if formats is not None else None,
        device=device, **(sharding or {}),
    )
    emit(result.as_dict(), result.summary())
    if not result.passed:
        raise GateFailed(result.failure_line())


def _warn_unknown_nodes(model, exclude_nodes) -> None:
    """A mistyped --exclude would quietly quantize everything: name what matches no ONNX node.

    A warning, not an error: the quantizer's pre-processing may fuse nodes under new names.
    """
    from toolkit.artifacts import resolve_model
    from toolkit.console import warn

    path = resolve_model(model)
    if path.suffix.lower() != ".onnx":
        return  # TFLite takes tensor-name patterns, not node names
    import onnx

    from toolkit.safety.onnx import check_onnx_file

    check_onnx_file(path)
    from toolkit.quantize.onnx_graph import all_nodes

    names = {node.name for node in all_nodes(onnx.load(str(path), load_external_data=False).graph)}
    unknown = [name for name in exclude_nodes if name not in names]
    if unknown:
        sample = ", ".join(sorted(names)[:5]) + (", ..." if len(names) > 5 else "")
        warn(f"--exclude {', '.join(unknown)}: no node of that name in {path.name} (its nodes: {sample}); "
             "pre-processing fuses and renames nodes, so the name may still match the processed graph")


def _modes_text(rows: list[dict]) -> str:
    width = max(len(row["mode"]) for row in rows)
    lines = []
    for row in rows:
        needs = "--data" if row["mode"] == "auto" else ("calibration" if row["calibration"] else "no data")
        lines.append(f"{row['format']:<12} {row['mode']:<{width}}  {needs:<12} {row['description']}")
    return "\n".join(lines)
