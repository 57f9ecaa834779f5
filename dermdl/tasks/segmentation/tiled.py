"""Segmentation of large images by tiles at the original resolution (``infer.tile_size``).

Each ``tile_size`` px window of the original photograph is resized to the model's input size (the geometry
of a training patch), its class probabilities are resized back and blended into one (k, H, W) array by
:func:`dermdl.tiling.sliding_window`: memory is that array plus one batch of tiles, whatever the image size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from dermdl.inference import softmax_tta, windows_tensor
from dermdl.models import ModelConfig
from dermdl.prepare import open_source
from dermdl.tasks.segmentation.data import model_geometry
from dermdl.tasks.segmentation.writer import SegPrediction
from dermdl.tiling import Tiles, sliding_window


def tile_predictor(model: torch.nn.Module, config: ModelConfig, tta: str) -> Callable[[np.ndarray], np.ndarray]:
    """``f((n, t, t, 3) uint8 windows) -> (n, k, t, t)`` class probabilities."""
    device = next(model.parameters()).device

    @torch.inference_mode()
    def predict(windows: np.ndarray) -> np.ndarray:
        tile = windows.shape[1]
        probs = softmax_tta(model, windows_tensor(windows, config, device), tta, spatial=True)
        if tile != config.input_size:
            probs = F.interpolate(probs, size=(tile, tile), mode="bilinear", align_corners=False)
        return probs.float().cpu().numpy()

    return predict


def predict_image(
    model: torch.nn.Module,
    config: ModelConfig,
    image: np.ndarray,
    tile: int,
    overlap: float,
    bs: int = 4,
    tta: str = "none",
) -> np.ndarray:
    """(k, H, W) float32 class probabilities of an (H, W, 3) uint8 image at its own resolution."""
    model.eval()
    return sliding_window(image, tile, overlap, tile_predictor(model, config, tta), len(config.classes), bs)


def to_model_space(full: np.ndarray, config: ModelConfig) -> np.ndarray:
    """(k, H, W) original-resolution probabilities -> (k, s, s) in model space (the training geometry),
    for the overlays and probability images that the writer draws at the prepared size."""
    k, height, width = full.shape
    s = config.input_size
    g = model_geometry(width, height, config.preprocess_size, s, config.resize)
    matrix = np.array(
        [[g.scale_x, 0.0, 0.5 * g.scale_x + g.offset_x - 0.5], [0.0, g.scale_y, 0.5 * g.scale_y + g.offset_y - 0.5]]
    )
    return np.stack(
        [cv2.warpAffine(np.ascontiguousarray(p, dtype=np.float32), matrix, (s, s), flags=cv2.INTER_AREA) for p in full]
    )


def predict_tiled(
    model: torch.nn.Module, config: ModelConfig, paths: Sequence[Path], bs: int, tta: str, tiles: Tiles
) -> list[SegPrediction]:
    """Each image predicted by tiles: ``full`` holds the (k, H, W) float16 probabilities at the original
    resolution (the masks are written from them), ``probs`` their model-space view (overlays)."""
    out = []
    for path in paths:
        image = np.asarray(open_source(path, config.color_constancy))
        full = predict_image(model, config, image, tiles.size, tiles.overlap, bs, tta)
        out.append(
            SegPrediction(
                to_model_space(full, config).astype(np.float16), image.shape[1], image.shape[0], full.astype(np.float16)
            )
        )
    return out
