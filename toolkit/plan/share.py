"""The on-device share from the model's own confidence.

A request whose confidence (the candidate's top-1 probability) is at or above a threshold
is answered on the device; the rest go to the cloud model. Validation recorded, per
example, the confidence and whether the candidate (and the reference) was right, as a
curve of cut points (toolkit.validate.metrics.Confidence.curve). For an accuracy floor of
the whole system, the share is the largest one whose system accuracy still meets it.
"""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.validate.metrics import system_accuracy

TOLERANCE = 1e-9


@dataclass
class ShareChoice:
    share: float  # fraction of requests served on the device
    threshold: float | None  # confidence at or above which a request stays on the device
    system_accuracy: float | None  # device + cloud, on the validation data
    meets_floor: bool
    how: str  # "confidence", "fixed", "device only"
    why: str  # one line for the report

    def to_dict(self) -> dict:
        return {"share": self.share, "threshold": self.threshold, "system_accuracy": self.system_accuracy,
                "meets_floor": self.meets_floor, "how": self.how, "why": self.why}


def points_with_accuracy(curve: dict, cloud_accuracy: float | None) -> list[tuple[float, float | None, float]]:
    """(share, threshold, system accuracy) for every cut point of the curve."""
    examples = curve["examples"]
    return [(row[1] / examples, row[0], system_accuracy(row, examples, cloud_accuracy)) for row in curve["points"]]


def choose_share(curve: dict, floor: float, cloud_accuracy: float | None = None) -> ShareChoice:
    """The largest share whose system accuracy is at least `floor`. When no split meets it,
    the split with the best system accuracy, marked as missing the floor."""
    points = points_with_accuracy(curve, cloud_accuracy)
    meeting = [point for point in points if point[2] >= floor - TOLERANCE]
    if meeting:
        share, threshold, accuracy = max(meeting, key=lambda point: point[0])
        if share == 0:
            why = f"no request can stay on the device: the system would fall below {floor:.2%}"
        elif threshold is None or share == 1:
            why = f"every request stays on the device ({accuracy:.2%} on its own)"
        else:
            why = (f"requests with confidence of at least {threshold:.4g} stay on the device; the rest go to the "
                   f"cloud model, keeping the system at {accuracy:.2%}")
        return ShareChoice(share, threshold, accuracy, True, "confidence", why)
    share, threshold, accuracy = max(points, key=lambda point: (point[2], point[0]))
    return ShareChoice(share, threshold, accuracy, False, "confidence",
                       f"no split reaches {floor:.2%}: the best is {accuracy:.2%} with {share:.1%} on the device")


def share_at(curve: dict | None, share: float, floor: float | None, cloud_accuracy: float | None = None) -> ShareChoice:
    """A share fixed by the scenario: the system accuracy of routing the least confident
    (1 - share) to the cloud, read at the nearest cut point of the curve."""
    why = f"fixed by the scenario at {share:.1%} (not from the model's confidence)"
    if curve is None or not curve.get("examples"):
        return ShareChoice(share, None, None, floor is None, "fixed", why)
    nearest = min(points_with_accuracy(curve, cloud_accuracy), key=lambda point: abs(point[0] - share))
    accuracy = nearest[2]
    return ShareChoice(share, nearest[1], accuracy, floor is None or accuracy >= floor - TOLERANCE, "fixed", why)
