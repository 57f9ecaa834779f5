"""Acquisition shifts: what another clinic's camera does to an image, to test a model's robustness.

A model that only ever saw one dermatoscope is judged on copies of its test set as another device
might have taken them: a colour cast (white balance), darker or brighter illumination (gamma), blur
(focus, motion) and lower resolution (a cheaper sensor, upscaled again). Each shift is a pure
function of uint8 RGB pixels and a severity; ``bench/robustness.py`` scores a model on all of them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter


def colour_cast(pixels: np.ndarray, strength: float) -> np.ndarray:
    """Warm (strength > 0) or cold (< 0) white balance: red up and blue down by ``strength``."""
    gains = np.array([1 + strength, 1.0, 1 - strength], dtype=np.float32)
    return np.clip(pixels.astype(np.float32) * gains, 0, 255).round().astype(np.uint8)


def illumination(pixels: np.ndarray, gamma: float) -> np.ndarray:
    """Gamma > 1 darkens, < 1 brightens (under- and over-exposure)."""
    return np.clip(255.0 * np.power(pixels / 255.0, gamma), 0, 255).round().astype(np.uint8)


def blur(pixels: np.ndarray, radius: float) -> np.ndarray:
    """Gaussian blur with ``radius`` in pixels of the image as given."""
    return np.asarray(Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(radius)))


def resolution(pixels: np.ndarray, factor: float) -> np.ndarray:
    """Down-sample by ``factor`` (< 1) and back up: detail lost, size kept."""
    height, width = pixels.shape[:2]
    small = Image.fromarray(pixels).resize(
        (max(1, round(width * factor)), max(1, round(height * factor))), Image.Resampling.BILINEAR
    )
    return np.asarray(small.resize((width, height), Image.Resampling.BILINEAR))


# name -> (shift, severity): moderate, plausible differences between devices
SHIFTS: dict[str, tuple[Callable[[np.ndarray, float], np.ndarray], float]] = {
    "warm cast": (colour_cast, 0.15),
    "cold cast": (colour_cast, -0.15),
    "dark": (illumination, 1.6),
    "bright": (illumination, 0.6),
    "blur": (blur, 1.5),
    "low resolution": (resolution, 0.4),
}
