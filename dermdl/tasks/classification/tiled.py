"""Classification of large images by tiles (``infer.tile_size``): each tile at the original resolution is
classified like a training patch, and the tiles' probabilities are aggregated (``infer.tile_aggregate``:
mean or max, :func:`dermdl.tiling.aggregate`) into one row per image."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from dermdl.evaluation.calibration import apply_temperature
from dermdl.inference import softmax_tta, windows_tensor
from dermdl.models import ModelConfig
from dermdl.prepare import open_source
from dermdl.tasks.classification.writer import applied_temperature
from dermdl.tiling import Tiles, aggregate, batches


@torch.inference_mode()
def tile_probabilities(
    model: torch.nn.Module, config: ModelConfig, image: np.ndarray, tile: int, overlap: float, bs: int, tta: str
) -> np.ndarray:
    """(n_tiles, k) softmax of each tile of an (H, W, 3) uint8 image, row by row."""
    device = next(model.parameters()).device
    model.eval()
    parts = [
        softmax_tta(model, windows_tensor(windows, config, device), tta, spatial=False).float().cpu().numpy()
        for _, windows in batches(image, tile, overlap, bs)
    ]
    return np.concatenate(parts)


def predict_tiled(
    model: torch.nn.Module, config: ModelConfig, paths: Sequence[Path], bs: int, tta: str, tiles: Tiles
) -> np.ndarray:
    """(n_images, k) probabilities: each image's tiles aggregated, then the model's temperature applied
    (as :func:`dermdl.tasks.classification.predict.predict` does)."""
    rows = []
    for path in paths:
        image = np.asarray(open_source(path, config.color_constancy))
        tile_probs = tile_probabilities(model, config, image, tiles.size, tiles.overlap, bs, tta)
        rows.append(aggregate(tile_probs, tiles.aggregate))
    probs = np.stack(rows).astype(np.float32) if rows else np.zeros((0, len(config.classes)), np.float32)
    temperature = applied_temperature(config)
    return probs if temperature == 1.0 else apply_temperature(probs, temperature).astype(np.float32)
