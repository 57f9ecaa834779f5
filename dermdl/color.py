"""Colour constancy: remove the illuminant's colour cast before a model sees an image.

Dermoscopes and clinic cameras differ in light source and white balance; models trained on one
source lose accuracy on another. Shades of Gray (Finlayson & Trezzi 2004; used by ISIC 2018/2019
winners, Barata et al. 2015) estimates the illuminant per image as the Minkowski p-norm mean of each
channel (p = 6 between grey-world, p = 1, and max-RGB, p = inf) and rescales the channels so that
the estimated illuminant becomes neutral grey. Applied identically at preprocess and predict time.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from dermdl.options import COLOR_CONSTANCY

POWER = 6


def shades_of_gray(pixels: np.ndarray, power: int = POWER) -> np.ndarray:
    """uint8 (h, w, 3) -> uint8 (h, w, 3) with the estimated illuminant mapped to neutral grey."""
    values = pixels.astype(np.float32)
    illuminant = np.power(np.mean(np.power(values, power), axis=(0, 1)), 1.0 / power)
    norm = float(np.sqrt(np.sum(illuminant**2)))
    if norm == 0:  # an all-black image has no illuminant to correct
        return pixels
    gains = 1.0 / (np.maximum(illuminant / norm, 1e-6) * np.sqrt(3.0))
    return np.clip(values * gains, 0, 255).round().astype(np.uint8)


def apply(image: Image.Image, method: str) -> Image.Image:
    if method == "none":
        return image
    if method == "shades_of_gray":
        return Image.fromarray(shades_of_gray(np.asarray(image)), "RGB")
    raise ValueError(f"unknown colour constancy {method!r}; use one of {', '.join(COLOR_CONSTANCY)}")
