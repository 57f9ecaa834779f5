"""Resize every image once into the prepared arrays (dermdl.arrays).

Decoding and resizing full-resolution clinical photos every epoch dominates CPU training time, so
the preprocess stage does it once, in parallel worker processes. Source data is only ever read.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from dermdl import color
from dermdl.images import open_rgb

PNG_LEVEL = 1  # prepared mask PNGs: zlib level 1 encodes 5x faster than the default 6 (lossless either way)
_RESAMPLE = {"image": Image.Resampling.BICUBIC, "mask": Image.Resampling.NEAREST}


@dataclass(frozen=True)
class Geometry:
    """How an original image maps into the prepared square: scale, then offset (pad/crop).

    Kept explicit so targets (masks, boxes) and predictions can be mapped with the same numbers.
    """

    src_w: int
    src_h: int
    size: int
    scale_x: float
    scale_y: float
    offset_x: float
    offset_y: float

    def to_prepared(self, x: float, y: float) -> tuple[float, float]:
        return x * self.scale_x + self.offset_x, y * self.scale_y + self.offset_y

    def to_original(self, x: float, y: float) -> tuple[float, float]:
        return (x - self.offset_x) / self.scale_x, (y - self.offset_y) / self.scale_y


def geometry(width: int, height: int, size: int, policy: str) -> Geometry:
    if policy == "squish":
        return Geometry(width, height, size, size / width, size / height, 0.0, 0.0)
    if policy == "pad":
        scale = size / max(width, height)
        return Geometry(width, height, size, scale, scale, (size - width * scale) / 2, (size - height * scale) / 2)
    if policy == "crop":
        scale = size / min(width, height)
        return Geometry(width, height, size, scale, scale, (size - width * scale) / 2, (size - height * scale) / 2)
    raise ValueError(f"unknown resize policy {policy!r}; use squish, pad or crop")


def resize(image: Image.Image, size: int, policy: str, kind: str = "image") -> Image.Image:
    """Resize to ``size`` x ``size`` with the given policy; ``kind="mask"`` keeps label values (nearest)."""
    resample = _RESAMPLE[kind]
    if policy == "squish":
        return image.resize((size, size), resample)
    if policy == "pad":
        fill = 0 if kind == "mask" else (0, 0, 0)
        return ImageOps.pad(image, (size, size), method=resample, color=fill, centering=(0.5, 0.5))
    if policy == "crop":
        return ImageOps.fit(image, (size, size), method=resample, centering=(0.5, 0.5))
    raise ValueError(f"unknown resize policy {policy!r}; use squish, pad or crop")


def open_source(item: str | os.PathLike | np.ndarray, color_constancy: str = "none") -> Image.Image:
    """An image as the model's preparation starts from it: a file is decoded (EXIF-transposed, RGB)
    and colour-corrected (``preprocess.color_constancy``); prepared pixels are already both. While
    preprocess prepares a patch (``preprocess.patch_size``) it is the patch's window of the whole,
    colour-corrected image (dermdl.patches)."""
    if isinstance(item, np.ndarray):
        return Image.fromarray(item, "RGB")
    from dermdl.patches import cut_source

    return cut_source((str(item), color_constancy), lambda: color.apply(open_rgb(item), color_constancy))


def prepare_image(src: Path, size: int, policy: str, color_constancy: str = "none") -> tuple[int, int, np.ndarray]:
    """Decode, colour-correct and resize one image; (original width, height, uint8 pixels).

    The pixels go into the dataset's array (dermdl.arrays), not into a file of their own."""
    image = open_source(src, color_constancy)
    return (*image.size, np.asarray(resize(image, size, policy)))


def run_parallel(job: Callable, args: Sequence[tuple], workers: int) -> list:
    """Map ``job`` over ``args`` in worker processes (in-process when workers == 1, for debuggers)."""
    return list(iterate_parallel(job, args, workers))


def iterate_parallel(job: Callable, args: Sequence[tuple], workers: int) -> Iterator:
    """Results of ``job`` over ``args`` in order, as they arrive from the worker processes."""
    if workers <= 1 or len(args) < 2:
        yield from (job(*a) for a in args)
        return
    workers = min(workers, os.cpu_count() or 1, len(args))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(job, *zip(*args), chunksize=max(1, min(64, len(args) // (workers * 8))))
