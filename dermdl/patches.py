"""Patch training data from large images: names that record each patch's position, and annotations cut
consistently with the pixels, and the preprocess jobs that cut every image of a layout into patches
(``preprocess.patch_size``, docs/large-images.md).

The grid is :func:`dermdl.tiling.tile_grid` (the fewest patches that cover the image with the requested
overlap). Boxes and polygons are clipped with shapely; an object whose visible share inside a patch is
below ``min_visible`` is dropped there (a sliver of a lesion at a patch border teaches the detector to
fire on skin).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np

from dermdl.tiling import tile_grid

if TYPE_CHECKING:  # shapely and PIL load lazily: prepare.open_source (dermdl predict) imports this module
    from PIL import Image
    from shapely.geometry.base import BaseGeometry

    from dermdl.records import Record

#: (row, col, height, width) of the patch being prepared in this process; prepare.open_source crops to it.
_WINDOW: tuple[int, int, int, int] | None = None
#: The last decoded source: a worker cuts consecutive patches of one image, so it decodes it once.
_LAST: tuple[tuple[str, str], Image.Image] | None = None
#: COCO ids of a patch's image/annotations: source id * ID_STRIDE + patch index (unique, traceable).
ID_STRIDE = 100_000

_NAME = re.compile(r"^(?P<stem>.+)__r(?P<row>\d+)_c(?P<col>\d+)$")


def patch_name(stem: str, row: int, col: int) -> str:
    """``<stem>__r0512_c1024``: the source image and the patch's top-left pixel, readable in any listing."""
    return f"{stem}__r{row:04d}_c{col:04d}"


def parse_patch_name(name: str) -> tuple[str, int, int]:
    """(stem, row, column) of a :func:`patch_name`; the stem is the group that keeps one image's patches
    on one side of every split."""
    match = _NAME.match(name)
    if match is None:
        raise ValueError(f"{name!r} is not a patch name (<stem>__r<row>_c<col>)")
    return match["stem"], int(match["row"]), int(match["col"])


def _clip(shape: BaseGeometry, row: int, col: int, size: int, min_visible: float) -> BaseGeometry | None:
    from shapely.geometry import box

    if shape.area <= 0:
        return None
    clipped = shape.intersection(box(col, row, col + size, row + size))
    if clipped.is_empty or clipped.area / shape.area < min_visible:
        return None
    return clipped


def clip_box(
    xyxy: Sequence[float], row: int, col: int, size: int, min_visible: float = 0.25
) -> tuple[float, float, float, float] | None:
    """An image-pixel box cut to the patch at (row, col), in patch pixels; None when less than
    ``min_visible`` of its area lies inside the patch."""
    from shapely.geometry import box

    clipped = _clip(box(*xyxy), row, col, size, min_visible)
    if clipped is None:
        return None
    x0, y0, x1, y1 = clipped.bounds
    return x0 - col, y0 - row, x1 - col, y1 - row


def clip_polygon(
    points: Sequence[tuple[float, float]], row: int, col: int, size: int, min_visible: float = 0.25
) -> list[list[tuple[float, float]]]:
    """An image-pixel polygon (x, y points) cut to the patch, in patch pixels: the visible parts (a concave
    outline can leave several), or none when less than ``min_visible`` of its area is inside."""
    from shapely.geometry import Polygon

    shape = Polygon(points)
    if not shape.is_valid:
        shape = shape.buffer(0)  # self-touching outlines from annotation tools
    clipped = _clip(shape, row, col, size, min_visible)
    if clipped is None:
        return []
    parts = getattr(clipped, "geoms", [clipped])
    return [
        [(x - col, y - row) for x, y in part.exterior.coords[:-1]]
        for part in parts
        if isinstance(part, Polygon) and part.area > 0
    ]


def windows(height: int, width: int, size: int, overlap: float = 0.0) -> list[tuple[int, int, int, int]]:
    """(row, col, height, width) of every patch of an image, row by row: the tiling grid, each window cut
    to the image (a side shorter than a patch gives a smaller window; the resize makes it square)."""
    if size < 8:
        raise ValueError(f"preprocess.patch_size={size}: use at least 8 px, or 0 for whole images")
    return [(r, c, min(size, height - r), min(size, width - c)) for r, c in tile_grid(height, width, size, overlap)]


def source_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of an image file as open_rgb will see it (EXIF-transposed), from its header only."""
    from PIL import Image

    from dermdl.images import image_source

    with Image.open(image_source(path)) as image:
        width, height = image.size
        orientation = image.getexif().get(0x0112, 1)
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def cut_source(key: tuple[str, str], load: Callable[[], Image.Image]) -> Image.Image:
    """prepare.open_source's image: the whole decoded source, or its active patch window (decoded once
    per run of consecutive patches)."""
    global _LAST
    if _WINDOW is None:
        return load()
    if _LAST is None or _LAST[0] != key:
        _LAST = (key, load())
    row, col, height, width = _WINDOW
    return _LAST[1].crop((col, row, col + width, row + height))


def cut_array(values: np.ndarray) -> np.ndarray:
    """A per-pixel target (a segmentation mask) cut with the active patch window, like its image."""
    if _WINDOW is None:
        return values
    row, col, height, width = _WINDOW
    return values[row : row + height, col : col + width]


def _crop_rle(rle: dict, window: tuple[int, int, int, int]) -> dict | None:
    from pycocotools import mask as mask_utils

    row, col, height, width = window
    full_h, full_w = rle["size"]
    if isinstance(rle["counts"], list):
        rle = mask_utils.frPyObjects(rle, full_h, full_w)
    part = mask_utils.decode(rle)[row : row + height, col : col + width]
    if not part.any():
        return None
    encoded = mask_utils.encode(np.asfortranarray(part.astype(np.uint8)))
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode("ascii")}


def cut_coco(info: dict[str, Any], window: tuple[int, int, int, int], index: int, name: str, min_visible: float):
    """A detection target (image entry + annotations, COCO ``[x, y, w, h]`` in image pixels) cut to one
    patch: boxes clipped into patch pixels, objects below ``min_visible`` dropped, polygons clipped, RLE
    masks cropped; image/annotation ids made unique per patch (``id * ID_STRIDE + index``)."""
    row, col, height, width = window
    size = max(height, width)  # objects lie inside the image, so the square beyond it clips nothing more
    annotations = []
    for ann in info["annotations"]:
        x, y, w, h = ann["bbox"]
        clipped = clip_box((x, y, x + w, y + h), row, col, size, min_visible)
        if clipped is None:
            continue
        x0, y0, x1, y1 = clipped
        seg = ann.get("segmentation") or []
        if isinstance(seg, dict):
            seg = _crop_rle(seg, window) or []
        elif seg:
            seg = [
                [round(float(v), 3) for xy in part for v in xy]
                for poly in seg
                for part in clip_polygon(list(zip(poly[0::2], poly[1::2])), row, col, size, 0.0)
            ]
        annotations.append(
            {**ann, "id": int(ann.get("id", 0)) * ID_STRIDE + index, "bbox": [x0, y0, x1 - x0, y1 - y0]}
            | {"area": (x1 - x0) * (y1 - y0), "segmentation": seg}
        )
    image = {**info["image"], "id": int(info["image"]["id"]) * ID_STRIDE + index, "file_name": name}
    image |= {"width": width, "height": height, "source_id": info["image"]["id"]}
    for ann in annotations:
        ann["image_id"] = image["id"]
    return {**info, "image": image, "annotations": annotations}


def prepare_patch(
    prepare_item: Callable[..., Record],
    window: tuple[int, int, int, int],
    index: int,
    min_visible: float,
    source: Path,
    relative: str,
    target: Any,
    *rest: Any,
) -> Record:
    """Worker job: a task's ``prepare_item`` on one patch window of ``source``. The record is named after
    the patch (``<stem>__r0512_c1024``, in ``path`` and ``source``) and its ``patch`` key keeps the source
    image and window, so predictions map back and the splits keep one image's patches together. A COCO
    target (JSON object text) is cut to the patch; a mask is cut by the task through :func:`cut_array`."""
    global _WINDOW
    rel = PurePosixPath(relative)
    row, col, height, width = window
    name = patch_name(rel.stem, row, col) + rel.suffix
    if isinstance(target, str) and target.startswith("{"):
        target = json.dumps(cut_coco(json.loads(target), window, index, name, min_visible))
    _WINDOW = window
    try:
        record = prepare_item(source, rel.with_name(name).as_posix(), target, *rest)
    finally:
        _WINDOW = None
    record.pop("source_abspath", None)  # the whole photograph: overlays of a patch must not draw on it
    record["patch"] = {"source": relative, "row": row, "col": col, "height": height, "width": width}
    return record


def patch_jobs(prepare_item: Callable[..., Record], items: list, jobs: list[tuple], params: Any) -> tuple[list, list]:
    """(items, jobs) with one entry per patch window of every image (``params`` = PreprocessParams); the
    jobs run :func:`prepare_patch`."""
    global _LAST
    _LAST = None  # a source changed since an earlier run in this process must be decoded again
    out_items, out_jobs = [], []
    for item, job in zip(items, jobs):
        width, height = source_size(item.path)
        for index, window in enumerate(windows(height, width, params.patch_size, params.patch_overlap)):
            out_items.append(item)
            out_jobs.append((prepare_item, window, index, params.patch_min_visible, *job))
    return out_items, out_jobs


def source_of(record: Record) -> str:
    """The source image of a record (a patch's whole image): the group its patches share."""
    patch = record.get("patch")
    return patch["source"] if patch else record["source"]
