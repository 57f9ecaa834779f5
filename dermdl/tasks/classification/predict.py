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
from dermdl.inference import softmax_tta, to_input_tensor
from dermdl.io import atomic_write_text
from dermdl.models import ModelConfig
from dermdl.prepare import open_source
from dermdl.records import Record


@torch.inference_mode()
def predict(
    model: torch.nn.Module, config: ModelConfig, paths: Sequence[Path], bs: int = 64, tta: str = "none"
) -> np.ndarray:
    """Class probabilities (n, k) for image files or prepared arrays: the training geometry is re-applied."""
    device = next(model.parameters()).device
    model.eval()
    out = []
    for start in range(0, len(paths), bs):
        images = [open_source(p, config.color_constancy) for p in paths[start : start + bs]]
        batch = torch.stack([to_input_tensor(image, config) for image in images]).to(device)
        out.append(softmax_tta(model, batch, tta, spatial=False).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(config.classes)), dtype=np.float32)


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
    """CSV: path, true label (empty for new images), predicted label, one probability column per class."""
    frame = pd.DataFrame(
        {
            "path": [r["source"] for r in records],
            "true_label": [r.get("target") or "" for r in records],
            "predicted_label": [config.classes[i] for i in probs.argmax(axis=1)] if len(probs) else [],
        }
    )
    for index, cls in enumerate(config.classes):
        frame[f"prob_{cls}"] = probs[:, index] if len(probs) else []
    return atomic_write_text(out_dir / f"{name}.csv", frame.to_csv(index=False, float_format="%.6f"))


def concat_predictions(parts: list[np.ndarray]) -> np.ndarray:
    """Cross-validation folds' probabilities, in fold order."""
    return np.concatenate(parts)
