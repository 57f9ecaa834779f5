"""Detection inference: boxes for new images, pseudo-labels for self-training, COCO results + overlays.

Boxes come out of the model in prepared-square pixels and are mapped back to each ORIGINAL image
(:func:`~dermdl.tasks.detection.data.box_to_original`), so the results file can be scored against the
source annotations and read by any COCO tool.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from dermdl.arrays import PreparedImages
from dermdl.images import ImageError, open_rgb
from dermdl.io import atomic_write_json
from dermdl.models import ModelConfig
from dermdl.params import DetectionParams
from dermdl.prepare import geometry, open_source, resize
from dermdl.records import Record
from dermdl.tasks.detection.data import box_to_original, record_geometry, to_tensor
from dermdl.tasks.detection.plots import colour, draw_boxes, save_png


def settings(config: ModelConfig) -> DetectionParams:
    """The ``detection`` params section the model was trained with (saved in model.json)."""
    return DetectionParams(**config.extra.get("detection", {}))


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


def _overlay_name(file_name: str, used: set[str]) -> str:
    stem = Path(file_name).with_suffix("").as_posix().replace("/", "__")
    name, k = f"{stem}.png", 1
    while name.casefold() in used:  # X.png and x.png are one file on macOS and Windows
        name, k = f"{stem}_{k}.png", k + 1
    used.add(name.casefold())
    return name


def write_predictions(
    records: Sequence[Record], predictions: dict, config: ModelConfig, out_dir: Path, name: str
) -> Path:
    """``<name>.json``: COCO results (ORIGINAL image pixels, every detection the model keeps, score
    >= 0.05, so AP sees the full ranking); ``<name>_gt.json`` (test sets) or ``<name>_images.json``
    (new images): the COCO image list; ``overlays/<name>/``: boxes with score >= score_threshold."""
    threshold = settings(config).score_threshold
    ids = predictions["category_ids"]
    categories = [{"id": i, "name": n} for i, n in zip(ids, config.classes)]
    results: list[dict] = []
    images: list[dict] = []
    annotations: list[dict] = []
    used: set[str] = set()
    missing = 0
    for index, (record, det) in enumerate(zip(records, predictions["images"]), start=1):
        geo = record_geometry(record)
        boxes = det["boxes"] if geo is None else box_to_original(det["boxes"], geo)
        source = record.get("source_abspath") or record["source"]
        image = dict(
            record.get("image")
            or {"id": index, "file_name": Path(record["source"]).name, "width": det["width"], "height": det["height"]}
        )
        image["path"] = str(source)  # extra key (ignored by COCO tools): lets analyze draw the gallery
        images.append(image)
        for ann in record.get("annotations", []):
            annotations.append({k: v for k, v in ann.items() if k != "category"} | {"image_id": image["id"]})
        for box, score, label in zip(boxes, det["scores"], det["labels"]):
            x0, y0, x1, y1 = (float(v) for v in box)
            results.append(
                {
                    "image_id": image["id"],
                    "category_id": ids[int(label)],
                    "file_name": image["file_name"],
                    "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                    "score": round(float(score), 5),
                }
            )
        keep = det["scores"] >= threshold
        try:
            picture = open_rgb(source)
        except ImageError:
            missing += 1
            continue
        labels = [int(v) for v in det["labels"][keep]]
        overlay = draw_boxes(
            picture,
            boxes[keep],
            [config.classes[k] for k in labels],
            list(det["scores"][keep]),
            [colour(k) for k in labels],
        )
        save_png(overlay, out_dir / "overlays" / name / _overlay_name(image["file_name"], used))
    if missing:
        warnings.warn(f"{name}: {missing} original image(s) not found; their overlays were skipped", stacklevel=2)
    if any("annotations" in r for r in records):
        atomic_write_json(
            out_dir / f"{name}_gt.json", {"images": images, "annotations": annotations, "categories": categories}
        )
    else:
        atomic_write_json(out_dir / f"{name}_images.json", {"images": images, "categories": categories})
    return atomic_write_json(out_dir / f"{name}.json", results)


def concat_predictions(parts: list[dict]) -> dict:
    """Cross-validation folds' ``{"images": [...], ...}`` predictions, in fold order."""
    return {**parts[0], "images": [image for part in parts for image in part["images"]]}
