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


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 120, private: bool = False) -> None:
    """``private``: the figure shows patient images (galleries, explanations), so an encrypted run
    (``data.encrypted``) writes it encrypted; metric plots stay readable."""
    if private:
        import io

        from dermdl.crypto.outputs import write_output

        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
        write_output(path, buffer.getvalue())
        return
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
