"""Detection inference: boxes for new images and pseudo-labels for self-training (COCO results and
overlays are written by :mod:`.writer`, which needs no torch, so ONNX Runtime predictions share it).

Boxes come out of the model in prepared-square pixels and are mapped back to each ORIGINAL image
(:func:`~dermdl.tasks.detection.data.box_to_original`), so the results file can be scored against the
source annotations and read by any COCO tool.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from dermdl.arrays import PreparedImages
from dermdl.models import ModelConfig
from dermdl.prepare import geometry, open_source, resize
from dermdl.records import Record
from dermdl.tasks.detection.data import box_to_original, to_tensor
from dermdl.tasks.detection.writer import _overlay_name, settings, write_predictions  # noqa: F401  (re-exported)


@torch.inference_mode()
def predict(
    model: torch.nn.Module, config: ModelConfig, paths: Sequence[Path], bs: int = 16, tta: str = "none"
) -> dict[str, Any]:
    """Detections for any images, prepared or raw, in the pixel coordinates of each given file.

    Returns ``{"images": [{"boxes" (n, 4) xyxy, "scores", "labels" (0-based class index), "width",
    "height"}], "category_ids": [...]}``.
    """
    if tta != "none":
        raise ValueError(f"tta={tta!r}: test-time augmentation is not available for detection models; use none")
    device = next(model.parameters()).device
    model.eval()
    size, policy = config.preprocess_size, config.resize
    out = []
    for start in range(0, len(paths), bs):
        batch, geos = [], []
        for path in paths[start : start + bs]:
            image = open_source(path, config.color_constancy)
            geos.append(geometry(image.width, image.height, size, policy))
            batch.append(to_tensor(resize(image, size, policy)).to(device))
        for det, geo in zip(model(batch), geos):
            boxes = box_to_original(det["boxes"].float().cpu().numpy(), geo)
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            out.append(
                {
                    "boxes": boxes[keep],
                    "scores": det["scores"].float().cpu().numpy()[keep],
                    "labels": det["labels"].cpu().numpy()[keep] - 1,
                    "width": geo.src_w,
                    "height": geo.src_h,
                }
            )
    category_ids = model.category_ids  # a buffer of the Detector (COCO id of each label)
    if not isinstance(category_ids, torch.Tensor):
        raise TypeError(f"{type(model).__name__}.category_ids is not a tensor; expected a Detector")
    return {"images": out, "category_ids": [int(v) for v in category_ids.cpu()]}


def pseudo_label(
    model: torch.nn.Module, config: ModelConfig, records: Sequence[Record], params: Any, work_dir: Path
) -> list[Record]:
    """Self-training: the teacher's boxes scoring >= ``detection.score_threshold`` become the targets
    (prepared images are passed, so the boxes are already in prepared coordinates)."""
    threshold = params.detection.score_threshold
    preds = predict(model, config, PreparedImages(records), params.infer.bs)
    out: list[Record] = []
    for record, det in zip(records, preds["images"]):
        keep = det["scores"] >= threshold
        objects = [
            {
                "bbox": [round(float(v), 3) for v in box],
                "category": config.classes[int(label)],
                "iscrowd": 0,
                "segmentation": [],
            }
            for box, label in zip(det["boxes"][keep], det["labels"][keep])
        ]
        out.append({**record, "target": objects})
    return out


def concat_predictions(parts: list[dict]) -> dict:
    """Cross-validation folds' ``{"images": [...], ...}`` predictions, in fold order."""
    return {**parts[0], "images": [image for part in parts for image in part["images"]]}
