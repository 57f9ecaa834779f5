"""Evaluation figures (PNG) and DVC plot data for classification results.

Figures are headless ``matplotlib.figure.Figure`` objects written atomically by
:func:`dermdl.figures.save_figure` (why: see that module).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score, roc_curve

from dermdl.figures import save_figure

_BAR_METRICS: tuple[tuple[str, str], ...] = (
    ("precision", "Precision"),
    ("recall", "Recall"),
    ("specificity", "Specificity"),
    ("f1", "F1"),
    ("npv", "NPV"),
    ("auc", "AUC"),
)


def confusion_records(y_true: Any, y_pred: Any, classes: Sequence[str]) -> list[dict[str, str]]:
    """One ``{"actual", "predicted"}`` record per sample: the input of DVC's ``confusion`` template."""
    names = [str(c) for c in classes]
    return [{"actual": names[int(t)], "predicted": names[int(p)]} for t, p in zip(y_true, y_pred)]


def _one_vs_rest_roc(y_true: Any, probs: Any, k: int) -> tuple[np.ndarray, ...] | None:
    """ROC of class ``k`` vs the rest; None if it is undefined (class absent or the only one)."""
    y = np.asarray(y_true) == k
    if y.all() or not y.any():
        return None
    return roc_curve(y, np.asarray(probs, dtype=np.float64)[:, k])


def roc_points(y_true: Any, probs: Any, k: int) -> list[dict[str, float]]:
    """One-vs-rest ROC points for class index ``k`` as JSON-safe dicts (DVC ``simple`` plots).

    sklearn's first threshold is +inf (the "predict nothing" point at fpr = tpr = 0); it is kept
    but replaced by the smallest float above every score so all thresholds are finite.
    Returns [] when the curve is undefined.
    """
    roc = _one_vs_rest_roc(y_true, probs, k)
    if roc is None:
        return []
    fpr, tpr, thresholds = roc
    finite = thresholds[np.isfinite(thresholds)]
    top = float(np.nextafter(finite.max(), np.inf)) if finite.size else 1.0
    return [
        {"fpr": float(f), "tpr": float(t), "threshold": float(th) if math.isfinite(th) else top}
        for f, t, th in zip(fpr, tpr, thresholds)
    ]


def plot_metric_bars(metrics: dict[str, Any], path: str | os.PathLike, title: str | None = None) -> None:
    """Grouped bars (one group per class plus macro) with bootstrap-CI error bars.

    Undefined metrics are drawn as an empty slot labelled 'n/a' rather than a misleading zero bar.
    """
    groups = list(metrics["per_class"].items()) + [("macro", metrics["macro"])]
    n_m = len(_BAR_METRICS)
    width = 0.8 / n_m
    x = np.arange(len(groups))
    fig = Figure(figsize=(max(6.0, 1.3 * len(groups) + 2), 4.5))
    ax = fig.add_subplot()
    for j, (key, label) in enumerate(_BAR_METRICS):
        pos = x - 0.4 + width * (j + 0.5)
        vals: list[float] = []
        err: list[list[float]] = [[], []]
        for _, group in groups:
            m = group.get(key) or {}
            v = m.get("value")
            vals.append(np.nan if v is None else v)
            lo, hi = m.get("lo"), m.get("hi")
            if v is not None and lo is not None and hi is not None:
                err[0].append(max(0.0, v - lo))
                err[1].append(max(0.0, hi - v))
            else:
                err[0].append(0.0)
                err[1].append(0.0)
        heights = np.nan_to_num(np.array(vals, dtype=float), nan=0.0)
        ax.bar(pos, heights, width, yerr=np.array(err), capsize=2, label=label, error_kw={"lw": 0.8})
        for p_, v in zip(pos, vals):
            if math.isnan(v):
                ax.text(p_, 0.02, "n/a", ha="center", va="bottom", rotation=90, fontsize=7)
    ax.set_xticks(x, [name for name, _ in groups], rotation=20, ha="right")
    ax.set_ylim(0, 1.05)
    ci = metrics.get("bootstrap", {}).get("ci")
    ax.set_ylabel(f"value ({100 * ci:g}% CI)" if ci else "value (CI)")
    ax.axvline(len(groups) - 1.5, color="grey", lw=0.8, ls=":")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(ncol=n_m, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False)
    ax.set_title(title or f"Per-class metrics (n = {metrics.get('n', '?')})")
    save_figure(fig, path, dpi=120)


def plot_confusion_matrix(
    y_true: Any, y_pred: Any, classes: Sequence[str], path: str | os.PathLike, title: str | None = None
) -> None:
    """Heatmap coloured by row-normalised % (recall per true class), annotated with count and %.

    Row-normalising makes rare classes (melanoma) as readable as the majority class.
    """
    k = len(classes)
    y, p = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    counts = np.bincount(y * k + p, minlength=k * k).reshape(k, k)
    rows = counts.sum(axis=1, keepdims=True)
    pct = np.divide(100.0 * counts, rows, out=np.zeros((k, k)), where=rows > 0)
    size = max(4.0, 0.8 * k + 2.5)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.add_subplot()
    im = ax.imshow(pct, cmap="Blues", vmin=0, vmax=100)
    fig.colorbar(im, ax=ax, label="% of actual class")
    for i in range(k):
        for j in range(k):
            color = "white" if pct[i, j] > 60 else "black"
            ax.text(j, i, f"{counts[i, j]}\n{pct[i, j]:.1f}%", ha="center", va="center", color=color, fontsize=8)
    names = [str(c) for c in classes]
    ax.set_xticks(range(k), names, rotation=30, ha="right")
    ax.set_yticks(range(k), [f"{n} ({r})" for n, r in zip(names, rows[:, 0])])
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual (n)")
    ax.set_title(title or f"Confusion matrix (n = {len(y)})")
    save_figure(fig, path, dpi=120)


def plot_roc_curves(
    y_true: Any, probs: Any, classes: Sequence[str], path: str | os.PathLike, title: str | None = None
) -> None:
    """One-vs-rest ROC curve per class with its AUC in the legend; undefined curves are listed as n/a."""
    fig = Figure(figsize=(6, 5.5))
    ax = fig.add_subplot()
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=np.float64)
    for c, name in enumerate(classes):
        roc = _one_vs_rest_roc(y, p, c)
        if roc is None:
            ax.plot([], [], label=f"{name} (AUC n/a)")
            continue
        auc = roc_auc_score(y == c, p[:, c])
        ax.plot(roc[0], roc[1], lw=1.5, label=f"{name} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("1 - specificity (FPR)")
    ax.set_ylabel("sensitivity (TPR)")
    ax.set_aspect("equal")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title or "ROC curves (one-vs-rest)")
    save_figure(fig, path, dpi=120)
