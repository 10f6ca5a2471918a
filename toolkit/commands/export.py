"""`edgeward export`: a thin layer over `toolkit.export.export`."""

from __future__ import annotations

import click

from toolkit.common.units import human_bytes

EPILOG = """\b
Examples:
  edgeward export builtin:digits-cnn --to onnx
  edgeward export builtin:digits-cnn --to tflite -o exported/digits-tflite --data builtin:digits:test
  edgeward export model.onnx --to onnx --input-shape x=1x3x224x224
  edgeward export ./bert-folder --to onnx                  # a Hugging Face folder, through optimum
  edgeward export mypkg.models:make_net --weights net.safetensors --input-shape x=1x3x32x32 --to tflite
  edgeward export program.pt2 --to onnx --dynamic-batch
  edgeward export ./qwen2-folder --to tflite --cache-length 256   # LM: KV cache of prompt + new tokens

\b
SOURCE: builtin:digits-cnn | builtin:digits-mlp, a .onnx/.tflite/.pt2 file, a TorchScript
.pt (with --trust-torchscript), a Hugging Face folder (config.json + safetensors),
package.module:factory, or an artifact folder. Pickled checkpoints are refused.
The default output folder is exported/<source-name>-<format>. Right after export the
new model and its source run on the same inputs; the max abs error is printed and kept
in manifest.json (a float export above 1e-4 warns).
"""


@click.command("export", epilog=EPILOG)
@click.argument("source")
@click.option("--to", "to", required=True, type=click.Choice(["onnx", "tflite"]), help="Target format.")
@click.option("-o", "--output", "out_dir", type=click.Path(), help="Output artifact folder.")
@click.option("--opset", default=18, show_default=True, type=int, help="ONNX opset.")
@click.option("--dynamic-batch", is_flag=True, help="ONNX: keep the batch axis dynamic.")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=AxB",
              help="Pin an input's shape, e.g. x=1x3x224x224 (repeatable).")
@click.option("--data", metavar="DATA", help="Also compare on real data (builtin:digits:test or an .npz).")
@click.option("--weights", metavar="W", help="safetensors weights for a package.module:factory source.")
@click.option("--trust-torchscript", is_flag=True, help="Load a TorchScript .pt (it is executable code).")
@click.option("--trust-remote-code", is_flag=True, help="Let a Hugging Face folder run its own .py files.")
@click.option("--trust-pickle", is_flag=True, help="Load a pickled .pt model (unpickling runs code: only files you trust).")
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
@click.option("--cache-length", type=int, metavar="N",
              help="tflite language model: KV cache positions (default: its context, at most 1024); "
                   "set it to prompt + new tokens: each decode step works over the whole cache.")
def command(source, to, out_dir, opset, dynamic_batch, input_shapes, data, weights, trust_torchscript,
            trust_remote_code, trust_pickle, force, cache_length):
    """Export a model to ONNX or TFLite, checked against its source."""
    from toolkit.console import emit
    from toolkit.export import export, relative_text
    from toolkit.sources import parse_input_shapes

    result = export(
        source, to, out_dir, opset=opset, dynamic_batch=dynamic_batch, force=force, data=data,
        input_shapes=parse_input_shapes(input_shapes), weights=weights,
        trust_torchscript=trust_torchscript, trust_remote_code=trust_remote_code, trust_pickle=trust_pickle,
        cache_length=cache_length,
    )
    error = result.manifest.get("export_error", {})
    payload = {
        "out_dir": str(result.out_dir),
        "model_path": str(result.model_path),
        "format": to,
        "size_bytes": result.size_bytes,
        "max_abs_error": result.max_abs_error,
        "export_error": error,
        "inputs": result.manifest.get("inputs"),
        "outputs": result.manifest.get("outputs"),
    }
    checked = "random inputs" + (f" + {error['data_examples']} examples of {error['data_name']}" if "data" in error else "")
    emit(payload, f"{result.out_dir}: {result.model_path.name} {human_bytes(result.size_bytes)}, "
                  f"max abs error {result.max_abs_error:.3g}{relative_text(error)} vs the source ({checked})")
