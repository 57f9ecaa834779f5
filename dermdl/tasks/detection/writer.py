"""Detection predictions written: COCO results in ORIGINAL image pixels, the image list, box overlays.

Why its own module: it needs no torch, so ``dermdl predict`` with an exported ONNX file writes exactly
what the PyTorch path writes (:mod:`dermdl.export`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

from dermdl.images import ImageError, open_rgb
from dermdl.io import atomic_write_json
from dermdl.model_config import ModelConfig
from dermdl.params import DetectionParams
from dermdl.records import Record
from dermdl.tasks.detection.data import box_to_original, record_geometry
from dermdl.tasks.detection.plots import colour, draw_boxes, save_png


def settings(config: ModelConfig) -> DetectionParams:
    """The ``detection`` params section the model was trained with (saved in model.json)."""
    return DetectionParams(**config.extra.get("detection", {}))


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
