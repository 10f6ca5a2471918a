"""Keep converters' and runtimes' chatter off stdout and stderr, so `--json` output stays clean.

litert-torch prints progress with rich on stdout, the TFLite converter, LiteRT and absl
log from C++ on the file descriptors, torch and optimum warn through logging and
`warnings`. Inside `quiet()` all of it goes to stderr when chatter is shown, and is
swallowed otherwise. Whether it is shown is the caller's choice (`show=`), by default
whether the `toolkit` logger is enabled for DEBUG (the CLI's -v). When the work fails,
the swallowed text is attached to the exception as a note, so a traceback (--debug)
shows it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator

from toolkit.errors import EdgewardWarning

THIRD_PARTY_LOGGERS = ("torch", "torch.onnx", "torch._export", "transformers", "optimum", "onnxscript", "absl", "jax")
NOTE_CHARS = 20000  # the tail of the swallowed text kept on a failure


def chatter_shown() -> bool:
    """Whether converter chatter is shown by default: the `toolkit` logger is enabled for DEBUG."""
    return logging.getLogger("toolkit").isEnabledFor(logging.DEBUG)


@contextlib.contextmanager
def quiet(show: bool | None = None) -> Iterator[None]:
    """Send what native and Python code print on fds 1 and 2 to stderr (`show`) or nowhere."""
    show = chatter_shown() if show is None else show
    saved_env = {key: os.environ.get(key) for key in ("LITERT_TORCH_SHOW_PROGRESS", "TF_CPP_MIN_LOG_LEVEL")}
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "y" if show else "n"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if show else "2")
    levels = {name: logging.getLogger(name).level for name in THIRD_PARTY_LOGGERS}
    if not show:
        for name in THIRD_PARTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
    _flush_std_streams()
    sink = tempfile.TemporaryFile()  # noqa: SIM115 - closed in finally
    python_text = io.StringIO()  # what Python code writes: sys.stdout/stderr need not be fds 1 and 2
    saved_out, saved_err = os.dup(1), os.dup(2)
    try:
        os.dup2(saved_err if show else sink.fileno(), 1)
        if not show:
            os.dup2(sink.fileno(), 2)
        with contextlib.ExitStack() as stack:
            stack.enter_context(warnings.catch_warnings())
            if show:
                stack.enter_context(contextlib.redirect_stdout(sys.stderr))
            else:
                stack.enter_context(contextlib.redirect_stdout(python_text))
                stack.enter_context(contextlib.redirect_stderr(python_text))
                warnings.simplefilter("ignore")
                warnings.simplefilter("default", EdgewardWarning)  # ours still reach the caller
            yield
    except BaseException as error:
        _flush_std_streams()
        if not show:
            _attach_chatter(error, sink, python_text.getvalue())
        raise
    finally:
        _flush_std_streams()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        os.close(saved_out)
        os.close(saved_err)
        sink.close()
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def _attach_chatter(error: BaseException, sink, python_text: str) -> None:
    sink.seek(0)
    text = (sink.read().decode("utf-8", "replace") + python_text).strip()
    if text and not isinstance(error, (KeyboardInterrupt, SystemExit)):
        error.add_note("output of the converter or runtime before the failure:\n" + text[-NOTE_CHARS:])
