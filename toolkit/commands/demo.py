"""`edgeward demo`: the builtin recipe on the digits CNN, end to end."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import click

from toolkit.commands.run import check_executor, executor_options, run_and_print


def demo_recipe(name: str = "demo.yaml"):
    """A builtin recipe. It names only builtin specs (builtin:tiny-lm:train, ...), never a relative path,
    so the text `--show-recipe` prints runs the same from any folder."""
    import yaml

    from toolkit.pipeline.recipe import load_recipe

    return load_recipe(yaml.safe_load(resources.files("toolkit.pipeline").joinpath(name).read_text()))


@click.command(
    epilog="""\b
Examples:
  edgeward demo
  edgeward demo -o /tmp/demo --force
  edgeward demo --show-recipe > recipe.yaml && edgeward run recipe.yaml
  edgeward demo --executor ray                   # independent steps side by side on a local Ray cluster
  edgeward demo --llm                            # the language-model recipe (builtin:tiny-lm)
  edgeward demo --llm --show-recipe > lm.yaml && edgeward run lm.yaml

\b
The digits CNN (trained in seconds on scikit-learn's bundled digits) is distilled into
a student with half the width, exported to ONNX and TFLite, quantized, validated
against the teacher, benched on localhost and estimated for a Raspberry Pi 5 and a
phone; then every variant is priced for a fleet of Pi 5 boxes and ranked (as `edgeward
plan` does), each keeping on the device the share its own confidence allows, and the
cheapest is named in one sentence. A second run reuses every artifact.

\b
With --llm: a tiny language model (builtin:tiny-lm, built from a config and trained
for seconds on a bundled text) is distilled to one layer, exported with a KV cache,
quantized to int4, validated on held-out text (perplexity, agreement, KL), benched
for tokens/s on localhost and priced per token against gpt-4o-mini.
"""
)
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("exported/demo"), show_default=True, help="Output folder.")
@click.option("--force", is_flag=True, help="Redo every step.")
@click.option("--dry-run", is_flag=True, help="Print the plan only.")
@click.option("--show-recipe", is_flag=True, help="Print the builtin recipe (YAML) and exit.")
@click.option("--llm", is_flag=True, help="The language-model recipe (default -o exported/demo-llm).")
@executor_options
def command(out_dir: Path, force: bool, dry_run: bool, show_recipe: bool, llm: bool, executor: str,
            address: str | None) -> None:
    """Run the builtin recipe on the digits model (or, with --llm, a tiny language model), end to end."""
    check_executor(executor, address)
    name = "demo_llm.yaml" if llm else "demo.yaml"
    if llm and click.get_current_context().get_parameter_source("out_dir") == click.core.ParameterSource.DEFAULT:
        out_dir = Path("exported/demo-llm")
    if show_recipe:
        from toolkit.console import emit

        text = resources.files("toolkit.pipeline").joinpath(name).read_text()
        emit({"recipe": text}, text)
        return
    run_and_print(demo_recipe(name), out_dir, force, dry_run, executor, address)
