"""Segmentation analysis of one test set: metrics with bootstrap CIs from infer's per-image pixel
counts, DVC plot data (pixel confusion, pixel ROC) and PNG figures (metric bars, confusion, galleries).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dermdl.images import open_rgb
from dermdl.io import atomic_write_json
from dermdl.models import ModelConfig
from dermdl.tasks.segmentation.metrics import confusion_records, per_image, roc_points, segmentation_metrics

GALLERY_SIZE = 4


def _gallery(
    frame: pd.DataFrame, predictions_dir: Path, score: np.ndarray, order: np.ndarray, path: Path, title: str
) -> None:
    from dermdl.tasks.segmentation.plots import plot_gallery  # lazy: matplotlib is slow to import

    chosen = order[:GALLERY_SIZE]
    tiles = [np.asarray(open_rgb(predictions_dir / frame["overlay"].iloc[i])) for i in chosen]
    captions = [f"{frame['image'].iloc[i]}: foreground Dice {score[i]:.3f}" for i in chosen]
    plot_gallery(tiles, captions, path, title)


def analyze(predictions_dir: Path, name: str, config: ModelConfig, all_params: Any, plots_dir: Path) -> dict:
    """Metrics with bootstrap CIs, DVC plot data (pixel confusion, pixel ROC) and PNG figures."""
    from dermdl.tasks.segmentation.plots import plot_metric_bars, plot_pixel_confusion  # lazy, as above

    params = all_params.analyze
    csv = predictions_dir / f"{name}.csv"
    if not csv.is_file():
        raise FileNotFoundError(f"{csv}: missing; run the infer stage first (`dvc repro infer`)")
    frame = pd.read_csv(csv)
    classes, k = config.classes, len(config.classes)
    columns = [f"cm_{i}_{j}" for i in range(k) for j in range(k)]
    if frame.empty or not set(columns) <= set(frame.columns):
        raise ValueError(
            f"{csv}: no ground-truth pixel counts for classes {classes}; was it written by "
            "`dermdl infer` with this model?"
        )
    cm = frame[columns].to_numpy(dtype=np.int64).reshape(-1, k, k)
    hist_path = predictions_dir / name / "histograms.npy"
    hist = np.load(hist_path) if hist_path.is_file() else None
    metrics = segmentation_metrics(cm, hist, classes, n_boot=params.n_boot, ci=params.ci, seed=params.seed)
    atomic_write_json(plots_dir / "confusion" / f"{name}.json", confusion_records(metrics["pixel_confusion"]))
    for c, cls in enumerate(classes):
        atomic_write_json(plots_dir / "roc" / f"{name}--{cls}.json", roc_points(hist, c) if hist is not None else [])
    figures = plots_dir / "figures"
    plot_metric_bars(metrics, figures / f"{name}_metrics.png", f"{name}: per-class metrics")
    plot_pixel_confusion(
        metrics["pixel_confusion"],
        figures / f"{name}_confusion.png",
        f"{name}: pixel confusion ({metrics['pixels']:,} pixels)",
    )
    dice = per_image(cm)["dice"][:, 1:]
    defined = ~np.isnan(dice)
    score = np.where(
        defined.any(axis=1), np.where(defined, dice, 0).sum(axis=1) / np.maximum(defined.sum(axis=1), 1), np.nan
    )
    ranked = np.flatnonzero(~np.isnan(score))
    ranked = ranked[np.argsort(score[ranked], kind="stable")]
    _gallery(
        frame,
        predictions_dir,
        score,
        ranked[::-1],
        figures / f"{name}_gallery_best.png",
        f"{name}: best {min(GALLERY_SIZE, len(ranked))} (image | ground truth | prediction)",
    )
    _gallery(
        frame,
        predictions_dir,
        score,
        ranked,
        figures / f"{name}_gallery_worst.png",
        f"{name}: worst {min(GALLERY_SIZE, len(ranked))} (image | ground truth | prediction)",
    )
    return metrics
