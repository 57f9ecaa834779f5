"""Segmentation figures (PNG): per-class metric bars, pixel confusion matrix, best/worst gallery.

Headless ``matplotlib.figure.Figure`` and atomic writes, as in :mod:`dermdl.plots`. The PNGs go to
``plots/figures``, which dvc.yaml declares as a plots folder, so ``dvc plots show`` renders them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from dermdl.io import atomic_file

BAR_METRICS = (("dice", "Dice"), ("iou", "IoU"), ("thresholded_jaccard", "Thr. Jaccard"),
               ("precision", "Precision"), ("recall", "Recall"), ("specificity", "Specificity"))


def _save(fig: Figure, path: str | os.PathLike) -> None:
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def plot_metric_bars(metrics: dict[str, Any], path: str | os.PathLike, title: str) -> None:
    """Grouped bars per class with the bootstrap CI as error bars; undefined values are left empty."""
    classes = list(metrics["per_class"])
    x = np.arange(len(classes))
    width = 0.8 / len(BAR_METRICS)
    fig = Figure(figsize=(max(6.0, 1.6 * len(classes) + 3), 4.2))
    ax = fig.add_subplot()
    for j, (key, label) in enumerate(BAR_METRICS):
        vals, err = [], [[], []]
        for cls in classes:
            m = metrics["per_class"][cls].get(key) or {}
            v, lo, hi = m.get("value"), m.get("lo"), m.get("hi")
            vals.append(0.0 if v is None else v)
            ok = None not in (v, lo, hi)
            err[0].append(max(0.0, v - lo) if ok else 0.0)
            err[1].append(max(0.0, hi - v) if ok else 0.0)
        ax.bar(x - 0.4 + width * (j + 0.5), vals, width, yerr=np.array(err), capsize=2, label=label,
               error_kw={"lw": 0.8})
    ax.set_xticks(x, classes)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"value ({100 * metrics['bootstrap']['ci']:g}% CI over images)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(ncol=len(BAR_METRICS), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)
    ax.set_title(title)
    _save(fig, path)


def plot_pixel_confusion(confusion: dict[str, dict[str, int]], path: str | os.PathLike, title: str) -> None:
    """Heatmap coloured by row-normalised % (recall per true class), annotated with pixels and %."""
    classes = list(confusion)
    counts = np.array([[confusion[t][p] for p in classes] for t in classes], dtype=np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    pct = np.divide(100 * counts, rows, out=np.zeros_like(counts), where=rows > 0)
    size = max(4.0, 0.8 * len(classes) + 2.5)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.add_subplot()
    image = ax.imshow(pct, cmap="Blues", vmin=0, vmax=100)
    fig.colorbar(image, ax=ax, label="% of the true class's pixels")
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{int(counts[i, j]):,}\n{pct[i, j]:.1f}%", ha="center", va="center", fontsize=8,
                    color="white" if pct[i, j] > 60 else "black")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("truth")
    ax.set_title(title)
    _save(fig, path)


def plot_gallery(panels: Sequence[np.ndarray], captions: Sequence[str], path: str | os.PathLike, title: str,
                 columns: Sequence[str] = ("image", "ground truth", "prediction")) -> None:
    """One row per case: an overlay panel (image | truth | prediction) with its caption."""
    if not panels:
        return
    aspect = max(p.shape[1] / p.shape[0] for p in panels)
    width = 2.4 * aspect
    fig = Figure(figsize=(width, len(panels) * (width / aspect + 0.55) + 0.5), layout="constrained")
    for row, (panel, caption) in enumerate(zip(panels, captions)):
        ax = fig.add_subplot(len(panels), 1, row + 1)
        ax.imshow(panel, interpolation="nearest")
        ax.set_xticks([panel.shape[1] * (i + 0.5) / len(columns) for i in range(len(columns))],
                      list(columns) if row == 0 else [""] * len(columns))
        ax.xaxis.set_ticks_position("top")
        ax.tick_params(length=0, labelsize=8)
        ax.set_yticks([])
        ax.set_xlabel(caption, fontsize=8)
    fig.suptitle(title, fontsize=10)
    _save(fig, path)
