"""Classification analysis of one test set: read the predictions CSV, write metrics, plot data and figures.

Why separate from :mod:`~dermdl.tasks.classification.metrics`: the metrics are pure functions of
arrays (tested against scikit-learn); this module is the file side (CSV in, JSON and PNG out). Each
clinical question (calibration, operating points, subgroups, explanations) is one section below that
adds one key to the metrics dict; the sections' arithmetic lives in :mod:`dermdl.evaluation`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dermdl.io import atomic_write_json
from dermdl.models import ModelConfig
from dermdl.tasks.classification.metrics import classification_metrics
from dermdl.tasks.classification.plots import (
    confusion_records,
    plot_confusion_matrix,
    plot_metric_bars,
    plot_roc_curves,
    roc_points,
)


@dataclass(frozen=True)
class TestPredictions:
    """One test set as infer wrote it, in the model's class order."""

    name: str
    frame: pd.DataFrame  # the predictions CSV
    classes: list[str]
    y_true: np.ndarray  # (n,) class index
    probs: np.ndarray  # (n, k) as infer wrote them (calibrated when the model has a temperature)
    groups: list[str] | None  # lesion/patient id per image, None when unknown or analyze.resample: image


def read_predictions(predictions_dir: Path, name: str, config: ModelConfig, all_params: Any) -> TestPredictions:
    """The predictions CSV of one test set with its labels checked against the model's classes."""
    params = all_params.analyze
    predictions = predictions_dir / f"{name}.csv"
    if not predictions.is_file():
        raise FileNotFoundError(f"{predictions}: missing; run the infer stage first (`dvc repro infer`)")
    frame = pd.read_csv(predictions, keep_default_na=False)
    classes = list(config.classes)
    unknown = sorted(set(frame["true_label"]) - set(classes))
    if unknown:
        raise ValueError(f"{predictions}: true labels {unknown} are not among the model's classes {classes}")
    groups = None
    if params.resample != "image":
        from dermdl.leaks.groups import groups_of

        groups = groups_of(all_params, list(frame["path"]))
        if groups is None and params.resample == "group":
            raise ValueError("analyze.resample: group needs lesion/patient ids (data.groups or <data.root>/groups.csv)")
    return TestPredictions(
        name=name,
        frame=frame,
        classes=classes,
        y_true=frame["true_label"].map(classes.index).to_numpy(),
        probs=frame[[f"prob_{c}" for c in classes]].to_numpy(dtype=np.float64),
        groups=groups,
    )


def analyze(predictions_dir: Path, name: str, config: ModelConfig, all_params: Any, plots_dir: Path) -> dict:
    """Metrics with bootstrap CIs, DVC plot data and PNG figures for one test set."""
    params = all_params.analyze
    test = read_predictions(predictions_dir, name, config, all_params)
    y_true, probs, classes = test.y_true, test.probs, test.classes
    metrics = classification_metrics(
        y_true, probs, classes, n_boot=params.n_boot, ci=params.ci, seed=params.seed, groups=test.groups
    )
    y_pred = probs.argmax(axis=1)
    atomic_write_json(plots_dir / "confusion" / f"{name}.json", confusion_records(y_true, y_pred, classes))
    for index, cls in enumerate(classes):
        atomic_write_json(plots_dir / "roc" / f"{name}--{cls}.json", roc_points(y_true, probs, index))
    figures = plots_dir / "figures"
    plot_metric_bars(metrics, figures / f"{name}_metrics.png", title=f"{name}: per-class metrics, 95% CI")
    plot_confusion_matrix(y_true, y_pred, classes, figures / f"{name}_confusion.png", title=f"{name}: confusion")
    plot_roc_curves(y_true, probs, classes, figures / f"{name}_roc.png", title=f"{name}: one-vs-rest ROC")
    # Sections (one key each; a section returns None when it does not apply):
    # lesion_level, calibration, operating_points (lead); subgroups; explanations.
    return metrics
