"""Keep converters' chatter off stdout, so `--json` output stays clean JSON.

litert-torch prints progress with rich on stdout, the TFLite converter and absl log
from C++ on the file descriptors, torch and optimum warn through logging. Inside
`quiet()` all of it goes to stderr with -v, and is swallowed otherwise (shown after a
failure with --debug).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings

from toolkit.console import settings

_LOGGERS = ("torch", "torch.onnx", "torch._export", "transformers", "optimum", "onnxscript", "absl", "jax")


@contextlib.contextmanager
def quiet():
    show = settings.verbose >= 1
    saved_env = {key: os.environ.get(key) for key in ("LITERT_TORCH_SHOW_PROGRESS", "TF_CPP_MIN_LOG_LEVEL")}
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "y" if show else "n"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if show else "2")
    levels = {name: logging.getLogger(name).level for name in _LOGGERS}
    if not show:
        for name in _LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    sink = tempfile.TemporaryFile()  # noqa: SIM115 - closed in finally
    saved_out, saved_err = os.dup(1), os.dup(2)
    failed = False
    try:
        os.dup2(saved_err if show else sink.fileno(), 1)
        if not show:
            os.dup2(sink.fileno(), 2)
        with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
            if not show:
                warnings.simplefilter("ignore")
            yield
    except BaseException:
        failed = True
        raise
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        os.close(saved_out)
        os.close(saved_err)
        if failed and settings.debug and not show:
            sink.seek(0)
            sys.stderr.write(sink.read().decode("utf-8", "replace")[-20000:])
        sink.close()
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
