"""Class probabilities from an exported classifier with ONNX Runtime (no torch): what
:func:`dermdl.tasks.classification.predict.predict` returns for the PyTorch model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dermdl.evaluation.calibration import apply_temperature
from dermdl.export.runtime import OnnxModel, average_views, input_array, softmax
from dermdl.model_config import ModelConfig
from dermdl.prepare import open_source
from dermdl.tasks.classification.writer import applied_temperature


def predict(onnx: OnnxModel, config: ModelConfig, paths: Sequence[Path], bs: int = 64, tta: str = "none") -> np.ndarray:
    """(n, k) probabilities; the softmax of the graph's logits is averaged over the TTA views, then the
    temperature is applied (unless calibration is off), exactly as the PyTorch path does."""
    out = []
    for start in range(0, len(paths), bs):
        images = [open_source(p, config.color_constancy) for p in paths[start : start + bs]]
        batch = np.stack([input_array(image, config) for image in images])
        out.append(average_views(lambda x: softmax(onnx.run("logits", x)), batch, tta, spatial=False))
    if not out:
        return np.zeros((0, len(config.classes)), dtype=np.float32)
    probs = np.concatenate(out).astype(np.float32)
    temperature = applied_temperature(config)
    return probs if temperature == 1.0 else apply_temperature(probs, temperature).astype(np.float32)
