"""Figure helpers shared by every task's plots.

Why ``matplotlib.figure.Figure`` instead of pyplot: it needs no GUI backend (works headless, in
workers and under DVC) and keeps no global figure registry, so nothing leaks if a plot fails.
Every PNG is written through :func:`dermdl.io.atomic_file`, so a killed run never leaves a
truncated image that DVC would cache as a valid output.
"""

from __future__ import annotations

import os

from matplotlib.figure import Figure

from dermdl.io import atomic_file


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 120) -> None:
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
