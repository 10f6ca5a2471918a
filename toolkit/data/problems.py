"""Bad files inside a data folder: skipped and listed together, fatal only when nothing is left."""

from __future__ import annotations

import warnings

from toolkit.errors import BadInput, EdgewardWarning

SHOWN = 5


def describe(bad: list[tuple[str, str]]) -> str:
    shown = "; ".join(f"{name} ({why})" for name, why in bad[:SHOWN])
    more = f" and {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""
    return f"{len(bad)} unreadable: {shown}{more}"


def report_bad(source: str, bad: list[tuple[str, str]], usable: int) -> None:
    """Warn about the skipped entries; raise BadInput when none was usable."""
    if usable == 0:
        if bad:
            raise BadInput(f"{source}: nothing usable, {describe(bad)}")
        raise BadInput(f"{source}: the data has no examples")
    if bad:
        warnings.warn(f"{source}: skipped {describe(bad)}", EdgewardWarning, stacklevel=3)


def labels_from_names(names: list[str | None]) -> tuple:
    """Class names → (int64 labels, sorted class names); (None, []) when no example has one.

    Names that are whole numbers are the labels themselves (folders 0..9 give labels 0..9).
    """
    import numpy as np

    if all(name is None for name in names):
        return None, []
    classes = sorted({str(name) for name in names if name is not None})
    if any(name is None for name in names):
        raise BadInput("some examples have a label and some do not: give every example one, or none")
    if all(_is_int(name) for name in classes):
        classes = sorted(classes, key=int)
        return np.asarray([int(name) for name in names], dtype=np.int64), classes
    index = {name: position for position, name in enumerate(classes)}
    return np.asarray([index[str(name)] for name in names], dtype=np.int64), classes


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True
