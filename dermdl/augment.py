"""Augmentation of whole batches as tensors, on the training device; masks and boxes move with images.

Dermoscopy has no canonical orientation, so every sample gets one of the 8 flips/90° turns (nearly
free: memory moves); a rotation within ±``max_rotate`` on top makes every angle equally likely.
Rotation and zoom are one ``grid_sample`` per batch (free on a GPU, ~2% of a CPU step at 128 px);
lighting and colour (per-channel gains, saturation) are a few multiplies. Random numbers come from
torch's global CPU generator, so a seeded run is reproducible and a resumed run (which restores that
generator) continues identically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augmentation:
    dihedral: bool = True
    max_rotate: float = 0.0  # degrees, on top of the dihedral views
    max_zoom: float = 1.0  # zoom in by a factor in [1, max_zoom]
    max_lighting: float = 0.0  # brightness and contrast factors in [1 - l, 1 + l]
    max_color: float = 0.0  # per-channel gains and saturation in [1 - c, 1 + c] (white balance, camera)
    boxes: bool = False  # detection: only transforms boxes follow exactly (dihedral, lighting)

    @property
    def affine(self) -> bool:
        return not self.boxes and (self.max_rotate > 0 or self.max_zoom > 1)


def _flip_where(x: torch.Tensor, chosen: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    shape = (-1,) + (1,) * (x.dim() - 1)
    return torch.where(chosen.view(shape), x.flip(dims), x)


def dihedral(x: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
    """Per-sample view of square (N, ..., H, W) tensors: bit 0 flips left-right, bit 1 up-down, bit 2
    transposes (the order of :func:`dermdl.inference.view`)."""
    views = views.to(x.device)
    x = _flip_where(x, views & 1 > 0, (-1,))
    x = _flip_where(x, views & 2 > 0, (-2,))
    shape = (-1,) + (1,) * (x.dim() - 1)
    return torch.where((views & 4 > 0).view(shape), x.transpose(-1, -2), x)


def dihedral_boxes(boxes: torch.Tensor, view: int, size: float) -> torch.Tensor:
    """xyxy boxes of one image under view ``view`` of its ``size`` x ``size`` square."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    if view & 1:
        x0, x1 = size - x1, size - x0
    if view & 2:
        y0, y1 = size - y1, size - y0
    if view & 4:
        x0, y0, x1, y1 = y0, x0, y1, x1
    return torch.stack([x0, y0, x1, y1], -1)


def _affine(images: torch.Tensor, masks: torch.Tensor | None, aug: Augmentation):
    n = images.shape[0]
    angle = (torch.rand(n) * 2 - 1) * math.radians(aug.max_rotate)
    scale = 1 / (1 + torch.rand(n) * (aug.max_zoom - 1))  # sample a smaller region = zoom in
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    zero = torch.zeros(n)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(images.device, images.dtype), list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if masks is not None:
        masks = F.grid_sample(
            masks[:, None].to(images.dtype), grid, mode="nearest", padding_mode="reflection", align_corners=False
        )[:, 0].to(masks.dtype)
    return images, masks


def _lighting(images: torch.Tensor, strength: float) -> torch.Tensor:
    n = images.shape[0]
    gain, contrast = (1 + (torch.rand(2, n, 1, 1, 1) * 2 - 1) * strength).to(images.device, images.dtype)
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return ((images - mean) * contrast + mean * gain).clamp_(0, 1)


def _color(images: torch.Tensor, strength: float) -> torch.Tensor:
    """Another camera or light: per-channel gains (a colour cast), then more or less saturation."""
    n = images.shape[0]
    gains = (1 + (torch.rand(n, 3, 1, 1) * 2 - 1) * strength).to(images.device, images.dtype)
    saturation = (1 + (torch.rand(n, 1, 1, 1) * 2 - 1) * strength).to(images.device, images.dtype)
    images = images * gains
    grey = images.mean(dim=1, keepdim=True)
    return (grey + (images - grey) * saturation).clamp_(0, 1)


def augment_batch(
    images: torch.Tensor, aug: Augmentation, masks: torch.Tensor | None = None, boxes: list[torch.Tensor] | None = None
):
    """(images in [0, 1], masks, boxes) augmented; masks (N, H, W) and boxes (xyxy per image) follow."""
    if aug.dihedral:
        views = torch.randint(0, 8, (images.shape[0],))
        images = dihedral(images, views)
        if masks is not None:
            masks = dihedral(masks, views)
        if boxes is not None:
            boxes = [dihedral_boxes(b, int(v), images.shape[-1]) for b, v in zip(boxes, views)]
    if aug.affine:
        images, masks = _affine(images, masks, aug)
    if aug.max_lighting > 0:
        images = _lighting(images, aug.max_lighting)
    if aug.max_color > 0:
        images = _color(images, aug.max_color)
    return images, masks, boxes
