"""Helpers the ONNX and TFLite quantizers share: calibration examples and a quiet stdout.

The quantization libraries print progress and notes on stdout (and C++ logs on stderr);
with `--json` stdout must hold only our JSON, so their output is captured and shown only
with `-v`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

import numpy as np

from toolkit.data import Dataset


def example_count(dataset: Dataset) -> int:
    """Examples in a dataset; a 0-d array (a scalar input shared by all examples) has none."""
    lengths = [array.shape[0] for array in dataset.inputs.values() if np.ndim(array) > 0]
    return min(lengths) if lengths else (1 if dataset.inputs else 0)


def take(dataset: Dataset, count: int) -> Dataset:
    inputs = {name: (array if np.ndim(array) == 0 else array[:count]) for name, array in dataset.inputs.items()}
    labels = None if dataset.labels is None else dataset.labels[:count]
    return Dataset(inputs, labels, dataset.name, dataset.meta)


def calibration_batches(dataset: Dataset, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Feeds of `batch_size` examples; scalar inputs are passed whole with every batch."""
    count = example_count(dataset)
    for start in range(0, count, batch_size):
        yield {
            name: (array if np.ndim(array) == 0 else array[start : start + batch_size])
            for name, array in dataset.inputs.items()
        }


def fixed_batch(specs) -> int | None:
    """The fixed batch size the model's inputs demand, if any (e.g. 1 for most TFLite files)."""
    fixed = [spec.shape[0] for spec in specs if spec.shape and isinstance(spec.shape[0], int) and spec.shape[0] > 0]
    return min(fixed) if fixed else None


@contextlib.contextmanager
def quiet_output() -> Iterator[None]:
    """Capture what native and Python code print on fds 1 and 2; replay it on stderr with -v."""
    from toolkit.console import settings

    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    with tempfile.TemporaryFile() as sink:
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            with contextlib.redirect_stdout(sys.stderr):
                yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            if settings.verbose or settings.debug:
                sink.seek(0)
                text = sink.read().decode("utf-8", "replace")
                if text.strip():
                    print(text.rstrip(), file=sys.stderr, flush=True)
