"""Segmentation masks: stored values <-> class ids, predictions back at original resolution, overlays.

Why a value map instead of "whatever is in the PNG": real masks store 0/255 (HAM10000, ISIC, PH2),
0/1, or palette indices for multi-class grading. Training needs class ids 0..k-1 and the written
predictions must use the stored convention again, so both directions live here, in one place.

Why predictions are resampled from probabilities: the model sees the prepared geometry
(squish/pad/crop at ``preprocess.size``, then ``input_size``); mapping the class probabilities
back through exactly that geometry and taking the argmax at the original resolution gives smooth,
aligned borders, where upsampling a label map would give blocks.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from dermdl.io import atomic_write_bytes
from dermdl.prepare import Geometry, geometry

# Overlay colours per class id (class 0, the background, is never painted).
COLOURS = np.array([(0, 0, 0), (255, 48, 48), (40, 150, 255), (255, 200, 0), (0, 200, 120),
                    (200, 80, 255), (255, 120, 200), (140, 90, 40)], dtype=np.uint8)


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
        raise ValueError(f"{path}: pixel values {bad.tolist()[:8]} are not in segmentation.mask_values "
                         f"({allowed}); run `dermdl validate` for the full list")

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
    matrix = np.array([[g.scale_x, 0.0, 0.5 * g.scale_x + g.offset_x - 0.5],
                       [0.0, g.scale_y, 0.5 * g.scale_y + g.offset_y - 0.5]])
    out = np.empty((k, height, width), dtype=np.float32)
    for c in range(k):
        out[c] = cv2.warpAffine(np.ascontiguousarray(probs[c], dtype=np.float32), matrix, (width, height),
                                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
    return out


def resize_probs(probs: np.ndarray, size: int) -> np.ndarray:
    """(k, s, s) -> (k, size, size), bilinear (model space -> prepared space for overlays)."""
    return np.stack([cv2.resize(np.asarray(p, dtype=np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
                     for p in probs])


def overlay(image: np.ndarray, classes: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """RGB image with every non-background class tinted and outlined in its colour."""
    out = image.astype(np.float32).copy()
    for cls in np.unique(classes):
        if cls == 0:
            continue
        colour = COLOURS[int(cls) % len(COLOURS)]
        inside = classes == cls
        out[inside] = (1 - alpha) * out[inside] + alpha * colour
    out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    for cls in np.unique(classes):
        if cls == 0:
            continue
        contours, _ = cv2.findContours((classes == cls).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, tuple(int(v) for v in COLOURS[int(cls) % len(COLOURS)]), 1)
    return out


def panels(image: np.ndarray, prediction: np.ndarray, truth: np.ndarray | None = None) -> np.ndarray:
    """Side by side: image | truth overlay (when known) | prediction overlay, white 2 px gaps."""
    tiles = [image] + ([overlay(image, truth)] if truth is not None else []) + [overlay(image, prediction)]
    gap = np.full((image.shape[0], 2, 3), 255, dtype=np.uint8)
    row = [tiles[0]]
    for tile in tiles[1:]:
        row += [gap, tile]
    return np.concatenate(row, axis=1)


def write_png(path: str | os.PathLike, array: np.ndarray, compress_level: int = 6, atomic: bool = True) -> None:
    """uint8 2-D -> L, uint16 2-D -> I;16, (h, w, 3) uint8 -> RGB; written atomically unless the caller
    writes into a folder that is itself renamed into place when complete (``atomic=False``: no fsync)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", compress_level=compress_level)
    if atomic:
        atomic_write_bytes(path, buffer.getvalue())
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(buffer.getvalue())
