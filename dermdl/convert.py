"""Convert between the segmentation layout and the detection (COCO) layout, so either can be trained.

    dermdl convert masks-to-coco --root data/demo/segmentation --out data/lesions-coco
    dermdl convert coco-to-masks --root data/lesions-coco --out data/lesions-masks

Segmentation layout: ``<root>/<dataset>/images/<name>.<ext>`` + ``masks/<name>.png`` (stored pixel
values mapped to class ids by ``segmentation.mask_values``/``codes``; class 0 is the background).
Detection layout: ``<root>/annotations/<dataset>.json`` + ``<root>/images/<dataset>/<file_name>``.

masks -> COCO: every connected component (8-connectivity) of every non-background class becomes one
object: its exact pixel bounding box, its pixel count as area, and its outline either as polygons
(``polygon``: the pixel-edge outline, simplified with shapely to ``tolerance`` pixels; holes are
filled) or as an RLE mask (``rle``: exact, holes kept). COCO category id = class id.
COCO -> masks: objects are painted largest first (small objects stay visible on top) with the
stored value of their class; polygons are rasterised with pycocotools, the reference for COCO.
Source trees are only read; the output folder is written atomically and must not exist yet.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from dermdl.io import atomic_dir, atomic_write_json

FORMATS = ("polygon", "rle")


def _outline(component: np.ndarray, tolerance: float) -> list[list[float]]:
    """COCO polygons tracing the pixel EDGES of one component (so rasterising gives the pixels back)."""
    from shapely import make_valid
    from shapely.geometry import LineString, Point, Polygon

    contours, _ = cv2.findContours(component.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    polygons = []
    for contour in contours:
        centres = contour.reshape(-1, 2).astype(np.float64) + 0.5  # pixel (i, j) covers [i, i+1] x [j, j+1]
        if len(centres) >= 3:
            shape = make_valid(Polygon(centres))
        else:
            shape = LineString(centres) if len(centres) == 2 else Point(centres[0])
        shape = shape.buffer(0.5, cap_style="square", join_style="mitre")
        if tolerance > 0:
            shape = shape.simplify(tolerance, preserve_topology=True)
        for part in getattr(shape, "geoms", [shape]):
            if part.geom_type == "Polygon" and not part.is_empty:
                coords = np.asarray(part.exterior.coords)[:-1]
                polygons.append([round(float(v), 2) for v in coords.ravel()])
    return polygons


def mask_to_objects(
    classes: np.ndarray, n_classes: int, fmt: str = "polygon", tolerance: float = 0.5, min_area: int = 1
) -> list[dict[str, Any]]:
    """COCO annotation bodies (no ids) for a class-id mask: one per connected component per class."""
    from pycocotools import mask as mask_utils

    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    objects = []
    for cls in range(1, n_classes):
        count, labels, stats, _ = cv2.connectedComponentsWithStats((classes == cls).astype(np.uint8), connectivity=8)
        for k in range(1, count):
            x, y, w, h, area = (int(v) for v in stats[k])
            if area < min_area:
                continue
            component = labels == k
            if fmt == "rle":
                rle = mask_utils.encode(np.asfortranarray(component.astype(np.uint8)))
                segmentation: Any = {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
            else:
                segmentation = _outline(component, tolerance)
            objects.append(
                {"category_id": cls, "bbox": [x, y, w, h], "area": area, "iscrowd": 0, "segmentation": segmentation}
            )
    return objects


def objects_to_mask(annotations: list[dict], height: int, width: int, class_of: dict[int, int]) -> np.ndarray:
    """Class-id mask (uint8) from COCO annotations; ``class_of`` maps category id -> class id."""
    from pycocotools import mask as mask_utils

    out = np.zeros((height, width), np.uint8)
    for ann in sorted(annotations, key=lambda a: -float(a.get("area") or a["bbox"][2] * a["bbox"][3])):
        seg = ann.get("segmentation")
        if isinstance(seg, dict):
            rle = (
                mask_utils.frPyObjects(seg, height, width)
                if isinstance(seg["counts"], list)
                else {
                    "size": seg["size"],
                    "counts": seg["counts"].encode("ascii") if isinstance(seg["counts"], str) else seg["counts"],
                }
            )
            pixels = mask_utils.decode(rle).astype(bool)
        elif seg:
            pixels = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(seg, height, width))).astype(bool)
        else:  # box only: paint the box
            x, y, w, h = ann["bbox"]
            pixels = np.zeros((height, width), bool)
            pixels[int(round(y)) : int(round(y + h)), int(round(x)) : int(round(x + w))] = True
        out[pixels] = class_of[ann["category_id"]]
    return out


def _fresh(out: Path, source: Path) -> None:
    from dermdl.io import is_inside

    if out.resolve() == source.resolve():
        raise ValueError(f"{out}: the output folder must differ from the input folder")
    if is_inside(out, source):
        raise ValueError(f"{out}: the output folder is inside the input folder {source}; choose a folder outside it")
    if out.exists():
        raise ValueError(f"{out}: already exists; choose a new output folder (convert never overwrites data)")


def masks_to_coco(
    root: str | Path,
    out: str | Path,
    params: Any,
    datasets: list[str] | None = None,
    fmt: str = "polygon",
    tolerance: float = 0.5,
    min_area: int = 1,
) -> dict[str, Any]:
    """Segmentation layout under ``root`` -> COCO detection layout under ``out`` (images copied)."""
    from dermdl.images import open_mask
    from dermdl.tasks.detection.layout import LAYOUT as COCO_LAYOUT
    from dermdl.tasks.segmentation.data import ValueMap
    from dermdl.tasks.segmentation.layout import LAYOUT as MASK_LAYOUT
    from dermdl.tasks.segmentation.layout import scan_segmentation

    root, out = Path(root), Path(out)
    _fresh(out, root)
    codes = list(params.segmentation.codes)
    value_map = ValueMap(params.segmentation.value_map(), len(codes))
    names = datasets or (
        sorted(p.name for p in root.iterdir() if (root / MASK_LAYOUT.image_dir(p.name)).is_dir())
        if root.is_dir()
        else []
    )
    items, report = scan_segmentation(root, names, value_map=params.segmentation.value_map(), check_images=True)
    if not report.ok or not names:
        raise ValueError(f"{root}: cannot convert:\n" + "\n".join(report.lines() or ["no datasets found"]))
    categories = [{"id": k, "name": name, "supercategory": "lesion"} for k, name in enumerate(codes) if k]
    summary: dict[str, Any] = {}
    with atomic_dir(out) as tmp:
        for name in names:
            images: list[dict[str, Any]] = []
            annotations: list[dict[str, Any]] = []
            for item in (i for i in items if i.dataset == name):
                mask_path = item.labelled_target()
                classes = value_map.to_classes(open_mask(mask_path), mask_path)
                height, width = classes.shape
                images.append({"id": len(images) + 1, "file_name": item.path.name, "width": width, "height": height})
                for obj in mask_to_objects(classes, len(codes), fmt, tolerance, min_area):
                    annotations.append({"id": len(annotations) + 1, "image_id": len(images), **obj})
                image_path = tmp / COCO_LAYOUT.image_path(name, item.path.name)
                image_path.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(item.path, image_path)
            atomic_write_json(
                tmp / COCO_LAYOUT.annotation_path(name),
                {"images": images, "annotations": annotations, "categories": categories},
            )
            summary[name] = {"images": len(images), "objects": len(annotations)}
    return summary


def coco_to_masks(root: str | Path, out: str | Path, params: Any, datasets: list[str] | None = None) -> dict[str, Any]:
    """COCO detection layout under ``root`` -> segmentation layout under ``out`` (images copied)."""
    from dermdl.images import write_png
    from dermdl.tasks.detection.layout import LAYOUT as COCO_LAYOUT
    from dermdl.tasks.detection.layout import decode_target, scan_coco
    from dermdl.tasks.segmentation.data import ValueMap
    from dermdl.tasks.segmentation.layout import LAYOUT as MASK_LAYOUT

    root, out = Path(root), Path(out)
    _fresh(out, root)
    codes = list(params.segmentation.codes)
    value_map = ValueMap(params.segmentation.value_map(), len(codes))
    annotations = root / Path(COCO_LAYOUT.annotation_path("*"))
    names = datasets or (
        sorted(COCO_LAYOUT.dataset_name(p.name) for p in annotations.parent.glob(annotations.name))
        if root.is_dir()
        else []
    )
    items, categories, report = scan_coco(root, names, check_images=True)
    if not report.ok or not names:
        raise ValueError(f"{root}: cannot convert:\n" + "\n".join(report.lines() or ["no annotation files found"]))
    unknown = [c for c in categories if c not in codes[1:]]
    if unknown:
        raise ValueError(
            f"{root}: categories {unknown} are not in segmentation.codes {codes} (index 0 is the "
            f"background); set e.g. --set 'segmentation.codes=[skin, {', '.join(categories)}]'"
        )
    summary: dict[str, Any] = {}
    with atomic_dir(out) as tmp:
        for name in names:
            stems: dict[str, Path] = {}
            for item in (i for i in items if i.dataset == name):
                target = decode_target(item.labelled_target())
                image = target["image"]
                stem = Path(image["file_name"]).stem
                if stem in stems:
                    raise ValueError(f"{item.path} and {stems[stem]} would share the mask {stem}.png; rename one")
                stems[stem] = item.path
                ids = dict(zip(target["category_ids"], categories))
                class_of = {cid: codes.index(cat) for cid, cat in ids.items()}
                classes = objects_to_mask(target["annotations"], image["height"], image["width"], class_of)
                image_path = tmp / MASK_LAYOUT.image_path(name, item.path.name)
                image_path.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(item.path, image_path)
                write_png(tmp / MASK_LAYOUT.mask_path(name, item.path.name), value_map.to_stored(classes))
            summary[name] = {"images": len(stems)}
    return summary
