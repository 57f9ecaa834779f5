"""Figures of the clinical sections: reliability diagrams and operating points on ROC curves.

Headless ``matplotlib.figure.Figure`` objects written atomically (see :mod:`dermdl.figures`).
"""

from __future__ import annotations

import os
from typing import Any

from matplotlib.figure import Figure

from dermdl.figures import save_figure


def plot_reliability(curves: dict[str, list[dict[str, float]]], path: str | os.PathLike, title: str) -> None:
    """One panel per version (before/after temperature scaling): observed accuracy against mean
    confidence per bin, marker area by image count, the diagonal = perfect calibration."""
    fig = Figure(figsize=(4.2 * len(curves), 4.2))
    axes = fig.subplots(1, len(curves), squeeze=False)[0]
    for ax, (label, points) in zip(axes, curves.items()):
        ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfectly calibrated")
        if points:
            total = sum(p["count"] for p in points)
            ax.plot([p["confidence"] for p in points], [p["accuracy"] for p in points], color="tab:blue")
            ax.scatter(
                [p["confidence"] for p in points],
                [p["accuracy"] for p in points],
                s=[20 + 400 * p["count"] / total for p in points],
                color="tab:blue",
                alpha=0.7,
                label="bins (area = images)",
            )
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="Predicted probability of the predicted class", title=label)
        ax.set_ylabel("Share of those predictions that were right")
        ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def plot_operating_points(
    curves: dict[str, tuple[list[dict[str, float]], dict[str, Any]]], path: str | os.PathLike, title: str
) -> None:
    """ROC of each class group with its validation-chosen operating point (the dot) on the test set."""
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="0.7", linestyle=":", linewidth=1)
    for name, (points, decision) in curves.items():
        if not points:
            continue
        auc = decision["auc"]["value"]
        line = ax.plot([p["fpr"] for p in points], [p["tpr"] for p in points], label=f"{name} (AUC {auc:.3f})")
        if decision.get("threshold") is not None and decision["sensitivity"]["value"] is not None:
            ax.scatter(
                [1 - decision["specificity"]["value"]],
                [decision["sensitivity"]["value"]],
                color=line[0].get_color(),
                zorder=3,
                label=f"{name}: threshold {decision['threshold']:.3f}",
            )
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 - specificity (false positive rate)")
    ax.set_ylabel("Sensitivity (true positive rate)")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title, fontsize=9)
    save_figure(fig, path)
