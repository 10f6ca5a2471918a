"""Helpers the ONNX and TFLite quantizers share: calibration examples and their batches.

(The quantization libraries' chatter on stdout and stderr is kept off with
`toolkit.common.quiet.quiet`.)
"""

from __future__ import annotations

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
