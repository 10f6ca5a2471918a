"""`edgeward distill`: a thin layer over `toolkit.distill.distill`."""

from __future__ import annotations

import click

from toolkit.commands.data_options import apply as apply_data_options
from toolkit.commands.data_options import check_used as check_data_flags_used
from toolkit.commands.data_options import data_options

EPILOG = """\b
Examples:
  edgeward distill --teacher builtin:digits-cnn --student shrink:0.5 -o exported/digits-student
  edgeward distill --teacher builtin:digits-cnn --student shrink:0.5 --baseline -o exported/digits-student
  edgeward distill --teacher builtin:digits-cnn --student builtin:digits-mlp --data builtin:digits:train
  edgeward distill --teacher ./bert-folder --student layers:2 --data train.npz --val test.npz -o exported/bert-2l
  edgeward distill --teacher model.onnx --student mypkg.nets:small --data train.npz -o exported/small
  edgeward export exported/digits-student --to onnx      # the student is a SOURCE for export
  edgeward distill --teacher ./qwen2-folder --student layers:1 --data text.txt --steps 200 -o exported/qwen2-1l

\b
SPEC: shrink:F (a builtin digits teacher's family, width times F), builtin:NAME
(digits-cnn, digits-mlp), package.module:factory, or layers:N for a Hugging Face
encoder teacher (N layers taken from every k-th teacher layer, DistilBERT-style).
DATA: builtin:digits[:train|:test], an .npz with arrays named after the inputs
(input_ids, attention_mask for text) and optional labels, or an image/WAV folder, a
.jsonl/.csv/.parquet file or a save_to_disk folder (see the data flags); without labels the
student learns from the teacher alone. With a digits teacher --data defaults to
builtin:digits:train and --val to builtin:digits:test; otherwise 10% of DATA is
held out for early stopping unless --val is given.

\b
A causal-LM folder as teacher (a ...ForCausalLM): --data and --val are text files
(.txt lines or .jsonl with a text field); the student (layers:N, or a causal-LM folder
with the same vocabulary) learns the teacher's next-token distributions, a label-only
baseline is trained beside it, and the perplexities on held-out text are reported.
"""


@click.command("distill", epilog=EPILOG)
@click.option("--teacher", required=True, metavar="SOURCE", help="The large model: builtin:, HF folder, artifact, .onnx …")
@click.option("--student", required=True, metavar="SPEC", help="shrink:F | layers:N | builtin:NAME | pkg.module:factory")
@click.option("--data", metavar="DATA", help="Training data (default builtin:digits:train for digits teachers).")
@click.option("--val", metavar="DATA", help="Validation data for early stopping and the reported accuracies.")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(), help="Output artifact folder.")
@click.option("--epochs", default=30, show_default=True, type=int, help="At most this many epochs.")
@click.option("--steps", type=int, help="Language models: this many optimizer steps (instead of epochs).")
@click.option("--lr", default=3e-3, show_default=True, type=float, help="Adam learning rate.")
@click.option("--batch-size", default=64, show_default=True, type=int)
@click.option("--temperature", default=4.0, show_default=True, type=float, help="Softening temperature T (> 0).")
@click.option("--alpha", default=0.7, show_default=True, type=float,
              help="Weight of the distillation loss; 1 - alpha goes to the labels.")
@click.option("--patience", default=5, show_default=True, type=int, help="Stop after this many epochs without gain.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--baseline", is_flag=True, help="Also train the same student on labels alone, to compare.")
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
@data_options
def command(teacher, student, data, val, out_dir, epochs, steps, lr, batch_size, temperature, alpha, patience, seed,
            baseline, force, data_options):
    """Distill a teacher into a smaller student (Hinton knowledge distillation)."""
    from toolkit.console import ProgressDisplay, emit
    from toolkit.distill import distill
    from toolkit.errors import BadInput
    from toolkit.lm.folder import is_causal_lm

    if is_causal_lm(teacher):  # --max-length: the tokens of a training window; the other data flags do not apply
        unused = [name for name, value in data_options.items() if value is not None and name != "max_length"]
        if unused:
            raise BadInput(f"--{unused[0].replace('_', '-')} does not apply to a language-model teacher's text")
        _distill_language_model(teacher, student, data, val, out_dir, force, steps=steps, epochs=epochs, lr=lr,
                                max_length=data_options.get("max_length"), batch_size=batch_size,
                                temperature=temperature, alpha=alpha, seed=seed)
        return
    if steps is not None:
        raise BadInput("--steps applies to a language-model teacher; use --epochs")
    if data is None:
        if teacher.removeprefix("builtin:") not in ("digits-cnn", "digits-mlp"):
            raise BadInput("--data is required for this teacher (builtin:digits:train is the default only for digits)")
        data = "builtin:digits:train"
    check_data_flags_used(data_options, data, val)
    data = apply_data_options(data, data_options, teacher)
    val = apply_data_options(val, data_options, teacher)
    with ProgressDisplay() as progress:
        result = distill(teacher, student, data, val=val, epochs=epochs, lr=lr, batch_size=batch_size,
                         temperature=temperature, alpha=alpha, seed=seed, patience=patience, baseline=baseline,
                         out_dir=out_dir, force=force, progress=progress)
    emit(result.summary(), _human(result))


def _distill_language_model(teacher, student, data, val, out_dir, force, **options) -> None:
    """A causal-LM teacher: toolkit.lm.distill, with its own defaults for the options not given here."""
    from toolkit.console import ProgressDisplay, emit
    from toolkit.errors import BadInput
    from toolkit.lm.distill import distill_lm

    if data is None:
        raise BadInput("--data is required for a language-model teacher: a text file (.txt lines or .jsonl)")
    context = click.get_current_context()
    given = {name: value for name, value in options.items()
             if value is not None and context.get_parameter_source(name) != click.core.ParameterSource.DEFAULT}
    if options.get("max_length") is not None:
        given["max_length"] = options["max_length"]
    with ProgressDisplay() as progress:
        result = distill_lm(teacher, student, data, val=val, out_dir=out_dir, force=force, progress=progress, **given)
    emit(result.summary(), result.human())


def _human(result) -> str:
    def pct(value):
        return "n/a" if value is None else f"{value:.2%}"

    share = result.student_parameters / result.teacher_parameters if result.teacher_parameters else None
    lines = [
        f"{result.out_dir}: student {result.student_parameters:,} parameters"
        + (f" ({share:.1%} of the teacher's {result.teacher_parameters:,})" if share else ""),
        f"accuracy on {result.val_name}: teacher {pct(result.teacher_accuracy)}, "
        f"student {pct(result.student_accuracy)} (agrees with the teacher on {pct(result.agreement)}; "
        f"best epoch {result.best_epoch})",
    ]
    if result.baseline_student is not None:
        gain = None
        if result.student_accuracy is not None and result.baseline_accuracy is not None:
            gain = (result.student_accuracy - result.baseline_accuracy) * 100
        lines.append(f"label-only baseline: {pct(result.baseline_accuracy)}"
                     + ("" if gain is None else f" (distillation {gain:+.2f} points)"))
    return "\n".join(lines)
