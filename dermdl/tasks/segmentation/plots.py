"""Segmentation figures (PNG): per-class metric bars, pixel confusion matrix, pixel reliability
diagram, best/worst galleries (the worst also with the probability heatmap), and the overlay panels
(image | truth | prediction) that infer writes beside each predicted mask.

Headless ``matplotlib.figure.Figure`` and atomic writes, through :func:`dermdl.figures.save_figure`.
The PNGs go to ``plots/figures``, which dvc.yaml declares as a plots folder, so ``dvc plots show``
renders them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from matplotlib.figure import Figure

from dermdl.figures import save_figure

BAR_METRICS = (
    ("dice", "Dice"),
    ("iou", "IoU"),
    ("thresholded_jaccard", "Thr. Jaccard"),
    ("precision", "Precision"),
    ("recall", "Recall"),
    ("specificity", "Specificity"),
)
COLOURS = np.array(
    [
        (0, 0, 0),
        (255, 48, 48),
        (40, 150, 255),
        (255, 200, 0),
        (0, 200, 120),
        (200, 80, 255),
        (255, 120, 200),
        (140, 90, 40),
    ],
    dtype=np.uint8,
)


def plot_metric_bars(metrics: dict[str, Any], path: str | os.PathLike, title: str) -> None:
    """Grouped bars per class with the bootstrap CI as error bars; undefined values are left empty."""
    classes = list(metrics["per_class"])
    x = np.arange(len(classes))
    width = 0.8 / len(BAR_METRICS)
    fig = Figure(figsize=(max(6.0, 1.6 * len(classes) + 3), 4.2))
    ax = fig.add_subplot()
    for j, (key, label) in enumerate(BAR_METRICS):
        vals: list[float] = []
        err: list[list[float]] = [[], []]
        for cls in classes:
            m = metrics["per_class"][cls].get(key) or {}
            v, lo, hi = m.get("value"), m.get("lo"), m.get("hi")
            vals.append(0.0 if v is None else v)
            if v is not None and lo is not None and hi is not None:
                err[0].append(max(0.0, v - lo))
                err[1].append(max(0.0, hi - v))
            else:
                err[0].append(0.0)
                err[1].append(0.0)
        ax.bar(
            x - 0.4 + width * (j + 0.5), vals, width, yerr=np.array(err), capsize=2, label=label, error_kw={"lw": 0.8}
        )
    ax.set_xticks(x, classes)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"value ({100 * metrics['bootstrap']['ci']:g}% CI over images)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(ncol=len(BAR_METRICS), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)
    ax.set_title(title)
    save_figure(fig, path, dpi=110)


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
            ax.text(
                j,
                i,
                f"{int(counts[i, j]):,}\n{pct[i, j]:.1f}%",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if pct[i, j] > 60 else "black",
            )
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("truth")
    ax.set_title(title)
    save_figure(fig, path, dpi=110)


def plot_gallery(
    panels: Sequence[np.ndarray],
    captions: Sequence[str],
    path: str | os.PathLike,
    title: str,
    columns: Sequence[str] = ("image", "ground truth", "prediction"),
) -> None:
    """One row per case: an overlay panel (image | truth | prediction) with its caption."""
    if not panels:
        return
    aspect = max(p.shape[1] / p.shape[0] for p in panels)
    width = 2.4 * aspect
    fig = Figure(figsize=(width, len(panels) * (width / aspect + 0.55) + 0.5), layout="constrained")
    for row, (panel, caption) in enumerate(zip(panels, captions)):
        ax = fig.add_subplot(len(panels), 1, row + 1)
        ax.imshow(panel, interpolation="nearest")
        ax.set_xticks(
            [panel.shape[1] * (i + 0.5) / len(columns) for i in range(len(columns))],
            list(columns) if row == 0 else [""] * len(columns),
        )
        ax.xaxis.set_ticks_position("top")
        ax.tick_params(length=0, labelsize=8)
        ax.set_yticks([])
        ax.set_xlabel(caption, fontsize=8)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path, dpi=110, private=True)  # patient images: encrypted in an encrypted run


def plot_reliability(
    records: dict[str, list[dict[str, float]]], calibration: dict[str, Any], path: str | os.PathLike, title: str
) -> None:
    """One panel per foreground class: observed share vs mean predicted probability per bin (point size
    ~ pixels), the diagonal of perfect calibration, and the ECE with its CI in the panel title."""
    from dermdl.bootstrap import format_value

    fig = Figure(figsize=(4.2 * len(records), 4.4), layout="constrained")
    for index, (cls, points) in enumerate(records.items()):
        ax = fig.add_subplot(1, len(records), index + 1)
        ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfect calibration")
        if points:
            conf = np.array([p["confidence"] for p in points])
            acc = np.array([p["accuracy"] for p in points])
            count = np.array([p["count"] for p in points], dtype=np.float64)
            ax.plot(conf, acc, color="tab:red", lw=1)
            ax.scatter(conf, acc, s=10 + 200 * np.sqrt(count / count.max()), color="tab:red", label="bins")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_xlabel(f"mean predicted p({cls}) in bin")
        ax.set_ylabel(f"observed share of {cls} pixels")
        ax.set_title(f"{cls}: ECE {format_value(calibration[cls]['ece'], 3)}", fontsize=9)
        ax.legend(loc="upper left", fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{title} ({calibration['bins']} bins, point area ~ pixels)", fontsize=10)
    save_figure(fig, path, dpi=110)


def heatmap_tile(image: np.ndarray, probability: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The image with a probability map (h, w) in [0, 1] blended over it as a jet heatmap."""
    colours = cv2.applyColorMap(np.round(255 * np.clip(probability, 0, 1)).astype(np.uint8), cv2.COLORMAP_JET)
    heat = cv2.cvtColor(colours, cv2.COLOR_BGR2RGB).astype(np.float32)
    return np.clip((1 - alpha) * image.astype(np.float32) + alpha * heat + 0.5, 0, 255).astype(np.uint8)


def overlay(image: np.ndarray, classes: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """RGB image with every non-background class tinted and outlined in its colour."""
    out = image.astype(np.float32).copy()
    for cls in np.unique(classes):
        if cls == 0:
            continue
        colour = COLOURS[int(cls) % len(COLOURS)]
        inside = classes == cls
        out[inside] = (1 - alpha) * out[inside] + alpha * colour
    out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    for cls in np.unique(classes):
        if cls == 0:
            continue
        contours, _ = cv2.findContours((classes == cls).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, tuple(int(v) for v in COLOURS[int(cls) % len(COLOURS)]), 1)
    return out


def panels(image: np.ndarray, prediction: np.ndarray, truth: np.ndarray | None = None) -> np.ndarray:
    """Side by side: image | truth overlay (when known) | prediction overlay, white 2 px gaps."""
    tiles = [image] + ([overlay(image, truth)] if truth is not None else []) + [overlay(image, prediction)]
    gap = np.full((image.shape[0], 2, 3), 255, dtype=np.uint8)
    row = [tiles[0]]
    for tile in tiles[1:]:
        row += [gap, tile]
    return np.concatenate(row, axis=1)
