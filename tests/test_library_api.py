"""The library from Python: silent by default, its warnings arrive as data, and only the CLI
layer (toolkit/cli.py, toolkit/commands/) prints."""

from __future__ import annotations

import ast
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "toolkit"
CLI_LAYER = ("cli.py", "commands/", "__main__.py")


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports (absolute names; `from toolkit import console` gives toolkit.console)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def library_files() -> list[Path]:
    files = [path for path in sorted(PACKAGE.rglob("*.py"))
             if not path.relative_to(PACKAGE).as_posix().startswith(CLI_LAYER)]
    assert len(files) > 50  # the walk found the package
    return files


def test_only_the_cli_layer_imports_console_or_cli():
    offenders = {
        path.relative_to(PACKAGE).as_posix(): sorted(name for name in imported_modules(path)
                                                      if name in ("toolkit.console", "toolkit.cli"))
        for path in library_files()
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_quantize_from_python_prints_nothing_and_warns_as_data(tmp_path, capfd, digits_test):
    """Export the builtin CNN and quantize it with calibration data a dynamic mode does not use:
    not a byte on stdout or stderr (fds included), and the warning comes back as an object."""
    from toolkit.errors import EdgewardWarning
    from toolkit.export import export
    from toolkit.quantize import quantize
    from toolkit.runtime import open_model, run_batched

    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exported = export("builtin:digits-cnn", "onnx", tmp_path / "onnx")
        result = quantize(exported.out_dir, "dynamic-int8", tmp_path / "int8", calibration="builtin:digits:train")
    printed = capfd.readouterr()
    assert printed.out == "" and printed.err == ""

    ours = [str(w.message) for w in caught if issubclass(w.category, EdgewardWarning)]
    assert ours == ["dynamic-int8 does not use calibration data; ignoring it"]
    assert caught[[str(w.message) for w in caught].index(ours[0])].filename == __file__  # points at the caller

    # the work was real: a smaller int8 model that still reads the digits
    assert exported.max_abs_error <= 1e-4
    assert result.size_ratio < 0.5
    logits = run_batched(open_model(result.model_path), {"x": digits_test.inputs["x"]})[0]
    accuracy = float((np.argmax(logits, axis=1) == digits_test.labels).mean())
    assert accuracy > 0.9


def test_quiet_keeps_native_output_off_the_terminal_and_on_a_failure(capfd):
    """What C++ writes on fds 1 and 2 is swallowed; shown on stderr with show=True; attached to
    the exception (shown by a --debug traceback) when the work fails."""
    from toolkit.common.quiet import quiet

    capfd.readouterr()
    with quiet(show=False):
        os.write(1, b"native chatter on fd 1\n")
        os.write(2, b"native chatter on fd 2\n")
        print("python chatter")
    assert capfd.readouterr() == ("", "")
    with pytest.raises(RuntimeError) as failure, quiet(show=False):
        os.write(2, b"the converter says why\n")
        raise RuntimeError("conversion failed")
    assert "the converter says why" in failure.value.__notes__[0]
    with quiet(show=True):
        os.write(1, b"shown on stderr\n")
    assert capfd.readouterr() == ("", "shown on stderr\n")
