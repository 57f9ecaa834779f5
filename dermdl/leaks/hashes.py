"""Leak check: per-image fingerprints (SHA-256, pHash, colour and brightness statistics, thumbnails)."""

from __future__ import annotations

import hashlib
import math
import multiprocessing as mp
import os
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from dermdl.crypto import read_input
from dermdl.images import ImageError, open_rgb
from dermdl.leaks.tuning import BANDPASS, COARSE, COLOUR_SIDE, MARGIN, SIDE

# --- fingerprints -------------------------------------------------------------------------------------


def _dihedral(array: np.ndarray) -> list[np.ndarray]:
    """The 8 flips/rotations of an image, in a fixed order (index 0 is the image itself)."""
    out = []
    for k in range(4):
        rotated = np.rot90(array, k)
        out += [np.ascontiguousarray(rotated), np.ascontiguousarray(rotated[:, ::-1])]
    return out


def _area_resize(array: np.ndarray, side: int) -> np.ndarray:
    """Resize so that width * height ~ side**2, keeping the aspect ratio.

    Why area: a crop of a picture then relates to the picture by ONE isotropic scale (plus a shift),
    whatever the crop's aspect ratio, so alignment searches one scale instead of two.
    """
    h, w = array.shape[:2]
    f = side / math.sqrt(h * w)
    size = (max(8, round(w * f)), max(8, round(h * f)))
    return cv2.resize(array, size, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)


def _zscore_rows(m: np.ndarray) -> np.ndarray:
    m = m.astype(np.float32) - m.mean(axis=-1, keepdims=True, dtype=np.float32)
    return m / (np.linalg.norm(m, axis=-1, keepdims=True) + 1e-6)


def _phash(square_gray: np.ndarray) -> np.ndarray:
    """64-bit DCT perceptual hashes of the 8 flips/rotations (uint64 array of shape (8,))."""
    small = cv2.resize(square_gray, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    hashes = np.zeros(8, np.uint64)
    for i, variant in enumerate(_dihedral(small)):
        block = cv2.dct(variant)[:8, :8].ravel()
        hashes[i] = np.packbits(block > np.median(block[1:])).view(">u8")[0]
    return hashes


_R = 64
_YY, _XX = np.mgrid[0:_R, 0:_R]
_RADIUS = np.hypot(_YY - (_R - 1) / 2, _XX - (_R - 1) / 2) / (_R / 2)
_DISC = _RADIUS < 0.7
_RING_INDEX = np.minimum((_RADIUS / 0.1).astype(int), 10).ravel()  # 10 rings of width 0.1, 10 = outside


@dataclass
class Fingerprint:
    """What the leak check keeps of one image (about 8 KB)."""

    sha256: str
    gray: np.ndarray  # uint8 thumbnail, ~SIDE x SIDE, aspect kept
    colour: np.ndarray  # uint8 RGB thumbnail, ~COLOUR_SIDE x COLOUR_SIDE, aspect kept
    small: np.ndarray  # float32 COARSE x COARSE squished grayscale
    stats: np.ndarray  # float32 (25,): Lab mean/std/quantiles of the central disc + radial profile
    coarse: np.ndarray  # float32 (8, 64): z-scored 8x8 brightness maps of the centre, 8 variants
    phash: np.ndarray  # uint64 (8,): pHash of the 8 variants
    structure: float  # band-pass standard deviation of the central part (0 = flat image)


def fingerprint(path: str | os.PathLike) -> Fingerprint:
    """Fingerprint one image file; raises :class:`dermdl.images.ImageError` for unreadable files."""
    path = Path(path)
    rgb = np.asarray(open_rgb(path))  # first: an unreadable (or undecryptable) file is an ImageError
    digest = hashlib.sha256(read_input(path)).hexdigest()  # content, not its (randomised) encryption
    colour = _area_resize(rgb, COLOUR_SIDE)
    gray = _area_resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), SIDE).astype(np.float32)
    square = cv2.resize(rgb, (_R, _R), interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(square, cv2.COLOR_RGB2LAB).astype(np.float32)  # 8-bit Lab: L, a, b in 0..255
    disc = lab[_DISC]
    lum = lab[..., 0]
    rings = np.bincount(_RING_INDEX, weights=lum.ravel(), minlength=11)[:10] / np.maximum(
        np.bincount(_RING_INDEX, minlength=11)[:10], 1
    )
    stats = np.concatenate([disc.mean(0), disc.std(0), np.percentile(disc, [10, 50, 90], axis=0).ravel(), rings])
    m = round(_R * 0.15)
    coarse = cv2.resize(
        cv2.GaussianBlur(lum[m : _R - m, m : _R - m], (0, 0), 2.0), (8, 8), interpolation=cv2.INTER_AREA
    )
    h, w = gray.shape
    centre = _bandpass(gray)[round(h * MARGIN) : h - round(h * MARGIN), round(w * MARGIN) : w - round(w * MARGIN)]
    return Fingerprint(
        sha256=digest,
        gray=np.clip(np.rint(gray), 0, 255).astype(np.uint8),
        colour=colour,
        small=cv2.resize(gray, (COARSE, COARSE), interpolation=cv2.INTER_AREA),
        stats=stats.astype(np.float32),
        coarse=_zscore_rows(np.stack([v.ravel() for v in _dihedral(coarse)])),
        phash=_phash(lum),
        structure=float(centre.std()),
    )


def _fingerprint_or_error(path: Path) -> Fingerprint | ImageError:
    try:
        return fingerprint(path)
    except ImageError as exc:
        return exc
    except OSError as exc:
        return ImageError(
            path,
            f"cannot read the file ({exc.strerror or exc})",
            "check that it exists and that you have permission to read it",
        )


def _pool(workers: int, initializer=None, initargs=()) -> Executor:
    """Worker processes (forked: they inherit the fingerprints without copying) or, where fork is
    unavailable, threads (OpenCV and image decoding release the GIL)."""
    if "fork" in mp.get_all_start_methods():
        return ProcessPoolExecutor(
            max_workers=workers, mp_context=mp.get_context("fork"), initializer=initializer, initargs=initargs
        )
    if initializer is not None:
        initializer(*initargs)
    return ThreadPoolExecutor(max_workers=workers)


def fingerprints(paths: Sequence[Path], workers: int = 2) -> list[Fingerprint | ImageError]:
    """Fingerprint many files (``workers`` processes); an unreadable file gives its ImageError. Order kept."""
    workers = max(1, min(workers, os.cpu_count() or 1))
    if workers == 1 or len(paths) < 64:
        return [_fingerprint_or_error(p) for p in paths]
    with _pool(workers) as pool:
        return list(pool.map(_fingerprint_or_error, paths, chunksize=max(1, min(64, len(paths) // (4 * workers)))))


def _bandpass(gray: np.ndarray) -> np.ndarray:
    gray = gray.astype(np.float32)
    return cv2.GaussianBlur(gray, (0, 0), BANDPASS[0]) - cv2.GaussianBlur(gray, (0, 0), BANDPASS[1])
