"""Shard a validation across workers: map over batches, reduce exactly.

A large data set is cut into contiguous shards whose bounds fall on batch bounds (of both
sides' batch sizes), so every batch either side runs is the batch it would run in one
process: dynamic quantization, whose scales depend on the batch, gives the same outputs.
Each shard yields the sufficient statistics of every output (`OutputStats`: counts, sums,
maxima), its error arrays and its confidence rows; they are merged in data order. Counts
(accuracy, agreement) and maxima merge exactly; sums (mean error, SQNR, cosine) up to
floating-point summation order. A run on one process is one shard: the same code path.

Workers are processes (spawned, so no runtime state is forked) or Ray tasks (Ray is an
optional extra, imported only in `map_on_ray`). A worker opens both models from their specs
and gets only its own shard's arrays.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np

from toolkit.errors import BadInput, missing_library
from toolkit.validate.metrics import (
    Confidence,
    OutputMetrics,
    OutputStats,
    compare_stats,
    confidence_of,
    join_confidences,
    match_outputs,
    merge_stats,
)

logger = logging.getLogger(__name__)

SHARD_EXECUTORS = ("local", "ray")


@dataclass
class ShardFigures:
    """What one shard of a validation yields (picklable: it travels back from a worker)."""

    stats: list[OutputStats]
    errors: dict[str, np.ndarray]
    confidence: Confidence | None
    seconds: dict[str, float] = field(default_factory=dict)  # candidate, reference


@dataclass
class Figures:
    """The whole data's figures, reduced from its shards."""

    metrics: list[OutputMetrics]
    errors: dict[str, np.ndarray]
    confidence: Confidence | None
    seconds: dict[str, float]
    shards: int


@dataclass
class ShardJob:
    """One shard for a worker: the two model specs and this shard's examples."""

    candidate: str
    reference: str
    dataset: object  # toolkit.data.Dataset holding only this shard
    batch_size: int
    source_options: dict


def figures_of(cand, ref, dataset, device: str | None, batch_size: int) -> ShardFigures:
    """Run both open sides on `dataset` (one shard, or all of it) and take its stats."""
    from toolkit.validate.sides import prepare_feeds, run_candidate, run_side

    dataset = standard_layout(dataset)
    cand_feeds = prepare_feeds(dataset, cand.runner, "candidate")
    ref_feeds = prepare_feeds(dataset, ref.runner, "reference")
    tick = time.perf_counter()
    cand_outputs = run_candidate(cand, cand_feeds, device, batch_size=batch_size)
    seconds = {"candidate": time.perf_counter() - tick}
    tick = time.perf_counter()
    ref_outputs = run_side(ref.runner, ref_feeds, batch_size=batch_size)
    seconds["reference"] = time.perf_counter() - tick
    pairs = match_outputs(output_names(cand.runner), cand_outputs, output_names(ref.runner), ref_outputs)
    stats, errors = compare_stats(pairs, dataset.labels, data_name=dataset.name)
    return ShardFigures(stats, errors, confidence_of(pairs, dataset.labels), seconds)


def standard_layout(dataset):
    """The dataset with every array in plain C order (a copy only where it is not).

    A worker receives its shard through pickle, which lays arrays out in plain C order;
    an adapter may hand over a transposed view (NHWC data as NCHW, channels_last strides),
    and torch picks other kernels for those, with different rounding. Every shard, and a
    run in one process, feeds the same layout, so the figures do not depend on where it ran.
    """
    from toolkit.data import Dataset

    def plain(array):
        array = np.asarray(array)
        expected, step = [], array.itemsize
        for dim in reversed(array.shape):
            expected.insert(0, step)
            step *= max(dim, 1)
        return array if tuple(expected) == array.strides else np.array(array, order="C", copy=True)

    inputs = {name: plain(array) for name, array in dataset.inputs.items()}
    if all(inputs[name] is array for name, array in dataset.inputs.items()):
        return dataset
    return Dataset(inputs, dataset.labels, dataset.name, dataset.meta, dict(dataset.axes))


def reduce_figures(parts: list[ShardFigures]) -> Figures:
    """The shards' figures (in data order) merged into the whole data's."""
    stats = merge_stats([part.stats for part in parts])
    errors = {name: np.concatenate([part.errors[name] for part in parts]) for name in parts[0].errors}
    seconds = {key: sum(part.seconds.get(key, 0.0) for part in parts) for key in ("candidate", "reference")}
    return Figures([item.metrics() for item in stats], errors, join_confidences([p.confidence for p in parts]),
                   seconds, len(parts))


def output_names(runner) -> list[str]:
    return [spec.name for spec in runner.outputs]


def shard_bounds(count: int, shards: int, unit: int) -> list[tuple[int, int]]:
    """At most `shards` contiguous (start, stop) ranges over `count` examples, cut on multiples of `unit`."""
    units = max(1, math.ceil(count / unit))
    per_shard = math.ceil(units / max(1, shards)) * unit
    return [(start, min(start + per_shard, count)) for start in range(0, count, per_shard)] or [(0, count)]


def batch_unit(cand_runner, ref_runner, inputs: dict, batch_size: int) -> int:
    """The smallest shard step that keeps both sides' batches whole (their sizes' least common multiple)."""
    from toolkit.common.batching import fixed_batch

    sizes = [fixed_batch(list(runner.inputs), inputs) or batch_size for runner in (cand_runner, ref_runner)]
    return math.lcm(*sizes)


def shardable(dataset, cand_runner) -> str | None:
    """Why this data cannot be cut on axis 0 (None when it can)."""
    axes = dataset.for_model(list(cand_runner.inputs)).axes
    odd = [name for name, axis in axes.items() if axis not in (0, None)]
    if odd:
        return f"inputs {', '.join(odd)} count their examples on another axis than 0"
    return None


def slice_dataset(dataset, start: int, stop: int):
    from toolkit.common.batching import slice_examples
    from toolkit.data import Dataset

    axes = {name: dataset.axis(name) for name in dataset.inputs}
    labels = None if dataset.labels is None else dataset.labels[start:stop]
    return Dataset(slice_examples(dataset.inputs, axes, start, stop), labels, dataset.name, dataset.meta,
                   dict(dataset.axes))


def run_shard(job: ShardJob) -> ShardFigures:
    """A worker's part: open both models from their specs and take this shard's figures."""
    from toolkit.validate.sides import load_side

    cand = load_side(job.candidate, "candidate", **job.source_options)
    ref = load_side(job.reference, "reference", **job.source_options)
    return figures_of(cand, ref, job.dataset, None, job.batch_size)


def map_shards(jobs: list[ShardJob], *, executor: str = "local", address: str | None = None) -> list[ShardFigures]:
    """Each job's figures, in job order: on one spawned process per job, or as Ray tasks."""
    if executor == "ray":
        return map_on_ray(jobs, address)
    if executor != "local":
        raise BadInput(f"unknown executor {executor!r}: choose one of {', '.join(SHARD_EXECUTORS)}")
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=len(jobs), mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(run_shard, jobs))


def map_on_ray(jobs: list[ShardJob], address: str | None) -> list[ShardFigures]:
    """Each job as a Ray task (one CPU each): on the cluster at `address`, or a local one
    of as many CPUs as there are shards, started here and stopped after."""
    try:
        import ray
    except ImportError:
        raise missing_library("ray", extra="ray") from None
    from toolkit.common.ray_errors import get_reraising_edgeward_errors

    started_here = False
    if not ray.is_initialized():
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no network at run time
        options = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        try:
            ray.init(address=address, **options) if address else ray.init(num_cpus=len(jobs), **options)
        except (ConnectionError, ValueError, RuntimeError) as error:
            raise BadInput(f"cannot join the Ray cluster at {address}: {error}") from None
        started_here = True
    try:
        task = ray.remote(num_cpus=1, max_retries=2)(run_shard)
        refs = [task.remote(job) for job in jobs]
        return get_reraising_edgeward_errors(ray, refs)
    finally:
        if started_here:
            ray.shutdown()


def check_sharding(workers: int, executor: str, address: str | None) -> None:
    """Refuse sharding options that cannot work, before any model is opened."""
    if workers < 1:
        raise BadInput(f"--workers {workers}: give a positive number of workers")
    if executor not in SHARD_EXECUTORS:
        raise BadInput(f"unknown executor {executor!r}: choose one of {', '.join(SHARD_EXECUTORS)}")
    if address and executor != "ray":
        raise BadInput(f"--address {address}: a Ray cluster's address needs --executor ray")


def sharded_figures(cand, ref, dataset, *, candidate_spec, reference_spec, source_options: dict, batch_size: int,
                    workers: int = 1, executor: str = "local", address: str | None = None,
                    device: str | None = None) -> Figures:
    """The figures of the whole data: in this process on the open sides (one worker, local),
    else shard by shard on workers that reopen the models from their specs."""
    check_sharding(workers, executor, address)
    if workers == 1 and executor == "local":
        return reduce_figures([figures_of(cand, ref, dataset, device, batch_size)])
    if device:
        raise BadInput("--workers/--executor shard a validation on the host; with --device the board runs one "
                       "job at a time (drop --workers, or run the recipe's steps with edgeward run --executor ray)")
    specs = [spec for spec in (candidate_spec, reference_spec) if not isinstance(spec, str | os.PathLike)]
    if specs:
        raise BadInput("a sharded validation reopens the models in each worker: give the candidate and the "
                       "reference as specs (paths, artifact folders, builtin:...), not open runners")
    reason = shardable(dataset, cand.runner)
    if reason:
        logger.warning("%s: validating in one shard (%s)", dataset.name, reason)
        return reduce_figures([figures_of(cand, ref, dataset, None, batch_size)])
    unit = batch_unit(cand.runner, ref.runner, dataset.inputs, batch_size)
    bounds = shard_bounds(len(dataset), workers, unit)
    if len(bounds) == 1 and executor == "local":
        return reduce_figures([figures_of(cand, ref, dataset, None, batch_size)])
    logger.info("%s: %d examples in %d shards (%s)", dataset.name, len(dataset), len(bounds), executor)
    jobs = [ShardJob(str(candidate_spec), str(reference_spec), slice_dataset(dataset, start, stop), batch_size,
                     source_options) for start, stop in bounds]
    return reduce_figures(map_shards(jobs, executor=executor, address=address))
