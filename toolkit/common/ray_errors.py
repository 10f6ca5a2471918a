"""An Edgeward error raised inside a Ray task, raised again as itself on the driver."""

from __future__ import annotations


def get_reraising_edgeward_errors(ray, refs):
    """`ray.get(refs)`; when a task raised an Edgeward error (BadInput, GateFailed, ...), that error
    is raised again as itself, so the CLI maps it to its exit code and one clear line, instead of
    Ray's RayTaskError wrapping it. Any other failure propagates as Ray raised it."""
    from toolkit.errors import EdgewardError

    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as error:
        cause = getattr(error, "cause", None)
        if isinstance(cause, EdgewardError):
            raise cause from None
        raise
