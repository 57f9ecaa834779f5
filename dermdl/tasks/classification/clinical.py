"""The clinical sections of a classification report: lesion-level metrics, calibration before and after
temperature scaling, and operating points chosen on the validation split.

Why one module: the three read the same test predictions and share one set of bootstrap resamples
(image or lesion/patient clusters, :func:`dermdl.bootstrap.resample_weights`), so every CI in a report
describes the same resamples as the headline metrics.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from dermdl.bootstrap import resample_weights, with_ci
from dermdl.evaluation.calibration import calibration_resamples, reliability_points, rescale
from dermdl.evaluation.operating_points import (
    OPERATING_METRICS,
    binary_auc,
    group_score,
    operating_resamples,
    threshold_for_sensitivity,
)
from dermdl.io import atomic_write_json
from dermdl.models import ModelConfig
from dermdl.tasks.classification.calibrate import VALIDATION_CSV
from dermdl.tasks.classification.metrics import classification_metrics

if TYPE_CHECKING:
    from dermdl.tasks.classification.predictions_csv import TestPredictions


def _weights(test: TestPredictions, params: Any) -> np.ndarray:
    return resample_weights(len(test.y_true), params.n_boot, params.seed, test.groups)


def lesion_level(test: TestPredictions, params: Any) -> dict[str, Any] | None:
    """Probabilities averaged over the images of each lesion/patient, then every metric once per lesion
    (each lesion one bootstrap unit). None when groups are unknown."""
    if test.groups is None:
        return None
    frame = pd.DataFrame(test.probs, columns=test.classes).assign(group=test.groups, label=test.y_true)
    by_group = frame.groupby("group", sort=True)
    probs = by_group[test.classes].mean().to_numpy()
    labels = by_group["label"].agg(lambda s: s.value_counts().index[0]).to_numpy()  # a lesion has one label
    mixed = int((by_group["label"].nunique() > 1).sum())
    metrics = classification_metrics(labels, probs, test.classes, n_boot=params.n_boot, ci=params.ci, seed=params.seed)
    return {"n_lesions": len(labels), "mixed_labels": mixed} | {
        key: metrics[key] for key in ("overall", "macro", "per_class")
    }


def calibration(test: TestPredictions, config: ModelConfig, params: Any, plots_dir: Path) -> dict[str, Any]:
    """ECE, Brier score, log loss and macro AUC with CIs of the network's softmax ("before") and of the
    temperature-scaled probabilities ("after", when the model has a temperature), reliability data and
    diagram. The predicted class, so accuracy and balanced accuracy, never changes with the temperature."""
    applied = float(test.frame["temperature"].iloc[0]) if "temperature" in test.frame else 1.0
    fitted = config.extra.get("temperature")
    versions = {"before": rescale(test.probs, applied, 1.0)}
    if fitted is not None:
        versions["after"] = rescale(test.probs, applied, float(fitted))
    weights = _weights(test, params)
    bins = params.calibration_bins
    out: dict[str, Any] = {"bins": bins, "temperature": fitted, "applied_temperature": applied}
    for label, probs in versions.items():
        point = calibration_resamples(probs, test.y_true, np.ones((1, len(test.y_true))), bins)
        boot = calibration_resamples(probs, test.y_true, weights, bins)
        out[label] = {key: with_ci(point[key][0], boot[key], params.ci) for key in ("ece", "brier", "nll")}
        ranked = classification_metrics(
            test.y_true, probs, test.classes, n_boot=params.n_boot, ci=params.ci, seed=params.seed, groups=test.groups
        )
        out[label]["macro_auc"] = ranked["macro"]["auc"]  # scaling can move one-vs-rest rankings a little
    shown = "after" if applied != 1.0 and "after" in versions else "before"
    out["reported"] = shown  # the probabilities the predictions CSV holds
    points = {label: reliability_points(probs, test.y_true, bins) for label, probs in versions.items()}
    atomic_write_json(plots_dir / "calibration" / f"{test.name}.json", points[shown])
    from dermdl.evaluation.plots import plot_reliability  # lazy: matplotlib

    titles = {label: f"{label} (ECE {out[label]['ece']['value']:.3f})" for label in versions}
    plot_reliability(
        {titles[label]: pts for label, pts in points.items()},
        plots_dir / "figures" / f"{test.name}_reliability.png",
        f"{test.name}: reliability (top-label confidence, {bins} bins)",
    )
    return out


def _validation(config: ModelConfig, model_dir: Path, classes: list[str], test_temperature: float) -> tuple | None:
    """Validation labels and probabilities on the test predictions' temperature scale; None when this
    model kept none (train.full_data, or a model trained before dermdl kept them)."""
    fit = config.extra.get("temperature_fit")
    path = model_dir / VALIDATION_CSV
    if not fit or not path.is_file():
        return None
    frame = pd.read_csv(path, keep_default_na=False)
    if len(frame) != fit.get("images") or set(frame["true_label"]) - set(classes):
        return None  # another run's file: its thresholds would not belong to this model
    probs = frame[[f"prob_{c}" for c in classes]].to_numpy(dtype=np.float64)
    probs = rescale(probs, float(frame["temperature"].iloc[0]), test_temperature)
    return frame["true_label"].map(classes.index).to_numpy(), probs


def _decision(
    name: str, members: list[int], test: TestPredictions, validation: tuple | None, weights: np.ndarray, params: Any
) -> dict[str, Any]:
    positive = np.isin(test.y_true, members)
    score = group_score(test.probs, members)
    ones = np.ones((1, len(score)))
    out: dict[str, Any] = {
        "n_positive": int(positive.sum()),
        "n_negative": int((~positive).sum()),
        "auc": with_ci(binary_auc(positive, score, ones)[0], binary_auc(positive, score, weights), params.ci),
    }
    if validation is None:
        return out | {"threshold": None}
    val_positive = np.isin(validation[0], members)
    val_score = group_score(validation[1], members)
    threshold = threshold_for_sensitivity(val_positive, val_score, params.target_sensitivity)
    if threshold is None:
        return out | {"threshold": None, "why": f"no {name} images in the validation split"}
    val = operating_resamples(val_positive, val_score, threshold, np.ones((1, len(val_score))))
    point = operating_resamples(positive, score, threshold, ones)
    boot = operating_resamples(positive, score, threshold, weights)
    return (
        out
        | {
            "threshold": threshold,
            "validation": {key: float(val[key][0]) for key in ("sensitivity", "specificity")},
        }
        | {key: with_ci(point[key][0], boot[key], params.ci) for key in OPERATING_METRICS}
    )


def operating_points(
    test: TestPredictions, config: ModelConfig, params: Any, model_dir: Path, plots_dir: Path
) -> dict[str, Any]:
    """Per class group (analyze.class_groups) and per class: AUC, and at the threshold that reaches
    analyze.target_sensitivity on the validation split, the test set's sensitivity, specificity, PPV, NPV."""
    classes = test.classes
    for group, members in params.class_groups.items():
        unknown = [m for m in members if m not in classes]
        if unknown:
            raise ValueError(
                f"analyze.class_groups.{group}: {unknown} not among the model's classes {classes}; fix the group"
            )
    applied = float(test.frame["temperature"].iloc[0]) if "temperature" in test.frame else 1.0
    validation = _validation(config, model_dir, classes, applied)
    weights = _weights(test, params)
    groups = {
        group: _decision(group, [classes.index(m) for m in members], test, validation, weights, params)
        for group, members in params.class_groups.items()
    }
    per_class = {cls: _decision(cls, [c], test, validation, weights, params) for c, cls in enumerate(classes)}
    for group, members in params.class_groups.items():
        positive = np.isin(test.y_true, [classes.index(m) for m in members])
        score = group_score(test.probs, [classes.index(m) for m in members])
        atomic_write_json(plots_dir / "roc" / f"{test.name}--group-{group}.json", _roc(positive, score))
    if groups:
        from dermdl.evaluation.plots import plot_operating_points  # lazy: matplotlib

        curves = {
            group: (_roc(np.isin(test.y_true, idx), group_score(test.probs, idx)), groups[group])
            for group, idx in ((g, [classes.index(m) for m in ms]) for g, ms in params.class_groups.items())
        }
        plot_operating_points(
            curves,
            plots_dir / "figures" / f"{test.name}_operating_points.png",
            f"{test.name}: ROC of each class group; dot = threshold chosen on validation",
        )
    return {
        "target_sensitivity": params.target_sensitivity,
        "chosen_on": f"validation split ({len(validation[0])} images)" if validation is not None else None,
        "why_not": None
        if validation is not None
        else "the model kept no validation predictions (train.full_data, or trained before dermdl 0.2)",
        "groups": {g: {"classes": list(params.class_groups[g])} | v for g, v in groups.items()},
        "per_class": per_class,
    }


def _roc(positive: np.ndarray, score: np.ndarray) -> list[dict[str, float]]:
    """ROC points (fpr, tpr, threshold) of a binary decision; [] when one side is empty."""
    if positive.all() or not positive.any():
        return []
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(positive, score)
    top = float(np.nextafter(score.max(), np.inf))
    return [
        {"fpr": float(f), "tpr": float(t), "threshold": float(th) if np.isfinite(th) else top}
        for f, t, th in zip(fpr, tpr, thresholds)
    ]
