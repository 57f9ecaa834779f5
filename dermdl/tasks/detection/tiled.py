"""Detection on large images by tiles: each tile's boxes are shifted back to image pixels and the boxes of
all tiles are merged with class-wise NMS (``torchvision.ops.batched_nms``), so a lesion that two
overlapping tiles both see is reported once."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.ops import batched_nms

from dermdl.models import ModelConfig
from dermdl.prepare import open_source
from dermdl.tasks.detection.predict import predict
from dermdl.tiling import Tiles, batches

#: IoU above which two boxes of one class from different tiles are one object.
MERGE_IOU = 0.5


def merge_tiles(
    detections: Sequence[dict[str, np.ndarray]], corners: Sequence[tuple[int, int]], iou: float = MERGE_IOU
) -> dict[str, np.ndarray]:
    """One image's detections from per-tile ones: ``detections[i]`` holds ``boxes`` (n, 4) xyxy in the
    pixels of the tile whose top-left corner is ``corners[i]`` = (row, column), ``scores`` and ``labels``.
    Returns image-pixel ``boxes``, ``scores`` and ``labels``, highest score first, duplicates suppressed."""
    if len(detections) != len(corners):
        raise ValueError(f"{len(detections)} tiles of detections but {len(corners)} tile corners")
    boxes = [
        np.asarray(d["boxes"], np.float32).reshape(-1, 4) + np.array([c, r, c, r], dtype=np.float32)
        for d, (r, c) in zip(detections, corners)
    ]
    all_boxes = np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32)
    scores = (
        np.concatenate([np.asarray(d["scores"], np.float32).reshape(-1) for d in detections])
        if detections
        else np.zeros(0, np.float32)
    )
    labels = (
        np.concatenate([np.asarray(d["labels"], np.int64).reshape(-1) for d in detections])
        if detections
        else np.zeros(0, np.int64)
    )
    keep = batched_nms(torch.from_numpy(all_boxes), torch.from_numpy(scores), torch.from_numpy(labels), iou).numpy()
    return {"boxes": all_boxes[keep], "scores": scores[keep], "labels": labels[keep]}


def predict_tiled(
    model: torch.nn.Module, config: ModelConfig, paths: Sequence[Path], bs: int, tta: str, tiles: Tiles
) -> dict[str, Any]:
    """Detections of each image by tiles at its original resolution: every tile is detected like a whole
    (prepared) image, its boxes shifted to image pixels and merged across tiles (:func:`merge_tiles`).
    Same output as :func:`dermdl.tasks.detection.predict.predict`."""
    images, category_ids = [], []
    for path in paths:
        image = np.asarray(open_source(path, config.color_constancy))
        dets, corners = [], []
        for tile_corners, windows in batches(image, tiles.size, tiles.overlap, bs):
            result = predict(model, config, list(windows), bs, tta)
            dets += result["images"]
            corners += tile_corners
            category_ids = result["category_ids"]
        merged = merge_tiles(dets, corners)
        height, width = image.shape[:2]
        boxes = merged["boxes"]  # a mirrored-padding tile can reach beyond a small image: clip
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        images.append(
            {
                "boxes": boxes[keep],
                "scores": merged["scores"][keep],
                "labels": merged["labels"][keep],
                "width": width,
                "height": height,
            }
        )
    return {"images": images, "category_ids": category_ids}
