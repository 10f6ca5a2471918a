"""`toolkit.common.ray_errors`: an Edgeward error raised in a Ray task reaches the driver as itself
(so the CLI gives its exit code and one line), any other failure as Ray raised it."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

ray = pytest.importorskip("ray")

from toolkit.common.ray_errors import get_reraising_edgeward_errors  # noqa: E402
from toolkit.errors import BadInput, GateFailed  # noqa: E402


def _ray_raising(cause: BaseException):
    """A stand-in for the `ray` module whose get() raises Ray's own RayTaskError around `cause`
    (no cluster is started: these tests may run outside a loopback-only namespace)."""
    def get(refs):
        raise ray.exceptions.RayTaskError("run_shard", "Traceback: ...", cause)

    return SimpleNamespace(get=get, exceptions=ray.exceptions)


@pytest.mark.parametrize("error", [BadInput("data file 'x.npz' not found"), GateFailed("accuracy dropped 3 points")])
def test_an_edgeward_error_in_a_task_is_raised_as_itself(error):
    with pytest.raises(type(error)) as raised:
        get_reraising_edgeward_errors(_ray_raising(error), ["ref"])
    assert raised.value is error
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_any_other_failure_keeps_rays_error():
    with pytest.raises(ray.exceptions.RayTaskError) as raised:
        get_reraising_edgeward_errors(_ray_raising(ValueError("a bug")), ["ref"])
    assert isinstance(raised.value.cause, ValueError) and str(raised.value.cause) == "a bug"


def test_results_pass_through():
    assert get_reraising_edgeward_errors(SimpleNamespace(get=lambda refs: [1, 2], exceptions=ray.exceptions),
                                         ["a", "b"]) == [1, 2]


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("EDGEWARD_TEST_LOOPBACK_ONLY") != "1",
                    reason="Ray tests run in a loopback-only network namespace: use scripts/test")
def test_a_real_ray_task_raising_bad_input_gives_bad_input():
    def refuse(value):  # defined here so that Ray sends it by value (workers cannot import tests/)
        from toolkit.errors import BadInput

        raise BadInput(f"value {value} refused")

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        refs = [ray.remote(max_retries=0)(refuse).remote(7)]
        with pytest.raises(BadInput, match="value 7 refused"):
            get_reraising_edgeward_errors(ray, refs)
    finally:
        ray.shutdown()
