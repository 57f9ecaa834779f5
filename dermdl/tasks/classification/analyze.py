"""Classification analysis of one test set: read the predictions CSV, write metrics, plot data and figures.

Why separate from :mod:`~dermdl.tasks.classification.metrics`: the metrics are pure functions of
arrays (tested against scikit-learn); this module is the file side (CSV in, JSON and PNG out). Each
clinical question (calibration, operating points, subgroups, explanations) is one section below that
adds one key to the metrics dict; the sections' arithmetic lives in :mod:`dermdl.evaluation`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
from dermdl.tasks.classification.predictions_csv import read_predictions


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
    from dermdl.tasks.classification import clinical
    from dermdl.tasks.classification.subgroups import subgroups_section

    metrics["lesion_level"] = clinical.lesion_level(test, params)
    metrics["calibration"] = clinical.calibration(test, config, params, plots_dir)
    metrics["operating_points"] = clinical.operating_points(test, config, params, all_params.out / "model", plots_dir)
    metrics["subgroups"] = subgroups_section(test, all_params, plots_dir, metrics["operating_points"]["groups"])
    from dermdl.tasks.classification.explain import explanations  # lazy: torch and captum

    metrics["explanations"] = explanations(
        name, list(test.frame["path"]), y_true, probs, classes, predictions_dir, all_params, figures
    )
    return metrics
