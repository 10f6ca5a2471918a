"""Progress of long work, reported to a callback the caller supplies (the CLI draws a bar)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ProgressEvent:
    """One finished step of a task: `completed` of `total` steps, with a one-line status."""

    task: str  # what is progressing, e.g. "distill" or "baseline"
    completed: int
    total: int | None = None
    unit: str = "step"  # what a step is, e.g. "epoch"
    status: str = ""

    def __str__(self) -> str:
        count = f"{self.completed}/{self.total}" if self.total is not None else str(self.completed)
        return f"{self.task} {self.unit} {count}" + (f": {self.status}" if self.status else "")


ProgressCallback = Callable[[ProgressEvent], None]
