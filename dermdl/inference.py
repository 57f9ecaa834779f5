"""What classification and segmentation share at inference: the model's input tensor and TTA.

Test-time augmentation (``infer.tta``) averages the softmax over flips (``flips``: 4 views) or over
flips and 90° rotations (``dihedral``: 8 views). Skin images have no canonical orientation, so every
view is an equally valid photograph of the lesion; averaging cancels orientation-specific errors at
4-8x the inference cost. Spatial outputs (masks) are mapped back to the original orientation first.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from dermdl.models import ModelConfig
from dermdl.prepare import resize

TTA_VIEWS = {"none": 1, "flips": 4, "dihedral": 8}


def to_input_tensor(image: Image.Image, config: ModelConfig) -> torch.Tensor:
    """Re-apply the training geometry (preprocess resize, then input size) and normalisation."""
    image = resize(image, config.preprocess_size, config.resize)
    image = image.resize((config.input_size, config.input_size), Image.Resampling.BILINEAR)
    array = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (array - torch.tensor(config.mean).view(3, 1, 1)) / torch.tensor(config.std).view(3, 1, 1)


def view(x: torch.Tensor, index: int) -> torch.Tensor:
    """View ``index`` (0-7) of NCHW images: bit 0 flips left-right, bit 1 up-down, bit 2 transposes."""
    if index & 1:
        x = x.flip(-1)
    if index & 2:
        x = x.flip(-2)
    if index & 4:
        x = x.transpose(-1, -2)
    return x


def unview(x: torch.Tensor, index: int) -> torch.Tensor:
    """The inverse of :func:`view`: undo the transpose first, then the flips."""
    if index & 4:
        x = x.transpose(-1, -2)
    if index & 2:
        x = x.flip(-2)
    if index & 1:
        x = x.flip(-1)
    return x


def softmax_tta(model: torch.nn.Module, batch: torch.Tensor, tta: str, spatial: bool) -> torch.Tensor:
    """Softmax over dim 1, averaged over the TTA views; ``spatial`` outputs are un-viewed before averaging."""
    if tta not in TTA_VIEWS:
        raise ValueError(f"infer.tta={tta!r}: choose one of {', '.join(TTA_VIEWS)}")

    def probs(index: int) -> torch.Tensor:
        # NHWC input: oneDNN's channels-last convolutions, ~2x faster on CPU (a no-op for the result)
        p = torch.softmax(model(view(batch, index).contiguous(memory_format=torch.channels_last)).float(), dim=1)
        return unview(p, index) if spatial else p

    total = probs(0)
    for index in range(1, TTA_VIEWS[tta]):
        total = total + probs(index)
    return total / TTA_VIEWS[tta]


def windows_tensor(windows: np.ndarray, config: ModelConfig, device: torch.device | str = "cpu") -> torch.Tensor:
    """(n, t, t, 3) uint8 tiles of a large image -> the normalised (n, 3, s, s) model input: each tile is
    resized to the input size like a training patch (``infer.tile_size``, :mod:`dermdl.tiling`)."""
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(windows)).to(device).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-1] != config.input_size or x.shape[-2] != config.input_size:
        x = F.interpolate(x, size=(config.input_size,) * 2, mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(config.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(config.std, device=device).view(1, 3, 1, 1)
    return (x - mean) / std
