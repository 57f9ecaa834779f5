"""The classification predictions CSV and the temperature it records.

Why its own module: it needs no torch, so ``dermdl predict`` with an exported ONNX file writes exactly
the CSV that the PyTorch path writes (:mod:`dermdl.export`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dermdl.evaluation.calibration import TEMPERATURE_BOUNDS
from dermdl.io import atomic_write_text
from dermdl.model_config import ModelConfig
from dermdl.records import Record


def applied_temperature(config: ModelConfig) -> float:
    """The temperature predict applies: the fitted one, unless calibration is switched off."""
    if not config.extra.get("calibrate", True):
        return 1.0
    value = config.extra.get("temperature", 1.0)
    lo, hi = TEMPERATURE_BOUNDS
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ValueError(
            f"model.json: extra.temperature is {value!r}, expected a number in [{lo}, {hi}]; copy the model "
            "folder again or retrain (or predict with --no-calibrate)"
        )
    return float(value)


def write_predictions(
    records: Sequence[Record], probs: np.ndarray, config: ModelConfig, out_dir: Path, name: str
) -> Path:
    """CSV: path, true label (empty for new images), predicted label, one probability column per class, and
    the temperature the probabilities were scaled with (1 = the network's softmax), so analyze can report
    calibration before and after."""
    frame = pd.DataFrame(
        {
            "path": [r["source"] for r in records],
            "true_label": [r.get("target") or "" for r in records],
            # the image's own class folder: differs from true_label where data.label_maps renamed it
            "folder": [Path(r["source"]).parent.name if r.get("target") else "" for r in records],
            "predicted_label": [config.classes[i] for i in probs.argmax(axis=1)] if len(probs) else [],
        }
    )
    for index, cls in enumerate(config.classes):
        frame[f"prob_{cls}"] = probs[:, index] if len(probs) else []
    frame["temperature"] = applied_temperature(config)
    return atomic_write_text(out_dir / f"{name}.csv", frame.to_csv(index=False, float_format="%.6f"))
