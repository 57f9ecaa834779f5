"""Training curves (dvclive's per-epoch TSVs) drawn as one PNG for the report.

Why redraw instead of linking DVC's plots: the report must open offline without Vega; a static PNG of
small multiples (one panel per quantity, training and validation together) reads at a glance.
"""

from __future__ import annotations

import io
import math

#: dvclive series the training loop writes as a 0/1 phase flag (dermdl.callbacks): shaded, not drawn.
PHASE_SERIES = "frozen"
COLUMNS = 3


def panels(curves: dict[str, list[tuple[float, float]]]) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """Quantity -> {split: rows}: ``train/loss`` and ``valid/loss`` share the panel ``loss``."""
    grouped: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for name, rows in curves.items():
        if name == PHASE_SERIES:
            continue
        split, _, quantity = name.rpartition("/")
        grouped.setdefault(quantity, {})[split or quantity] = rows
    return grouped


def curves_png(curves: dict[str, list[tuple[float, float]]]) -> bytes | None:
    """The PNG, or None when there is nothing to draw."""
    grouped = panels(curves)
    if not grouped:
        return None
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    rows = math.ceil(len(grouped) / COLUMNS)
    cols = min(COLUMNS, len(grouped))
    fig = Figure(figsize=(4.2 * cols, 2.8 * rows))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    frozen = [step for step, value in curves.get(PHASE_SERIES, []) if value >= 0.5]
    for ax, (quantity, series) in zip(axes, grouped.items()):
        for step in frozen:
            ax.axvspan(step - 0.5, step + 0.5, color="#dde6f0", lw=0, label="_frozen")
        for split, points in series.items():
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, ms=3, label=split)
        ax.set_title(quantity.replace("_", " "), fontsize=10)
        ax.set_xlabel("epoch (step)", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        steps = [step for points in series.values() for step, _ in points]
        if max(steps) - min(steps) < 2:  # one or two epochs: whole-number ticks need room
            ax.set_xlim(min(steps) - 1, max(steps) + 1)
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=8)
    for ax in axes[len(grouped) :]:
        ax.set_visible(False)
    if frozen:
        fig.suptitle("shaded: epochs with the pretrained body frozen", fontsize=9, color="#555")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()
