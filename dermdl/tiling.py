"""Large images by tiles: the grid, the blending weights and sliding-window prediction (task-independent).

Clinical photographs are 3000-6000 px; a network trained on 512-px patches predicts them tile by tile at
the original resolution. Overlapping tiles are blended with a Gaussian weight per tile (the centre of a
tile, where the network sees the most context, counts most), so no seams show where tiles meet.

Why not MONAI's ``sliding_window_inference``: MONAI is a heavy dependency for ~60 lines, and it accumulates
a weight map as large as the output. Here the tiles form a Cartesian grid, so the sum of the per-tile
weights at a pixel is the product of two 1-D sums: memory is the output array plus one batch of tiles.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

#: Weight at a tile's border relative to its centre: never 0, so a pixel that only one tile covers (the
#: image's corners) still gets that tile's prediction after normalisation.
MIN_WEIGHT = 1e-3
#: Gaussian sigma as a share of the tile size (MONAI's default, 1/8).
SIGMA_SCALE = 0.125
AGGREGATES = ("mean", "max")


@dataclass(frozen=True)
class Tiles:
    """How a task's ``predict_tiled`` cuts an image: ``size`` px tiles at the original resolution sharing
    ``overlap`` (a share of a tile) with their neighbours; classification ``aggregate`` (mean | max)."""

    size: int
    overlap: float = 0.25
    aggregate: str = "mean"


def tile_starts(length: int, tile: int, overlap: float = 0.0) -> list[int]:
    """Start offsets of the fewest tiles of ``tile`` px that cover ``length`` px with at least ``overlap``
    (a share of the tile) between neighbours, spread evenly so the last tile ends at the border.
    ``overlap=0`` gives the minimal overlap that still covers the image. One tile when it fits."""
    if tile < 1:
        raise ValueError(f"tile size {tile}: must be at least 1 px")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"tile overlap {overlap}: must be a share in [0, 1)")
    if length <= tile:
        return [0]
    stride = max(1, math.floor(tile * (1.0 - overlap)))
    n = math.ceil((length - tile) / stride) + 1
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def tile_grid(height: int, width: int, tile: int, overlap: float = 0.0) -> list[tuple[int, int]]:
    """(row, column) of each tile's top-left corner, row by row."""
    return [(r, c) for r in tile_starts(height, tile, overlap) for c in tile_starts(width, tile, overlap)]


def gaussian_weights(tile: int) -> np.ndarray:
    """1-D blending weight along one side of a tile (the 2-D weight is the outer product), peak 1."""
    x = np.arange(tile, dtype=np.float64) - (tile - 1) / 2.0
    w = np.exp(-(x**2) / (2.0 * (SIGMA_SCALE * tile) ** 2))
    return np.maximum(w, MIN_WEIGHT).astype(np.float32)


def _axis_norm(length: int, tile: int, overlap: float, weights: np.ndarray) -> np.ndarray:
    """Sum of the tiles' 1-D weights at each pixel along one axis."""
    total = np.zeros(length, dtype=np.float32)
    for start in tile_starts(length, tile, overlap):
        end = min(start + tile, length)
        total[start:end] += weights[: end - start]
    return total


def cut_tile(image: np.ndarray, row: int, col: int, tile: int) -> np.ndarray:
    """The (tile, tile, ...) window at (row, col); an image smaller than a tile is mirrored to fill it
    (a mirrored border is closer to real skin than black for a convolutional network)."""
    window = image[row : row + tile, col : col + tile]
    pad_h, pad_w = tile - window.shape[0], tile - window.shape[1]
    if pad_h or pad_w:
        pad = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (window.ndim - 2)
        window = np.pad(window, pad, mode="reflect" if min(window.shape[:2]) > 1 else "edge")
    return window


def batches(
    image: np.ndarray, tile: int, overlap: float, bs: int
) -> Iterator[tuple[list[tuple[int, int]], np.ndarray]]:
    """(corners, (n, tile, tile, C) windows) in groups of ``bs``: only one batch of tiles is in memory."""
    grid = tile_grid(image.shape[0], image.shape[1], tile, overlap)
    for start in range(0, len(grid), bs):
        corners = grid[start : start + bs]
        yield corners, np.stack([cut_tile(image, r, c, tile) for r, c in corners])


def sliding_window(
    image: np.ndarray,
    tile: int,
    overlap: float,
    predict: Callable[[np.ndarray], np.ndarray],
    channels: int,
    bs: int = 4,
) -> np.ndarray:
    """Per-pixel outputs (channels, H, W) for an (H, W, C) image: ``predict`` maps (n, tile, tile, C)
    windows to (n, channels, tile, tile); overlapping outputs are blended with Gaussian weights.

    The output array is accumulated in place, tile by tile, and normalised in place at the end."""
    height, width = image.shape[:2]
    w = gaussian_weights(tile)
    weight2d = np.outer(w, w)
    out = np.zeros((channels, height, width), dtype=np.float32)
    for corners, windows in batches(image, tile, overlap, bs):
        preds = np.asarray(predict(windows), dtype=np.float32)
        if preds.shape != (len(corners), channels, tile, tile):
            raise ValueError(
                f"tile predictions have shape {preds.shape}; expected {(len(corners), channels, tile, tile)}"
            )
        for (r, c), pred in zip(corners, preds):
            h, wd = min(tile, height - r), min(tile, width - c)
            out[:, r : r + h, c : c + wd] += pred[:, :h, :wd] * weight2d[:h, :wd]
    out /= _axis_norm(height, tile, overlap, w)[None, :, None]
    out /= _axis_norm(width, tile, overlap, w)[None, None, :]
    return out


def aggregate(probs: np.ndarray, how: str) -> np.ndarray:
    """One image's class probabilities from its tiles' (n, k): ``mean`` (every patch votes; robust when
    the lesion fills the image) or ``max`` (each class's highest patch probability, renormalised to sum
    to 1: a small lesion seen in one patch is not averaged away by healthy skin)."""
    if how not in AGGREGATES:
        raise ValueError(f"infer.tile_aggregate={how!r}: choose one of {', '.join(AGGREGATES)}")
    probs = np.asarray(probs, dtype=np.float64)
    if how == "mean":
        return probs.mean(axis=0)
    top = probs.max(axis=0)
    return top / top.sum()
