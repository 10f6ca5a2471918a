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
    return len(dataset)


def take(dataset: Dataset, count: int) -> Dataset:
    return dataset.take(count)


def calibration_batches(dataset: Dataset, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Feeds of `batch_size` examples; scalar inputs are passed whole with every batch."""
    yield from dataset.batches(batch_size)


def fixed_batch(specs, inputs: dict | None = None) -> int | None:
    """The fixed batch size the model's inputs demand, if any (e.g. 1 for most TFLite files).

    With the data's `inputs`, each input's example axis is read from them (`batch_axis`):
    silero-vad's state [2, batch, 128] fixes 2 on axis 0, which is not its batch.
    """
    from toolkit.data import batch_axis

    fixed = []
    for spec in specs:
        if not spec.shape:
            continue
        axis = batch_axis(inputs[spec.name], spec) if inputs and spec.name in inputs else 0
        if axis is not None and isinstance(spec.shape[axis], int) and spec.shape[axis] > 0:
            fixed.append(spec.shape[axis])
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
