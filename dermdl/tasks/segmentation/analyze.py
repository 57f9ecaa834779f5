"""Segmentation analysis of one test set: metrics with bootstrap CIs from infer's per-image pixel
counts, boundary distances and calibration statistics; DVC plot data (pixel confusion, pixel ROC,
reliability) and PNG figures (metric bars, confusion, reliability diagram, galleries).

It reads only what infer wrote (the CSV and the ``<test>/`` folder), so it re-runs in seconds when an
analyze parameter changes; sections whose files an older infer did not write are left out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from dermdl.images import image_source, open_rgb
from dermdl.io import atomic_write_json
from dermdl.models import ModelConfig
from dermdl.tasks.segmentation.calibration import FILE as CALIBRATION_FILE
from dermdl.tasks.segmentation.calibration import PixelCalibration, reliability_records
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


def _groups(frame: pd.DataFrame, all_params: Any) -> list[str] | None:
    """Lesion/patient id per image when analyze.resample asks for them and they are known (the CSV's
    image column is relative to data.root, as groups.csv's paths are)."""
    if all_params.analyze.resample == "image":
        return None
    from dermdl.leaks.groups import groups_of

    groups = groups_of(all_params, [str(s) for s in frame["image"]])
    if groups is None and all_params.analyze.resample == "group":
        raise ValueError("analyze.resample: group needs lesion/patient ids (data.groups or <data.root>/groups.csv)")
    return groups


def _boundary(frame: pd.DataFrame, classes: list[str]) -> dict[str, np.ndarray] | None:
    """Per-image (n, k) HD95/ASSD from the CSV (class 0 and undefined values NaN); None if infer wrote none."""
    columns = {key: [f"{key}_{cls}" for cls in classes[1:]] for key in ("hd95", "asd")}
    if not all(set(cols) <= set(frame.columns) for cols in columns.values()):
        return None
    nan = np.full((len(frame), 1), np.nan)
    return {key: np.hstack([nan, frame[cols].to_numpy(dtype=np.float64)]) for key, cols in columns.items()}


def _worst_probability_gallery(
    frame: pd.DataFrame, predictions_dir: Path, score: np.ndarray, ranked: np.ndarray, n: int, path: Path, title: str
) -> None:
    """The n worst-Dice cases: the overlay panel plus the probability map that infer stored, as a heatmap."""
    from dermdl.tasks.segmentation.plots import heatmap_tile, plot_gallery  # lazy: matplotlib

    chosen = ranked[:n]
    tiles = []
    for i in chosen:
        panel = np.asarray(open_rgb(predictions_dir / frame["overlay"].iloc[i]))
        probability = np.asarray(Image.open(image_source(predictions_dir / frame["probability"].iloc[i])).convert("L"))
        size = probability.shape[0]
        gap = np.full((size, 2, 3), 255, dtype=np.uint8)
        tiles.append(np.concatenate([panel, gap, heatmap_tile(panel[:, :size], probability / 255.0)], axis=1))
    captions = [f"{frame['image'].iloc[i]}: foreground Dice {score[i]:.3f}" for i in chosen]
    columns = ("image", "ground truth", "prediction", "probability (not background)")
    plot_gallery(tiles, captions, path, title, columns=columns)


def _subgroups(
    frame: pd.DataFrame,
    cm: np.ndarray,
    classes: list[str],
    groups: list[str] | None,
    all_params: Any,
    name: str,
    plots_dir: Path,
) -> dict[str, Any] | None:
    """Foreground Dice and IoU (image means, with CIs) per metadata subgroup; None without analyze.subgroups."""
    from dermdl.evaluation.metadata import read_metadata
    from dermdl.evaluation.subgroups import subgroup_section

    params = all_params.analyze
    if not params.subgroups:
        return None
    metadata = read_metadata(all_params, [str(s) for s in frame["image"]], params.subgroups)

    def metrics_of(index: np.ndarray) -> dict[str, dict[str, float | None]]:
        subset = segmentation_metrics(
            cm[index],
            None,
            classes,
            n_boot=params.n_boot,
            ci=params.ci,
            seed=params.seed,
            groups=None if groups is None else [groups[i] for i in index],
        )
        return {key: subset["overall"][key] for key in ("dice_foreground", "iou_foreground")}

    return subgroup_section(metadata, params.bands, metrics_of, name, plots_dir)


def analyze(predictions_dir: Path, name: str, config: ModelConfig, all_params: Any, plots_dir: Path) -> dict:
    """Metrics with bootstrap CIs, DVC plot data (pixel confusion, pixel ROC, reliability) and PNG figures."""
    from dermdl.tasks.segmentation.plots import plot_metric_bars, plot_pixel_confusion, plot_reliability  # lazy

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
    calibration_path = predictions_dir / name / CALIBRATION_FILE
    calibration = PixelCalibration.load(calibration_path) if calibration_path.is_file() else None
    groups = _groups(frame, all_params)
    metrics = segmentation_metrics(
        cm,
        hist,
        classes,
        n_boot=params.n_boot,
        ci=params.ci,
        seed=params.seed,
        groups=groups,
        boundary=_boundary(frame, classes),
        calibration=calibration,
        calibration_bins=params.calibration_bins,
    )
    metrics["subgroups"] = _subgroups(frame, cm, classes, groups, all_params, name, plots_dir)
    atomic_write_json(plots_dir / "confusion" / f"{name}.json", confusion_records(metrics["pixel_confusion"]))
    for c, cls in enumerate(classes):
        atomic_write_json(plots_dir / "roc" / f"{name}--{cls}.json", roc_points(hist, c) if hist is not None else [])
    figures = plots_dir / "figures"
    if calibration is not None:
        records = {
            cls: reliability_records(calibration, c, params.calibration_bins) for c, cls in enumerate(classes) if c
        }
        for cls, points in records.items():
            atomic_write_json(plots_dir / "calibration" / f"{name}--{cls}.json", points)
        plot_reliability(
            records,
            metrics["calibration"],
            figures / f"{name}_reliability.png",
            f"{name}: pixel reliability",
        )
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
    n_explain = min(params.explain, len(ranked))
    if n_explain and "probability" in frame.columns:
        _worst_probability_gallery(
            frame,
            predictions_dir,
            score,
            ranked,
            n_explain,
            figures / f"{name}_gallery_worst_probability.png",
            f"{name}: worst {n_explain} by Dice, with the predicted probability",
        )
    return metrics
