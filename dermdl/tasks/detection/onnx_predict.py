"""Detections from an exported detector with ONNX Runtime (no torch): what
:func:`dermdl.tasks.detection.predict.predict` returns for the PyTorch model."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dermdl.export.runtime import OnnxModel
from dermdl.model_config import ModelConfig
from dermdl.prepare import geometry, open_source, resize
from dermdl.tasks.detection.data import box_to_original


def predict(
    onnx: OnnxModel, config: ModelConfig, paths: Sequence[Path], bs: int = 16, tta: str = "none"
) -> dict[str, Any]:
    """``{"images": [{"boxes", "scores", "labels" (0-based), "width", "height"}], "category_ids"}`` in the
    pixels of each given file; one image per call (the graph's batch is one, ``bs`` is accepted for
    the common signature)."""
    if tta != "none":
        raise ValueError(f"tta={tta!r}: test-time augmentation is not available for detection models; use none")
    size, policy = config.preprocess_size, config.resize
    out = []
    for path in paths:
        image = open_source(path, config.color_constancy)
        geo = geometry(image.width, image.height, size, policy)
        pixels = np.asarray(resize(image, size, policy), dtype=np.uint8).transpose(2, 0, 1)
        boxes, scores, labels = onnx.session.run(
            ["boxes", "scores", "labels"], {"image": (pixels.astype(np.float32) / np.float32(255.0))[None]}
        )
        boxes = box_to_original(boxes.astype(np.float32), geo)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        out.append(
            {
                "boxes": boxes[keep],
                "scores": scores.astype(np.float32)[keep],
                "labels": labels.astype(np.int64)[keep] - 1,
                "width": geo.src_w,
                "height": geo.src_h,
            }
        )
    return {"images": out, "category_ids": [int(v) for v in json.loads(onnx.metadata["category_ids"])]}
