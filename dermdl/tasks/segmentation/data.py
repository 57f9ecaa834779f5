"""Segmentation data: mask values <-> class ids, the prepared tree, training targets, mask geometry.

Why a value map instead of "whatever is in the PNG": real masks store 0/255 (HAM10000, ISIC, PH2),
0/1, or palette indices for multi-class grading. Training needs class ids 0..k-1 and the written
predictions must use the stored convention again, so both directions live here, in one place.

Why predictions are resampled from probabilities: the model sees the prepared geometry
(squish/pad/crop at ``preprocess.size``, then ``input_size``); mapping the class probabilities
back through exactly that geometry and taking the argmax at the original resolution gives smooth,
aligned borders, where upsampling a label map would give blocks.

Prepared tree (per dataset): ``images/<stem>.png`` and ``masks/<stem>.png`` resized with the same
geometry (masks nearest-neighbour, STORED values kept), and ``masks_full/<stem>.png``, the mask at
its original resolution, so infer/analyze compute metrics at full resolution without the source data.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from PIL import Image

from dermdl.arrays import PIXELS, prepared_root
from dermdl.images import open_mask, write_png
from dermdl.model_config import ModelConfig
from dermdl.patches import cut_array
from dermdl.prepare import PNG_LEVEL, Geometry, geometry, prepare_image, resize
from dermdl.records import Record
from dermdl.tasks.segmentation.layout import IMAGES, MASKS

FULL_MASKS = "masks_full"


class ValueMap:
    """Stored mask value -> class id (a lookup table), and class id -> the value written back.

    ``pairs`` keeps the user's order: the FIRST stored value of each class is the one written
    into predicted masks (default two-class map {0: 0, 255: 1, 1: 1} writes 0 and 255).
    """

    def __init__(self, pairs: Mapping[int, int] | Iterable[tuple[int, int]], n_classes: int):
        self.pairs = [(int(v), int(c)) for v, c in (pairs.items() if isinstance(pairs, Mapping) else pairs)]
        self.n_classes = n_classes
        self.lut = np.full(max(256, max(v for v, _ in self.pairs) + 1), -1, dtype=np.int16)
        inverse: dict[int, int] = {}
        for value, cls in self.pairs:
            if not 0 <= cls < n_classes:
                raise ValueError(f"mask_values: class id {cls} is outside 0..{n_classes - 1}")
            self.lut[value] = cls
            inverse.setdefault(cls, value)
        missing = [c for c in range(n_classes) if c not in inverse]
        if missing:
            raise ValueError(f"mask_values: class ids {missing} have no stored value")
        dtype = np.uint8 if max(inverse.values()) <= 255 else np.uint16
        self.inverse = np.array([inverse[c] for c in range(n_classes)], dtype=dtype)

    def to_json(self) -> list[list[int]]:
        return [[v, c] for v, c in self.pairs]

    def to_classes(self, values: np.ndarray, path: str | os.PathLike = "mask") -> np.ndarray:
        """uint8 class ids of a stored-value array; unknown values are an error naming the file."""
        values = np.asarray(values)
        inside = values < len(self.lut)
        classes = self.lut[np.where(inside, values, 0)]
        unknown = ~inside | (classes < 0)
        if not unknown.any():
            return classes.astype(np.uint8)
        bad = np.unique(values[unknown])
        allowed = ", ".join(str(v) for v, _ in self.pairs)
        raise ValueError(
            f"{path}: pixel values {bad.tolist()[:8]} are not in segmentation.mask_values "
            f"({allowed}); run `dermdl validate` for the full list"
        )

    def to_stored(self, classes: np.ndarray) -> np.ndarray:
        return self.inverse[np.asarray(classes)]


def model_geometry(width: int, height: int, preprocess_size: int, input_size: int, policy: str):
    """Original image -> model input: the prepare policy at ``preprocess_size``, then a square
    rescale to ``input_size`` (what both training and :func:`predict` do)."""
    g = geometry(width, height, preprocess_size, policy)
    f = input_size / preprocess_size
    return Geometry(width, height, input_size, g.scale_x * f, g.scale_y * f, g.offset_x * f, g.offset_y * f)


def to_original(probs: np.ndarray, width: int, height: int, preprocess_size: int, policy: str) -> np.ndarray:
    """Class probabilities (k, s, s) in model space -> (k, height, width) at the original resolution.

    Bilinear, pixel centres aligned; where ``crop`` cut parts of the original away, the nearest
    border prediction is extended (the model never saw those pixels).
    """
    k, size, _ = probs.shape
    g = model_geometry(width, height, preprocess_size, size, policy)
    matrix = np.array(
        [[g.scale_x, 0.0, 0.5 * g.scale_x + g.offset_x - 0.5], [0.0, g.scale_y, 0.5 * g.scale_y + g.offset_y - 0.5]]
    )
    out = np.empty((k, height, width), dtype=np.float32)
    for c in range(k):
        out[c] = cv2.warpAffine(
            np.ascontiguousarray(probs[c], dtype=np.float32),
            matrix,
            (width, height),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )
    return out


def resize_probs(probs: np.ndarray, size: int) -> np.ndarray:
    """(k, s, s) -> (k, size, size), bilinear (model space -> prepared space for overlays)."""
    return np.stack(
        [cv2.resize(np.asarray(p, dtype=np.float32), (size, size), interpolation=cv2.INTER_LINEAR) for p in probs]
    )


def value_map(params: Any) -> ValueMap:
    return ValueMap(params.segmentation.value_map(), len(params.segmentation.codes))


def config_value_map(config: ModelConfig) -> ValueMap:
    return ValueMap([tuple(pair) for pair in config.extra["mask_values"]], len(config.classes))


def config_extra(params: Any) -> dict[str, Any]:
    """Saved in model.json: the value convention, so `dermdl predict` needs no params.yaml."""
    return {"mask_values": value_map(params).to_json()}


def prepare_item(
    source: Path, relative: str, target: str, dst_root: Path, size: int, policy: str, color_constancy: str = "none"
) -> Record:
    """Resize an image and its mask (``target``) with the same geometry; keep the full-size mask."""
    rel = Path(relative)
    dataset, stem = rel.parts[0], rel.stem
    width, height, pixels = prepare_image(source, size, policy, color_constancy)
    values = cut_array(open_mask(target))  # a patch (preprocess.patch_size): the image's window
    if values.shape != (height, width):
        raise ValueError(
            f"{target}: mask is {values.shape[1]} x {values.shape[0]} pixels but its image {source} is "
            f"{width} x {height}; run `dermdl validate` and fix the mask"
        )
    small = np.asarray(resize(Image.fromarray(values), size, policy, kind="mask"))
    # inside preprocess's atomic folder: no per-file fsync (20,000 of them took most of HAM10000's 27 s)
    write_png(dst_root / dataset / MASKS / f"{stem}.png", small.astype(values.dtype), PNG_LEVEL, atomic=False)
    # where the image lies in the prepared square (pad leaves borders): outside it is class 0 whatever
    # mask_values says, so masks whose background is not stored as 0 work with resize: pad too
    box = resize(Image.new("L", (width, height), 255), size, policy, kind="mask").getbbox()
    write_png(dst_root / dataset / FULL_MASKS / f"{stem}.png", values, PNG_LEVEL, atomic=False)
    if box is None:  # never: the image's own area is non-empty at any size
        raise ValueError(f"{source}: the image lies nowhere in the prepared {size} x {size} square")
    return {
        "path": f"{dataset}/{IMAGES}/{rel.name}",  # a name, not a file: the pixels are in the arrays
        "source": relative,
        "target": f"{dataset}/{MASKS}/{stem}.png",
        "mask_full": f"{dataset}/{FULL_MASKS}/{stem}.png",
        "mask_source": f"{rel.parent.parent.as_posix()}/{MASKS}/{Path(target).name}",
        "stratum": None,  # random validation split: a per-image "class" has no meaning here
        "width": width,
        "height": height,
        "content_box": list(box),
        PIXELS: pixels,
    }


def prepared_path(record: Record, key: Literal["target", "mask_full"]) -> Path:
    """Absolute path of a prepared file named in a manifest record."""
    return prepared_root(record) / record[key]


def prepared_classes(vmap: ValueMap, record: Record) -> np.ndarray:
    """Class ids of a record's prepared mask; padding outside ``content_box`` is class 0."""
    path = prepared_path(record, "target")
    values = open_mask(path)
    x0, y0, x1, y1 = record.get("content_box") or (0, 0, values.shape[1], values.shape[0])
    if (x0, y0, x1, y1) == (0, 0, values.shape[1], values.shape[0]):
        return vmap.to_classes(values, path)
    classes = np.zeros(values.shape, np.uint8)
    classes[y0:y1, x0:x1] = vmap.to_classes(values[y0:y1, x0:x1], path)
    return classes


class MaskTarget:
    """fastai ``get_y``: prepared mask of a record -> uint8 class ids (picklable for workers)."""

    def __init__(self, pairs: list[list[int]], n_classes: int):
        self.pairs, self.n_classes = pairs, n_classes
        self._map: ValueMap | None = None

    def __call__(self, record: Record) -> np.ndarray:
        if self._map is None:
            self._map = ValueMap([(v, c) for v, c in self.pairs], self.n_classes)
        return prepared_classes(self._map, record)


def dataloaders(train: Sequence[Record], valid: Sequence[Record], classes: list[str], all_params: Any, norm: Any):
    """(image, class-id mask) batches from the prepared arrays; every geometric change moves both."""
    from dermdl.batches import Masks, array_dataloaders, augmentation

    return array_dataloaders(train, valid, Masks, all_params, norm, augmentation(all_params.train))


def prepare_settings(params: Any) -> dict[str, Any]:
    """What the prepared class-id maps depend on besides the images (preprocess fingerprint)."""
    return {"segmentation": [params.segmentation.codes, params.segmentation.value_map()]}


def target_array(params: Any) -> MaskTarget:
    """Preprocess stacks each prepared mask's class ids (padding = class 0) into ``targets.npy``."""
    return MaskTarget(value_map(params).to_json(), len(params.segmentation.codes))
