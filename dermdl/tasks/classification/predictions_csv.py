"""One test set's predictions CSV (written by infer) read back for analyze, labels checked against the
model's classes: the input every section of the classification report shares."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dermdl.models import ModelConfig


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
