"""Detection data: prepared images with boxes/polygons mapped by the same Geometry, and the loaders.

Why the geometry is applied to the targets once, at preprocess time: the prepared image is what the
model sees, so its boxes must be expressed in the prepared pixels (scale, then the pad/crop offset:
:class:`dermdl.prepare.Geometry`). The original annotations and the geometry stay in the record so
that predictions can be mapped back to ORIGINAL image coordinates for the COCO results file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dermdl.arrays import PIXELS
from dermdl.prepare import Geometry, geometry, prepare_image, resize
from dermdl.records import Record

if TYPE_CHECKING:  # torch only for training/PyTorch inference: the ONNX predict path maps boxes with this module
    import torch


def box_to_prepared(bbox: list[float], geo: Geometry) -> list[float] | None:
    """COCO ``[x, y, w, h]`` (original pixels) -> ``[x0, y0, x1, y1]`` in the prepared square, clipped
    to it (crop policy); None when less than one pixel of the box is left."""
    x0, y0 = geo.to_prepared(bbox[0], bbox[1])
    x1, y1 = geo.to_prepared(bbox[0] + bbox[2], bbox[1] + bbox[3])
    x0, y0 = max(0.0, min(x0, geo.size)), max(0.0, min(y0, geo.size))
    x1, y1 = max(0.0, min(x1, geo.size)), max(0.0, min(y1, geo.size))
    if x1 - x0 < 1.0 or y1 - y0 < 1.0:
        return None
    return [round(v, 3) for v in (x0, y0, x1, y1)]


def box_to_original(box: np.ndarray, geo: Geometry) -> np.ndarray:
    """(n, 4) ``[x0, y0, x1, y1]`` boxes in the prepared square -> original pixels, clipped to the image."""
    out = np.asarray(box, dtype=np.float64).reshape(-1, 4).copy()
    out[:, 0::2] = (out[:, 0::2] - geo.offset_x) / geo.scale_x
    out[:, 1::2] = (out[:, 1::2] - geo.offset_y) / geo.scale_y
    out[:, 0::2] = out[:, 0::2].clip(0, geo.src_w)
    out[:, 1::2] = out[:, 1::2].clip(0, geo.src_h)
    return out


def polygons_to_prepared(polygons: list[list[float]], geo: Geometry) -> list[list[float]]:
    """Map COCO polygons point by point; parts cut off by the crop policy are clipped away (shapely)."""
    from shapely.geometry import Polygon, box

    frame = box(0, 0, geo.size, geo.size)
    out = []
    for poly in polygons:
        points = [geo.to_prepared(x, y) for x, y in zip(poly[0::2], poly[1::2])]
        shape = Polygon(points)
        if frame.covers(shape):
            parts = [points]
        else:
            clipped = shape.intersection(frame)
            parts = [
                list(p.exterior.coords)[:-1]
                for p in getattr(clipped, "geoms", [clipped])
                if isinstance(p, Polygon) and p.area >= 1.0
            ]
        out += [[round(float(v), 3) for xy in part for v in xy] for part in parts]
    return out


def rle_to_prepared(rle: dict, geo: Geometry, policy: str) -> dict | None:
    """Resize an RLE mask exactly like its image (nearest neighbour, same policy) and re-encode it."""
    from PIL import Image
    from pycocotools import mask as mask_utils

    height, width = rle["size"]
    if isinstance(rle["counts"], list):
        rle = mask_utils.frPyObjects(rle, height, width)
    mask = mask_utils.decode(rle).astype(np.uint8) * 255
    small = np.asarray(resize(Image.fromarray(mask, "L"), geo.size, policy, kind="mask")) > 127
    if not small.any():
        return None
    encoded = mask_utils.encode(np.asfortranarray(small.astype(np.uint8)))
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode("ascii")}


def prepare_item(
    source: Path, relative: str, target: str, dst_root: Path, size: int, policy: str, color_constancy: str = "none"
) -> Record:
    """Resize one image and map its annotations; the record is what train/infer/analyze read (its
    ``pixels`` go into the dataset's array)."""
    info = json.loads(target)
    width, height, pixels = prepare_image(source, size, policy, color_constancy)
    geo = geometry(width, height, size, policy)
    objects, dropped = [], 0
    for ann in info["annotations"]:
        box = box_to_prepared(ann["bbox"], geo)
        if box is None:
            dropped += 1
            continue
        seg = ann.get("segmentation") or []
        if isinstance(seg, dict):
            seg = rle_to_prepared(seg, geo, policy) or []
        elif seg:
            seg = polygons_to_prepared(seg, geo)
        objects.append({"bbox": box, "category": ann["category"], "iscrowd": ann["iscrowd"], "segmentation": seg})
    return {
        "path": relative,
        "source": relative,
        "source_abspath": str(Path(source).resolve()),
        "target": objects,
        "width": width,
        "height": height,
        "image": info["image"],
        "annotations": info["annotations"],
        "category_ids": info["category_ids"],
        "geometry": asdict(geo),
        "dropped": dropped,
        PIXELS: pixels,
    }


def record_geometry(record: Record) -> Geometry | None:
    return Geometry(**record["geometry"]) if "geometry" in record else None


def to_tensor(image: Any) -> torch.Tensor:
    """PIL/uint8 HWC -> float CHW in [0, 1] (the detector normalises internally)."""
    import torch

    return torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1).float().div_(255.0)


def dataloaders(
    train: Sequence[Record],
    valid: Sequence[Record],
    classes: list[str],
    params: Any,
    norm: Any = None,
    path: Path | str = ".",
):
    """Array loaders (images in [0, 1]: the detector normalises internally, so ``norm`` is unused) with
    torchvision targets; ``category_ids`` (COCO ids of ``classes``) ride along for the model's id buffer."""
    from dermdl.batches import Boxes, array_dataloaders, augmentation

    train, valid = list(train), list(valid)
    if not train:
        raise ValueError("detection: no training images")
    dls = array_dataloaders(train, valid, Boxes, params, None, augmentation(params.train, boxes=True), classes=classes)
    dls.path = Path(path)
    dls.category_ids = list(train[0].get("category_ids") or range(1, len(classes) + 1))
    return dls


def prepare_settings(params: Any) -> dict[str, Any]:
    """What the prepared boxes depend on besides the annotations (preprocess fingerprint)."""
    return {"clip_boxes": params.detection.clip_boxes}
