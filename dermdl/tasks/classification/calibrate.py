"""Temperature scaling of a classifier, fitted on the validation split when training ends.

Why at the end of training: the validation split is the only data the model has not been fitted to and
that no test set is part of; the temperature and the validation predictions (kept in the model folder as
``validation.csv``) are what analyze later needs to choose operating points without touching a test set.
The temperature lives in model.json (``extra.temperature``), so infer and ``dermdl predict`` apply it
without params.yaml; ``infer.calibrate: false`` / ``dermdl predict --no-calibrate`` turn it off.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from dermdl.evaluation.calibration import (
    TEMPERATURE_BOUNDS,
    apply_temperature,
    fit_temperature,
    negative_log_likelihood,
)
from dermdl.models import ModelConfig
from dermdl.records import Record

VALIDATION_CSV = "validation.csv"


def temperature_warning(temperature: float) -> str | None:
    """Why a fitted temperature must not be trusted, or None: an optimum at the edge of the search range
    means the validation split cannot calibrate this model."""
    lo, hi = TEMPERATURE_BOUNDS
    if lo * 1.01 < temperature < hi * 0.99:
        return None
    return (
        f"the temperature reached its bound ({lo:g}..{hi:g}): on the validation split the model is barely better "
        "than chance (or perfectly separated), so the calibrated probabilities are not meaningful; train longer "
        "or on more data, or set infer.calibrate: false"
    )


def after_training(
    model: Any, config: ModelConfig, valid_records: list[Record], params: Any, model_dir: Path
) -> ModelConfig:
    """Predict the validation split with infer's views, fit the temperature, keep the predictions."""
    from dermdl.arrays import PreparedImages
    from dermdl.tasks.classification.predict import predict, write_predictions

    stale = model_dir / VALIDATION_CSV
    raw_config = replace(config, extra={k: v for k, v in config.extra.items() if k != "temperature"})
    if not valid_records:  # train.full_data: nothing to fit on, and no older run's file may stay
        stale.unlink(missing_ok=True)
        return raw_config
    probs = predict(model, raw_config, PreparedImages(valid_records), params.infer.bs, params.tta)
    y = np.asarray([config.classes.index(r["target"]) for r in valid_records])
    temperature = fit_temperature(probs, y)
    calibrated = replace(
        config,
        extra={
            **raw_config.extra,
            "temperature": round(temperature, 6),
            "temperature_fit": {
                "images": len(valid_records),
                "views": params.tta,
                "nll_before": round(negative_log_likelihood(probs, y), 6),
                "nll_after": round(negative_log_likelihood(apply_temperature(probs, temperature), y), 6),
            },
        },
    )
    write_predictions(valid_records, apply_temperature(probs, temperature), calibrated, model_dir, "validation")
    print(f"train: temperature {temperature:.3f} fitted on {len(valid_records)} validation images ({params.tta} views)")
    warning = temperature_warning(temperature)
    if warning:
        print(f"train: warning: {warning}")
    return calibrated
