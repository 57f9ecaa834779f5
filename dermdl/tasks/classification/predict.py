"""Classification inference: class probabilities for new images and pseudo-labels (the predictions CSV is
written by :mod:`.writer`, which needs no torch, so ONNX Runtime predictions share it).

Why together: both share one contract (an (n, k) probability array in the model's class order),
and infer, self-training and analyze all read what these functions produce.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dermdl.arrays import PreparedImages
from dermdl.evaluation.calibration import apply_temperature
from dermdl.inference import softmax_tta, to_input_tensor
from dermdl.models import ModelConfig
from dermdl.prepare import open_source
from dermdl.records import Record
from dermdl.tasks.classification.tabular import encoder_of, file_rows, record_rows
from dermdl.tasks.classification.writer import applied_temperature, write_predictions  # noqa: F401  (re-exported)


@torch.inference_mode()
def predict(
    model: torch.nn.Module, config: ModelConfig, paths: Sequence[Path], bs: int = 64, tta: str = "none"
) -> np.ndarray:
    """Class probabilities (n, k) for image files or prepared arrays: the training geometry is re-applied,
    then the model's temperature (when it has one and calibration is on)."""
    device = next(model.parameters()).device
    model.eval()
    tabular = tabular_inputs(config, paths)
    out = []
    for start in range(0, len(paths), bs):
        images = [open_source(p, config.color_constancy) for p in paths[start : start + bs]]
        batch = torch.stack([to_input_tensor(image, config) for image in images]).to(device)
        net = model if tabular is None else _WithTabular(model, tabular[start : start + bs].to(device))
        out.append(softmax_tta(net, batch, tta, spatial=False).cpu().numpy())
    if not out:
        return np.zeros((0, len(config.classes)), dtype=np.float32)
    probs = np.concatenate(out)
    temperature = applied_temperature(config)
    return probs if temperature == 1.0 else apply_temperature(probs, temperature).astype(np.float32)


class _WithTabular(torch.nn.Module):
    """An image + metadata model as a function of the images alone: TTA views change the image only."""

    def __init__(self, model: torch.nn.Module, tabular: torch.Tensor):
        super().__init__()
        self.model, self.tabular = model, tabular

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images, self.tabular)


def tabular_inputs(config: ModelConfig, paths: Sequence[Any]) -> torch.Tensor | None:
    """The metadata rows of the images (None: an image-only model): prepared records' from the table the
    model was trained with; new files' from ``extra["metadata_table"]`` (``dermdl predict --metadata``),
    where an image without a row counts as all missing (one warning with the count)."""
    if encoder_of(config) is None:
        return None
    if isinstance(paths, PreparedImages):
        return torch.from_numpy(record_rows(config, paths.records))
    table = config.extra.get("metadata_table")
    rows, unmatched = file_rows(config, list(paths), Path(table) if table else None)
    if unmatched:
        print(
            f"dermdl predict: warning: {unmatched} of {len(paths)} images have no row in {table}; their metadata "
            "counts as missing",
            file=sys.stderr,
        )
    return torch.from_numpy(rows)


def pseudo_label(
    model: torch.nn.Module, config: ModelConfig, records: Sequence[Record], params: Any, work_dir: Path
) -> list[Record]:
    """Self-training: each weakly labelled image gets the teacher's most probable class (hard label)."""
    probs = predict(model, config, PreparedImages(records), params.infer.bs, params.training_tta)
    labels = [config.classes[i] for i in probs.argmax(axis=1)] if len(probs) else []
    return [{**r, "target": label, "stratum": label} for r, label in zip(records, labels)]


def concat_predictions(parts: list[np.ndarray]) -> np.ndarray:
    """Cross-validation folds' probabilities, in fold order."""
    return np.concatenate(parts)
