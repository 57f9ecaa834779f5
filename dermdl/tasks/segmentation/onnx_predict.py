"""Per-pixel probabilities from an exported U-Net with ONNX Runtime (no torch): what
:func:`dermdl.tasks.segmentation.predict.predict` returns for the PyTorch model; the writer maps them to
the original image size in numpy/PIL either way."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dermdl.export.runtime import OnnxModel, average_views, input_array
from dermdl.model_config import ModelConfig
from dermdl.prepare import open_source
from dermdl.tasks.segmentation.writer import SegPrediction


def predict(
    onnx: OnnxModel, config: ModelConfig, paths: Sequence[Path], bs: int = 16, tta: str = "none"
) -> list[SegPrediction]:
    out: list[SegPrediction] = []
    for start in range(0, len(paths), bs):
        images = [open_source(p, config.color_constancy) for p in paths[start : start + bs]]
        batch = np.stack([input_array(image, config) for image in images])
        probs = average_views(lambda x: onnx.run("probabilities", x), batch, tta, spatial=True).astype(np.float16)
        out += [SegPrediction(p, *image.size) for p, image in zip(probs, images)]
    return out
