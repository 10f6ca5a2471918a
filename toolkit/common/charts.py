"""matplotlib for the report writers: the Agg backend, imported only when a chart is drawn."""

from __future__ import annotations

import io


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def figure_png(figure, dpi: int = 110) -> bytes:
    """The figure as PNG bytes (no software stamp, so equal charts give equal files); closes it."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    pyplot().close(figure)
    return buffer.getvalue()
