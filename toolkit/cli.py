"""The `edgeward` command line: a thin, lazily loading layer over the library.

Each command lives in `toolkit/commands/<name>.py` and is imported only when it runs,
so `edgeward --help` does not pay for torch or onnxruntime. Typed errors become exit
codes here and nowhere else (0 ok, 1 gate failed, 2 bad input, 3 unsupported,
4 device fault).
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING

import click

from toolkit import __version__

if TYPE_CHECKING:
    from toolkit.console import OutputMode

# name -> (module path, one-line help). The registry is data: help needs no imports.
COMMANDS: dict[str, tuple[str, str]] = {
    "export": ("toolkit.commands.export", "Export a model to ONNX or TFLite."),
    "quantize": ("toolkit.commands.quantize", "Quantize an ONNX or TFLite model (int8, fp16, int4, auto)."),
    "distill": ("toolkit.commands.distill", "Distill a teacher model into a smaller student."),
    "validate": ("toolkit.commands.validate", "Compare a candidate model with its reference on data."),
    "bench": ("toolkit.commands.bench", "Measure or estimate latency and memory on a device."),
    "drift": ("toolkit.commands.drift", "Compare a model's outputs on devices with this host's (drift)."),
    "devices": ("toolkit.commands.devices", "List, show and check device profiles."),
    "breakeven": ("toolkit.commands.breakeven", "Price on-device inference against the cloud."),
    "plan": ("toolkit.commands.plan", "Rank every model variant × device by cost at an accuracy floor."),
    "generate": ("toolkit.commands.generate", "Generate text from an exported language model (streamed)."),
    "run": ("toolkit.commands.run", "Run a recipe: every stage it names, in order."),
    "demo": ("toolkit.commands.demo", "Run the builtin recipe on the digits model, end to end."),
}

GLOBAL_FLAGS = {"--json", "--debug", "-v", "--verbose", "-vv"}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module = importlib.import_module(COMMANDS[name][0])
        return module.command

    def format_commands(self, ctx, formatter):
        rows = [(name, help_text) for name, (_, help_text) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


EPILOG = """\b
Examples:
  edgeward demo
  edgeward export builtin:digits-cnn --to onnx -o exported/digits-onnx
  edgeward quantize exported/digits-onnx --mode static-int8 --calibration builtin:digits:train -o exported/digits-int8
  edgeward validate exported/digits-int8 --reference builtin:digits-cnn --data builtin:digits:test
  edgeward breakeven --example > scenario.yaml && edgeward breakeven scenario.yaml -o exported/breakeven

\b
Exit codes: 0 ok, 1 gate failed, 2 bad input, 3 unsupported, 4 device fault.
--json, -v and --debug may stand before or after the command name.
"""


@click.group(cls=LazyGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgeward")
@click.option("--json", "json_output", is_flag=True, help="Machine output (JSON) on stdout; human text on stderr.")
@click.option("-v", "--verbose", count=True, help="More detail on stderr (-vv for even more).")
@click.option("--debug", is_flag=True, help="Show the traceback of an error.")
def cli(json_output: bool, verbose: int, debug: bool) -> None:
    """Edgeward: make a trained model run on a device, prove it still answers
    correctly, and say in money whether that beats the cloud."""


def _lift_global_flags(argv: list[str]) -> tuple[list[str], OutputMode]:
    """Accept --json/-v/--debug anywhere before `--`: returns the other arguments and the output mode."""
    from toolkit.console import OutputMode

    kept, passthrough = [], False
    json_output, verbose, debug = False, 0, False
    for arg in argv:
        if passthrough or arg not in GLOBAL_FLAGS:
            passthrough = passthrough or arg == "--"
            kept.append(arg)
            continue
        if arg == "--json":
            json_output = True
        elif arg == "--debug":
            debug = True
        else:
            verbose += 2 if arg == "-vv" else 1
    return kept, OutputMode(json=json_output, verbose=verbose, debug=debug)


def main(argv: list[str] | None = None) -> int:
    """Run one `edgeward` command in this process; returns its exit code."""
    from toolkit.console import configured

    argv, output = _lift_global_flags(list(sys.argv[1:] if argv is None else argv))
    with configured(output):
        return _run(argv, debug=output.debug)


def _run(argv: list[str], *, debug: bool) -> int:
    from toolkit.errors import EdgewardError

    try:
        cli.main(args=argv, prog_name="edgeward", standalone_mode=False)
        return 0
    except EdgewardError as error:
        if debug:
            raise
        click.echo(f"error: {error}", err=True)
        return error.exit_code
    except click.exceptions.Exit as done:
        return done.exit_code
    except click.exceptions.NoArgsIsHelpError as error:  # `edgeward devices` alone: show its help
        error.show()
        return 2
    except click.UsageError as error:
        path = error.ctx.command_path if error.ctx else "edgeward"
        click.echo(f"error: {' '.join(error.format_message().split())} (see '{path} --help')", err=True)
        return 2
    except click.ClickException as error:
        click.echo(f"error: {' '.join(error.format_message().split())}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except KeyboardInterrupt:
        click.echo("interrupted: nothing half-written was kept", err=True)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as error:  # a bug or an input no check foresaw: one line, never a traceback
        if debug:
            raise
        text = (str(error).strip().splitlines() or [""])[0][:300]
        click.echo(f"error: unexpected {type(error).__name__}: {text} (rerun with --debug for the traceback)", err=True)
        return 2


CHILD_TARGET = "toolkit.cli:run_child"  # what the supervised child process runs


def run_entry() -> None:  # pragma: no cover - console script wrapper
    """The console script: model-touching commands run in a supervised child (isolation.py)."""
    from toolkit.safety.isolation import entry

    sys.exit(entry(main, child_target=CHILD_TARGET, say=_say))


def run_child() -> None:  # pragma: no cover - runs in the child process
    """Inside the supervised child: its limits, then `main` on the child's arguments."""
    from toolkit.safety.isolation import child_main

    child_main(main, say=_say)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
