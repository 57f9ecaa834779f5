"""Classification inference: class probabilities for new images, pseudo-labels and the predictions CSV.

Why together: the three share one contract (an (n, k) probability array in the model's class order),
and infer, self-training and analyze all read what these functions produce.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from dermdl.arrays import PreparedImages
from dermdl.evaluation.calibration import TEMPERATURE_BOUNDS, apply_temperature
from dermdl.inference import softmax_tta, to_input_tensor
from dermdl.io import atomic_write_text
from dermdl.models import ModelConfig
from dermdl.prepare import open_source
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


@torch.inference_mode()
def predict(
    model: torch.nn.Module, config: ModelConfig, paths: Sequence[Path], bs: int = 64, tta: str = "none"
) -> np.ndarray:
    """Class probabilities (n, k) for image files or prepared arrays: the training geometry is re-applied,
    then the model's temperature (when it has one and calibration is on)."""
    device = next(model.parameters()).device
    model.eval()
    out = []
    for start in range(0, len(paths), bs):
        images = [open_source(p, config.color_constancy) for p in paths[start : start + bs]]
        batch = torch.stack([to_input_tensor(image, config) for image in images]).to(device)
        out.append(softmax_tta(model, batch, tta, spatial=False).cpu().numpy())
    if not out:
        return np.zeros((0, len(config.classes)), dtype=np.float32)
    probs = np.concatenate(out)
    temperature = applied_temperature(config)
    return probs if temperature == 1.0 else apply_temperature(probs, temperature).astype(np.float32)


def pseudo_label(
    model: torch.nn.Module, config: ModelConfig, records: Sequence[Record], params: Any, work_dir: Path
) -> list[Record]:
    """Self-training: each weakly labelled image gets the teacher's most probable class (hard label)."""
    probs = predict(model, config, PreparedImages(records), params.infer.bs, params.training_tta)
    labels = [config.classes[i] for i in probs.argmax(axis=1)] if len(probs) else []
    return [{**r, "target": label, "stratum": label} for r, label in zip(records, labels)]


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


def concat_predictions(parts: list[np.ndarray]) -> np.ndarray:
    """Cross-validation folds' probabilities, in fold order."""
    return np.concatenate(parts)
