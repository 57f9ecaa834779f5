"""Leak check: training images that reappear in a test set, exactly, nearly, or as the same lesion.

Why: a test image that is also (a copy of) a training image, or that shows the same lesion or patient
as a training image, inflates every reported metric. Real collections (HAM10000, ISIC, clinic exports)
contain all three kinds, so ``validate-layout`` refuses them unless ``data.allow_leaks: true``.

Three kinds of leak between any training dataset (``wl_train``, ``sl_train``) and any test dataset
(``sl_tests``), reported pair by pair:

``exact``
    identical file bytes (SHA-256).
``near``
    the same picture after resizing, recompression (JPEG), flips, 90-degree rotations or a small crop
    (5 % reliably, about 10 % per side usually). Why not a perceptual hash alone: dermoscopy images are
    alike (a round lesion on skin inside a dark dermoscope circle), so a 64-bit hash puts different
    lesions as close together as a cropped copy and its original. The check therefore uses the hash to
    find candidates and then proves a duplicate by aligning the two images. Deterministic steps:

    1. *Candidates.* Per image: a 64-bit DCT perceptual hash (pHash of a 32 x 32 grayscale downscale)
       of each of the 8 flips/rotations, colour statistics and a radial brightness profile of the
       central disc, and an 8 x 8 coarse brightness map. Each test image is paired with its nearest
       training images under these (``CANDIDATES_PER_TEST`` + ``CANDIDATES_PHASH``), each training
       image with its nearest test images (``CANDIDATES_PER_TRAIN``); all of them are flip/rotation
       invariant and change little under crops, so a copy ranks at or near the top.
    2. *Alignment.* The test image's 8 variants are correlated with the training image on 16 px
       thumbnails (all in one matrix product) to pick the promising flips/rotations; for those, the
       centre of the band-passed thumbnail is slid over the training image at 5 scales (0.87-1.15) at
       half size (pairs correlating below ``HALF_MIN`` stop here), then at full size (64 px, aspect
       kept) with the scale refined to ~0.5 % and the shift to sub-pixel precision.
    3. *Verdict.* At that alignment, away from dark dermoscope borders, the fine structure must
       correlate (``ncc >= NEAR_NCC``) AND the colours agree (mean absolute difference ``<= NEAR_COLOUR``
       of 255); or, for plain images whose only structure is a small lesion, the colours agree almost
       exactly (``<= SAME_COLOUR``) with ``ncc >= NEAR_NCC_SAME_COLOUR``. Different lesions that merely
       look alike fail one of the two; a resampled, recompressed, flipped or cropped copy passes both.
       Images without structure (a flat colour) are only compared exactly. ``distance`` = ``1 - ncc``.

    Tuning: on the demo data (480 images, seeds 0-2, 32-128 px) no distinct pair passes; on HAM10000
    split per image, the 18 passing pairs are 17 re-shoots of one lesion and one naevus filed under two
    lesion ids (ISIC_0029152 / ISIC_0033173).
``group``
    both images belong to the same group (lesion or patient id) according to a CSV mapping image ->
    group; ``dermdl import`` writes one (``groups.csv`` in each layout root).

Speed: ~1.5 ms of CPU per image for the fingerprints and ~0.8 ms per candidate pair, in worker
processes: 10,015 HAM10000 images (200 x 150; 8,013 training vs 2,002 test) take ~31 s of CPU,
about 20 s on 2 free cores.
"""

from __future__ import annotations

import csv
import hashlib
import math
import multiprocessing as mp
import os
import sys
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from dermdl.images import ImageError, is_ignored, is_image_file, open_rgb
from dermdl.layout.report import Report

# --- tuning (chosen on the demo data and HAM10000; see tests/test_leaks.py) -------------------------
SIDE = 64                      # grayscale thumbnail: about SIDE x SIDE pixels, aspect ratio kept
COLOUR_SIDE = 32               # colour thumbnail for the colour agreement test
COARSE = 16                    # side of the squished thumbnail of the coarse alignment search
COARSE_TEMPLATE = 12           # side of the coarse templates slid over it (5 x 5 shifts)
SCALES = (0.87, 0.93, 1.0, 1.07, 1.15)  # test-image scales searched coarsely (crops up to ~10 % per side)
MARGIN = 0.12                  # border of the test thumbnail left out of the fine template (room to shift)
BANDPASS = (0.7, 2.0)          # difference of Gaussians (sigmas in thumbnail pixels): the fine structure
DARK = 40                      # grey level below which a pixel is dermoscope vignette/background
NEAR_NCC = 0.85                # minimum structural correlation of a near duplicate
NEAR_COLOUR = 3.5              # maximum mean absolute colour difference (0-255) of a near duplicate
SAME_COLOUR = 1.75             # ... or: colours agree this closely (then NEAR_NCC_SAME_COLOUR suffices, for
NEAR_NCC_SAME_COLOUR = 0.7     #     plain images whose only structure is a small lesion and JPEG noise)
COLOUR_BLUR = 1.2              # blur (colour-thumbnail pixels) before comparing colours
MIN_STRUCTURE = 0.5            # band-pass standard deviation (grey levels) below which an image is "flat"
MIN_OVERLAP = 0.25             # share of the aligned area that must be usable (not dark) to compare
CANDIDATES_PER_TEST = 10       # nearest training images per test image that are aligned
CANDIDATES_PER_TRAIN = 2       # nearest test images per training image that are aligned
CANDIDATES_PHASH = 3           # nearest training images by pHash per test image that are aligned
MIN_VARIANTS = 2               # flip/rotation variants aligned finely per pair: at least the 2 best coarse ones
VARIANT_SLACK = 0.04           # ... and every variant whose coarse score is this close to the best one
MAX_COLOUR_SHIFT = 10.0        # pairs whose central colours differ more (CIELAB delta E) are not aligned
HALF_MIN = 0.4                 # pairs whose best half-size correlation is lower are rejected before refining

TRAIN_ROLES = ("wl_train", "sl_train")
TEST_ROLES = ("sl_tests",)
KINDS = ("exact", "near", "group")


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
_RING_INDEX = np.minimum((_RADIUS / 0.1).astype(int), 10).ravel()   # 10 rings of width 0.1, 10 = outside


@dataclass
class Fingerprint:
    """What the leak check keeps of one image (about 8 KB)."""

    sha256: str
    gray: np.ndarray      # uint8 thumbnail, ~SIDE x SIDE, aspect kept
    colour: np.ndarray    # uint8 RGB thumbnail, ~COLOUR_SIDE x COLOUR_SIDE, aspect kept
    small: np.ndarray     # float32 COARSE x COARSE squished grayscale
    stats: np.ndarray     # float32 (25,): Lab mean/std/quantiles of the central disc + radial profile
    coarse: np.ndarray    # float32 (8, 64): z-scored 8x8 brightness maps of the centre, 8 variants
    phash: np.ndarray     # uint64 (8,): pHash of the 8 variants
    structure: float      # band-pass standard deviation of the central part (0 = flat image)


def fingerprint(path: str | os.PathLike) -> Fingerprint:
    """Fingerprint one image file; raises :class:`dermdl.images.ImageError` for unreadable files."""
    path = Path(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    rgb = np.asarray(open_rgb(path))
    colour = _area_resize(rgb, COLOUR_SIDE)
    gray = _area_resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), SIDE).astype(np.float32)
    square = cv2.resize(rgb, (_R, _R), interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(square, cv2.COLOR_RGB2LAB).astype(np.float32)   # 8-bit Lab: L, a, b in 0..255
    disc = lab[_DISC]
    lum = lab[..., 0]
    rings = np.bincount(_RING_INDEX, weights=lum.ravel(), minlength=11)[:10] / np.maximum(
        np.bincount(_RING_INDEX, minlength=11)[:10], 1)
    stats = np.concatenate([disc.mean(0), disc.std(0), np.percentile(disc, [10, 50, 90], axis=0).ravel(), rings])
    m = round(_R * 0.15)
    coarse = cv2.resize(cv2.GaussianBlur(lum[m:_R - m, m:_R - m], (0, 0), 2.0), (8, 8), interpolation=cv2.INTER_AREA)
    h, w = gray.shape
    centre = _bandpass(gray)[round(h * MARGIN):h - round(h * MARGIN), round(w * MARGIN):w - round(w * MARGIN)]
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
        return ImageError(path, f"cannot read the file ({exc.strerror or exc})",
                          "check that it exists and that you have permission to read it")


def _pool(workers: int, initializer=None, initargs=()) -> Executor:
    """Worker processes (forked: they inherit the fingerprints without copying) or, where fork is
    unavailable, threads (OpenCV and image decoding release the GIL)."""
    if "fork" in mp.get_all_start_methods():
        return ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("fork"),
                                   initializer=initializer, initargs=initargs)
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


# --- alignment and verification of one pair -------------------------------------------------------------


def _bandpass(gray: np.ndarray) -> np.ndarray:
    gray = gray.astype(np.float32)
    return cv2.GaussianBlur(gray, (0, 0), BANDPASS[0]) - cv2.GaussianBlur(gray, (0, 0), BANDPASS[1])


def _template(image: np.ndarray, scale: float) -> tuple[np.ndarray, tuple[float, float]]:
    """Centre of ``image`` scaled by ``scale``; template pixel u shows image pixel (u + offset) / scale."""
    h, w = image.shape[:2]
    tw, th = max(4, round(w * scale * (1 - 2 * MARGIN))), max(4, round(h * scale * (1 - 2 * MARGIN)))
    ox, oy = float(round((w * scale - tw) / 2)), float(round((h * scale - th) / 2))  # whole pixels: exact at 1
    matrix = np.float32([[scale, 0, -ox], [0, scale, -oy]])
    return cv2.warpAffine(image, matrix, (tw, th), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT), (ox, oy)


def _coarse_templates(small: np.ndarray) -> np.ndarray:
    """(8 * len(SCALES), COARSE_TEMPLATE**2) z-scored centres of the 8 variants at every scale."""
    rows = []
    for variant in _dihedral(small):
        for s in SCALES:
            o = (COARSE * s - COARSE_TEMPLATE) / 2
            t = cv2.warpAffine(variant, np.float32([[s, 0, -o], [0, s, -o]]), (COARSE_TEMPLATE, COARSE_TEMPLATE),
                               flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            rows.append(t.ravel())
    return _zscore_rows(np.stack(rows))


def _coarse_windows(small: np.ndarray) -> np.ndarray:
    """(shifts, COARSE_TEMPLATE**2) z-scored windows of a training image's coarse thumbnail."""
    win = np.lib.stride_tricks.sliding_window_view(small, (COARSE_TEMPLATE, COARSE_TEMPLATE))
    return _zscore_rows(win.reshape(-1, COARSE_TEMPLATE * COARSE_TEMPLATE))


@dataclass
class _Test:
    """A test image prepared for alignment (built once, used for all its candidate pairs)."""

    fp: Fingerprint
    raw: list[np.ndarray]        # the 8 variants of the grayscale thumbnail (float32)
    bandpass: list[np.ndarray]   # ... band-passed
    colour: list[np.ndarray]     # ... of the colour thumbnail (float32)
    coarse: np.ndarray           # coarse templates, see _coarse_templates
    half: list[np.ndarray]       # the 8 variants of the band-passed half-size thumbnail (scale search)


def _half(gray: np.ndarray) -> np.ndarray:
    """Band-passed half-size thumbnail (same band as _bandpass, in half-size pixels)."""
    small = cv2.resize(gray.astype(np.float32), (max(4, gray.shape[1] // 2), max(4, gray.shape[0] // 2)),
                       interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(small, (0, 0), BANDPASS[0] / 2) - cv2.GaussianBlur(small, (0, 0), BANDPASS[1] / 2)


def _prepare_test(fp: Fingerprint) -> _Test:
    raw = _dihedral(fp.gray.astype(np.float32))
    return _Test(fp, raw, [_bandpass(g) for g in raw], _dihedral(fp.colour.astype(np.float32)),
                 _coarse_templates(fp.small), _dihedral(_half(fp.gray)))


def _coarse_search(trains: Sequence[Fingerprint], test: _Test) -> np.ndarray:
    """Best coarse correlation per (training image, variant, scale): shape (len(trains), 8, len(SCALES))."""
    windows = np.stack([_coarse_windows(t.small) for t in trains])          # (n, shifts, d)
    scores = (windows @ test.coarse.T).max(axis=1)                          # (n, 8 * scales)
    return scores.reshape(len(trains), 8, len(SCALES))


def _peak(surface: np.ndarray) -> tuple[float, float, float]:
    """Maximum of a correlation surface with a parabolic sub-pixel location: (value, x, y)."""
    _, value, _, (x, y) = cv2.minMaxLoc(surface)
    dx = dy = 0.0
    if 0 < x < surface.shape[1] - 1:
        a, b, c = surface[y, x - 1], surface[y, x], surface[y, x + 1]
        den = a - 2 * b + c
        dx = 0.5 * (a - c) / den if den < 0 else 0.0
    if 0 < y < surface.shape[0] - 1:
        a, b, c = surface[y - 1, x], surface[y, x], surface[y + 1, x]
        den = a - 2 * b + c
        dy = 0.5 * (a - c) / den if den < 0 else 0.0
    return float(value), x + float(np.clip(dx, -0.5, 0.5)), y + float(np.clip(dy, -0.5, 0.5))


def _masked_ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    a, b = a[mask], b[mask]
    a = a - a.mean()
    b = b - b.mean()
    den = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / den if den > 1e-9 else 0.0


@dataclass(frozen=True)
class Match:
    """How well a test image, aligned, reproduces a training image."""

    ncc: float          # correlation of the fine structure at the best alignment (1 = identical)
    colour: float       # mean absolute colour difference there (0-255)
    variant: int        # flip/rotation of the test image (0 = as is, 1 = mirrored, 2 = rotated 90 ...)
    scale: float        # test-image scale relative to the training image

    @property
    def duplicate(self) -> bool:
        """Structure AND colours agree; a nearly exact colour match needs less structure (plain images)."""
        return ((self.ncc >= NEAR_NCC and self.colour <= NEAR_COLOUR)
                or (self.ncc >= NEAR_NCC_SAME_COLOUR and self.colour <= SAME_COLOUR))


def _fine_score(target: np.ndarray, image: np.ndarray, scale: float) -> tuple[float, np.ndarray, tuple[float, float]]:
    templ, offset = _template(image, scale)
    if templ.shape[0] > target.shape[0] or templ.shape[1] > target.shape[1]:
        return -2.0, templ, offset
    return float(cv2.matchTemplate(target, templ, cv2.TM_CCOEFF_NORMED).max()), templ, offset


def _verify(train: Fingerprint, test: _Test, coarse: np.ndarray) -> Match | None:
    """Align the test image onto the training image and measure the agreement (None: not comparable).

    ``coarse`` (8, len(SCALES)) holds the coarse scores of the flip/rotation variants: the best ones
    (MIN_VARIANTS, VARIANT_SLACK) are slid over the training image at every scale of SCALES on half-size
    thumbnails; the best hypotheses are checked at full size, refined (scale by halving steps, shift to
    sub-pixel) and measured.
    """
    top = coarse.max(axis=1)
    ranked = sorted(range(8), key=lambda i: (-top[i], i))
    tried = [v for k, v in enumerate(ranked) if k < MIN_VARIANTS or top[v] >= top[ranked[0]] - VARIANT_SLACK]
    # scale search on the half-size thumbnails (4x cheaper); hopeless pairs stop here
    half = _half(train.gray)
    scores = sorted(((_fine_score(half, test.half[v], s)[0], -k, v, s) for v in tried for k, s in enumerate(SCALES)),
                    reverse=True)
    if scores[0][0] < HALF_MIN:
        return None
    # full-size check of the best half-size hypothesis, its neighbouring scales and the best other variant
    v0, k0 = scores[0][2], -scores[0][1]
    hypotheses = [(v0, SCALES[k]) for k in (k0 - 1, k0, k0 + 1) if 0 <= k < len(SCALES)]
    hypotheses += [(v, s) for _, _, v, s in scores if v != v0][:1]
    target = _bandpass(train.gray)
    th_, tw_ = target.shape
    best = None
    for v, s in hypotheses:
        value, templ, offset = _fine_score(target, test.bandpass[v], s)
        if best is None or value > best[0]:
            best = (value, v, s, templ, offset)
    peak, v, scale, templ, (ox, oy) = best
    if peak < -1:
        return None
    step = 0.035
    for _ in range(3):  # halve the scale step three times (~0.5 % at the end)
        for s in (scale - step, scale + step):
            value, t, offset = _fine_score(target, test.bandpass[v], s)
            if value > peak:
                peak, scale, templ, (ox, oy) = value, s, t, offset
        step /= 2
    _, x, y = _peak(cv2.matchTemplate(target, templ, cv2.TM_CCOEFF_NORMED))
    tx, ty = x - ox, y - oy   # test-variant pixel p -> training pixel scale * p + (tx, ty)
    matrix = np.float32([[scale, 0, tx], [0, scale, ty]])
    # usable area: inside the template's footprint, away from dark vignette/background in either image
    footprint = np.zeros((th_, tw_), np.uint8)
    x0, y0 = int(math.ceil(x)) + 1, int(math.ceil(y)) + 1
    x1, y1 = int(x + templ.shape[1]) - 1, int(y + templ.shape[0]) - 1
    if x1 - x0 < 8 or y1 - y0 < 8:
        return None
    footprint[y0:y1, x0:x1] = 1
    warped_raw = cv2.warpAffine(test.raw[v], matrix, (tw_, th_), flags=cv2.INTER_LINEAR)
    dark = ((cv2.GaussianBlur(train.gray, (0, 0), 1.0) < DARK) | (cv2.GaussianBlur(warped_raw, (0, 0), 1.0) < DARK))
    dark = cv2.dilate(dark.astype(np.uint8), np.ones((9, 9), np.uint8))
    usable = (footprint > 0) & (dark == 0)
    if usable.sum() < MIN_OVERLAP * footprint.sum():
        return None
    warped = cv2.warpAffine(test.bandpass[v], matrix, (tw_, th_), flags=cv2.INTER_LINEAR)
    ncc = _masked_ncc(warped, target, usable)
    # colours, on the colour thumbnails: colour_test c -> gray_test (c + .5) / r - .5 -> gray_train -> colour_train
    ch, cw = train.colour.shape[:2]
    fx, fy = cw / tw_, ch / th_
    colour_v = test.colour[v]
    rx, ry = colour_v.shape[1] / test.raw[v].shape[1], colour_v.shape[0] / test.raw[v].shape[0]
    m = np.float32([[scale * fx / rx, 0, fx * (scale * (0.5 / rx - 0.5) + tx + 0.5) - 0.5],
                    [0, scale * fy / ry, fy * (scale * (0.5 / ry - 0.5) + ty + 0.5) - 0.5]])
    warped_c = cv2.warpAffine(colour_v, m, (cw, ch), flags=cv2.INTER_LINEAR)
    usable_c = cv2.resize(usable.astype(np.float32), (cw, ch), interpolation=cv2.INTER_AREA) > 0.99
    if usable_c.sum() < 16:
        return None
    diff = np.abs(cv2.GaussianBlur(warped_c, (0, 0), COLOUR_BLUR)
                  - cv2.GaussianBlur(train.colour.astype(np.float32), (0, 0), COLOUR_BLUR))[usable_c]
    return Match(ncc=round(ncc, 4), colour=round(float(diff.mean()), 2), variant=v, scale=round(scale, 4))


def compare(train: Fingerprint, test: Fingerprint) -> Match | None:
    """Align one pair (library use and tests); None when either image is flat or they cannot overlap."""
    if min(train.structure, test.structure) < MIN_STRUCTURE:
        return None
    prepared = _prepare_test(test)
    return _verify(train, prepared, _coarse_search([train], prepared)[0])


# --- candidate pairs ------------------------------------------------------------------------------------


def _smallest(matrix: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k smallest entries of each row (all columns when k >= width)."""
    if k >= matrix.shape[1]:
        return np.argsort(matrix, axis=1, kind="stable")
    return np.argpartition(matrix, k - 1, axis=1)[:, :k]


def candidate_pairs(train: Sequence[Fingerprint], test: Sequence[Fingerprint], chunk: int = 512) -> set[tuple[int, int]]:
    """(train index, test index) pairs worth aligning: nearest neighbours under the global fingerprints."""
    if not train or not test:
        return set()
    stats_tr = np.stack([f.stats for f in train])
    stats_te = np.stack([f.stats for f in test])
    spread = np.concatenate([stats_tr, stats_te]).std(0) + 1e-3
    col_tr, col_te = stats_tr[:, :15] / spread[:15], stats_te[:, :15] / spread[:15]
    ring_tr, ring_te = stats_tr[:, 15:] / spread[15:], stats_te[:, 15:] / spread[15:]
    coarse_tr = np.stack([f.coarse[0] for f in train])                    # (n_tr, 64)
    coarse_te = np.stack([f.coarse for f in test])                        # (n_te, 8, 64)
    hash_tr = np.array([f.phash[0] for f in train], np.uint64)
    hash_te = np.stack([f.phash for f in test])                            # (n_te, 8)
    pairs: set[tuple[int, int]] = set()
    per_train: list[tuple[np.ndarray, np.ndarray]] = []                   # (scores, test indices) per chunk

    def dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:                 # euclidean, (len(b), len(a))
        d2 = (b * b).sum(1)[:, None] + (a * a).sum(1)[None, :] - 2 * b @ a.T
        return np.sqrt(np.maximum(d2, 0))

    def normalised(d: np.ndarray) -> np.ndarray:                          # robust per-row scale
        return d / (np.partition(d, d.shape[1] // 2, axis=1)[:, d.shape[1] // 2][:, None] + 1e-6)

    for start in range(0, len(test), chunk):
        stop = min(start + chunk, len(test))
        c = stop - start
        dco = 1 - (coarse_te[start:stop].reshape(c * 8, -1) @ coarse_tr.T).reshape(c, 8, -1).max(axis=1)
        score = (normalised(dist(col_tr, col_te[start:stop])) + normalised(dist(ring_tr, ring_te[start:stop]))
                 + normalised(dco)).astype(np.float32)
        ham = np.bitwise_count(hash_te[start:stop, 0, None] ^ hash_tr[None, :])
        for v in range(1, 8):   # Hamming distance to the closest flip/rotation of the test image
            np.minimum(ham, np.bitwise_count(hash_te[start:stop, v, None] ^ hash_tr[None, :]), out=ham)
        for rows in (_smallest(score, CANDIDATES_PER_TEST),
                     _smallest(ham.astype(np.float32) + score * 1e-3, CANDIDATES_PHASH)):
            for r, row in enumerate(rows):
                pairs.update((int(i), start + r) for i in row[:CANDIDATES_PER_TEST])
        k = min(CANDIDATES_PER_TRAIN, stop - start)
        cols = _smallest(score.T, k)                                       # (n_tr, k) nearest test images
        per_train.append((np.take_along_axis(score.T, cols, axis=1), cols + start))
    scores = np.concatenate([s for s, _ in per_train], axis=1)
    indices = np.concatenate([i for _, i in per_train], axis=1)
    order = np.argsort(scores, axis=1, kind="stable")[:, :CANDIDATES_PER_TRAIN]
    for i, row in enumerate(np.take_along_axis(indices, order, axis=1)):
        pairs.update((i, int(j)) for j in row)
    return pairs


def _colour_shift(a: Fingerprint, b: Fingerprint) -> float:
    """CIELAB distance of the mean colours of the central discs (a 10 % crop moves it by < 7)."""
    return float(np.linalg.norm((a.stats[:3] - b.stats[:3]) * _LAB_UNITS))


_LAB_UNITS = np.float32([100 / 255, 1, 1])   # 8-bit OpenCV Lab -> CIELAB units


_STATE: dict[str, Any] = {}


def _set_state(train: Sequence[Fingerprint], test: Sequence[Fingerprint], by_test: dict[int, list[int]]) -> None:
    _STATE.update(train=train, test=test, by_test=by_test)


def _verify_test_image(j: int) -> list[tuple[int, int, Match]]:
    """All near duplicates of test image j among its candidates (runs in a worker)."""
    train, test = _STATE["train"], _STATE["test"]
    if test[j].structure < MIN_STRUCTURE:
        return []
    todo = [i for i in _STATE["by_test"][j]
            if train[i].structure >= MIN_STRUCTURE and _colour_shift(train[i], test[j]) <= MAX_COLOUR_SHIFT]
    if not todo:
        return []
    prepared = _prepare_test(test[j])
    coarse = _coarse_search([train[i] for i in todo], prepared)
    found = []
    for i, scores in zip(todo, coarse):
        match = _verify(train[i], prepared, scores)
        if match is not None and match.duplicate:
            found.append((i, j, match))
    return found


def near_duplicates(train: Sequence[Fingerprint], test: Sequence[Fingerprint],
                    workers: int = 2) -> list[tuple[int, int, Match]]:
    """All (train index, test index, match) near-duplicate pairs, sorted by index."""
    by_test: dict[int, list[int]] = {}
    for i, j in sorted(candidate_pairs(train, test)):
        by_test.setdefault(j, []).append(i)
    jobs = sorted(by_test)
    workers = max(1, min(workers, os.cpu_count() or 1))
    if workers == 1 or len(jobs) < 64:
        _set_state(train, test, by_test)
        try:
            results = [_verify_test_image(j) for j in jobs]
        finally:
            _STATE.clear()
    else:
        with _pool(workers, _set_state, (train, test, by_test)) as pool:
            results = list(pool.map(_verify_test_image, jobs, chunksize=max(1, min(32, len(jobs) // (4 * workers)))))
    return sorted((x for r in results for x in r), key=lambda x: (x[0], x[1]))


# --- images of a layout, groups ------------------------------------------------------------------------

LAYOUT_IMAGE_DIRS = {
    "classification": "{root}/{dataset}",          # <root>/<dataset>/<class>/<image>
    "segmentation": "{root}/{dataset}/images",     # <root>/<dataset>/images/<image>
    "detection": "{root}/images/{dataset}",        # <root>/images/<dataset>/<file_name>
}
VARIANT_NAMES = ("as is", "mirrored left-right", "rotated 90 degrees", "rotated 90 degrees and mirrored",
                 "rotated 180 degrees", "flipped upside down", "rotated 270 degrees",
                 "rotated 270 degrees and mirrored")


def detect_task(root: str | os.PathLike, datasets: Sequence[str]) -> str:
    """Guess the layout of ``root``: detection (annotations/ + images/), segmentation (images/ + masks/
    inside each dataset) or classification."""
    root = Path(root)
    if (root / "annotations").is_dir() and (root / "images").is_dir():
        return "detection"
    present = [d for d in datasets if (root / d).is_dir()]
    if present and all((root / d / "images").is_dir() and (root / d / "masks").is_dir() for d in present):
        return "segmentation"
    return "classification"


def _walk(folder: Path) -> list[Path]:
    """Image files below ``folder`` (recursively, hidden/system entries skipped), in code-point order."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not is_ignored(d))
        found += [Path(dirpath) / f for f in filenames if not is_ignored(f) and is_image_file(f)]
    return sorted(found, key=lambda p: p.as_posix())


def dataset_images(root: str | os.PathLike, task: str, dataset: str) -> list[Path] | None:
    """The images of one dataset of a layout; None when its image folder does not exist."""
    if task == "detection" and dataset.lower().endswith(".json"):   # sl_train.json names the set sl_train
        dataset = dataset[:-5]
    folder = Path(LAYOUT_IMAGE_DIRS[task].format(root=Path(root).as_posix(), dataset=dataset))
    return _walk(folder) if folder.is_dir() else None


class Groups:
    """Image -> group id (lesion or patient), read from a CSV with columns ``path`` (or ``image``) and
    ``group``. A path is matched relative to the data root (``sl_train/nevus/a.jpg``) or as an absolute
    path; a bare file name (``a.jpg``, no folder) matches every image of that name."""

    def __init__(self, mapping: dict[str, str], source: str) -> None:
        self.source = source
        self.by_path = {k: g for k, g in mapping.items() if "/" in k or "\\" in k}
        self.by_name = {k: g for k, g in mapping.items() if k not in self.by_path}

    def __len__(self) -> int:
        return len(self.by_path)

    def get(self, path: Path, root: Path) -> str | None:
        try:
            rel = path.relative_to(root).as_posix()
        except ValueError:
            rel = None
        for key in (rel, path.as_posix()):
            if key is not None and key in self.by_path:
                return self.by_path[key]
        return self.by_name.get(path.name)

    @classmethod
    def read(cls, path: str | os.PathLike, report: Report) -> Groups | None:
        """Read a groups CSV; problems (missing file or columns, empty ids) go to ``report``."""
        path = Path(path)
        if not path.is_file():
            report.add(path, "groups file does not exist",
                       "give the CSV that maps images to lesion/patient ids (columns path, group), or remove "
                       "data.groups / --groups")
            return None
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            fields = {(f or "").strip().lower(): f for f in reader.fieldnames or []}
            key = fields.get("path") or fields.get("image")
            group = fields.get("group")
            if key is None or group is None:
                report.add(path, f"groups file has columns {sorted(fields)}, needs 'path' (or 'image') and 'group'",
                           "add a header line 'path,group' (path relative to the data root)")
                return None
            mapping: dict[str, str] = {}
            for line, row in enumerate(reader, start=2):
                image, gid = (row.get(key) or "").strip(), (row.get(group) or "").strip()
                if not image:
                    report.add(f"{path}:{line}", "row has no image path", "fill in the path or delete the row")
                elif gid:
                    mapping[image] = gid
        return cls(mapping, str(path))


# --- the check -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Leak:
    """One training/test pair that is not independent."""

    kind: str                 # exact | near | group
    train: str                # path of the training image
    test: str                 # path of the test image
    train_dataset: str
    test_dataset: str
    distance: float | None    # exact 0.0; near 1 - structural correlation; group None
    group: str | None = None  # the shared group id, when both images have the same group
    detail: dict[str, Any] | None = None  # near: ncc, colour difference, flip/rotation, scale

    def what(self) -> str:
        if self.kind == "exact":
            text = "identical files (same SHA-256)"
        elif self.kind == "near":
            d = self.detail or {}
            text = (f"near duplicate, distance {self.distance:.3f} (structure correlation {d.get('ncc')}, "
                    f"colour difference {d.get('colour')}/255, test image {d.get('transform')}, scale {d.get('scale')})")
        else:
            text = f"same group '{self.group}'"
        return text + (f", also same group '{self.group}'" if self.group and self.kind != "group" else "")

    def line(self) -> str:
        return f"LEAK {self.kind} {self.train_dataset} -> {self.test_dataset}: {self.train} ~ {self.test}: {self.what()}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LeakCheck:
    """Every leak found, the problems to report (per exact/near pair, per shared group) and counts."""

    leaks: list[Leak] = field(default_factory=list)
    report: Report = field(default_factory=Report)      # every problem: leaks, and the notes below
    notes: Report = field(default_factory=Report)       # problems that are not leaks (unreadable image ...)
    summary: dict[str, Any] = field(default_factory=dict)

    def lines(self) -> list[str]:
        return [leak.line() for leak in self.leaks]

    def to_dict(self, problems: bool = True) -> dict[str, Any]:
        out = self.summary | {"leaks": [leak.to_dict() for leak in self.leaks]}
        return out | {"problems": self.report.to_dict()["problems"]} if problems else out


_ALLOW = "or, if you accept it, set data.allow_leaks: true (or pass --allow-leaks)"


def find_leaks(train: Sequence[tuple[str, Path]], test: Sequence[tuple[str, Path]], root: str | os.PathLike = ".",
               groups: Groups | None = None, workers: int = 2, allow: bool = False,
               report_unreadable: bool = True) -> LeakCheck:
    """Compare every training image with every test image: exact, near duplicates and shared groups.

    ``train``/``test`` are (dataset, path) pairs. Leaks are errors in the returned report unless ``allow``
    (then warnings). Unreadable images are skipped (a warning each when ``report_unreadable``).
    """
    import time

    started = time.perf_counter()
    root = Path(root)
    severity = "warning" if allow else "error"
    check = LeakCheck()
    paths = [p for _, p in train] + [p for _, p in test]
    prints = fingerprints(paths, workers)
    usable_tr, usable_te = [], []
    for k, (item, fp) in enumerate(zip(list(train) + list(test), prints)):
        if isinstance(fp, ImageError):
            if report_unreadable:
                check.notes.add_problem(check.report.add(fp.path, f"not checked for leaks: {fp.problem}", fp.fix,
                                                         "warning"))
            continue
        (usable_tr if k < len(train) else usable_te).append((item, fp))

    def gid(path: Path) -> str | None:
        return groups.get(path, root) if groups is not None else None

    found: dict[tuple[int, int], Leak] = {}
    # exact duplicates: equal SHA-256
    by_hash: dict[str, list[int]] = {}
    for i, (_, fp) in enumerate(usable_tr):
        by_hash.setdefault(fp.sha256, []).append(i)
    for j, ((ds_te, p_te), fp) in enumerate(usable_te):
        for i in by_hash.get(fp.sha256, []):
            (ds_tr, p_tr), _ = usable_tr[i]
            g = gid(p_tr)
            found[(i, j)] = Leak("exact", str(p_tr), str(p_te), ds_tr, ds_te, 0.0, g if g and g == gid(p_te) else None)
    # near duplicates
    for i, j, match in near_duplicates([fp for _, fp in usable_tr], [fp for _, fp in usable_te], workers):
        if (i, j) in found:
            continue
        (ds_tr, p_tr), _ = usable_tr[i]
        (ds_te, p_te), _ = usable_te[j]
        g = gid(p_tr)
        detail = {"ncc": match.ncc, "colour": match.colour, "transform": VARIANT_NAMES[match.variant],
                  "scale": match.scale}
        found[(i, j)] = Leak("near", str(p_tr), str(p_te), ds_tr, ds_te, round(1 - match.ncc, 4),
                             g if g and g == gid(p_te) else None, detail)
    for (i, j), leak in sorted(found.items()):
        check.leaks.append(leak)
        check.report.add(leak.test, f"{leak.kind} duplicate of training image {leak.train}: {leak.what()}",
                         f"remove one of the two images or move them into the same dataset, {_ALLOW}", severity)
    # shared groups
    shared = 0
    if groups is not None:
        members_tr: dict[str, list[tuple[str, Path]]] = {}
        for (ds, p), _ in usable_tr:
            g = gid(p)
            if g is not None:
                members_tr.setdefault(g, []).append((ds, p))
        members_te: dict[str, list[tuple[str, Path]]] = {}
        for (ds, p), _ in usable_te:
            g = gid(p)
            if g is not None and g in members_tr:
                members_te.setdefault(g, []).append((ds, p))
        for g in sorted(members_te):
            shared += 1
            for ds_tr, p_tr in members_tr[g]:
                for ds_te, p_te in members_te[g]:
                    check.leaks.append(Leak("group", str(p_tr), str(p_te), ds_tr, ds_te, None, g))
            tr_sets = sorted({d for d, _ in members_tr[g]})
            te_sets = sorted({d for d, _ in members_te[g]})
            check.report.add(
                members_te[g][0][1],
                f"group '{g}' (same lesion/patient) is in training data ({len(members_tr[g])} image(s) in "
                f"{', '.join(tr_sets)}, e.g. {members_tr[g][0][1]}) and in test data ({len(members_te[g])} image(s) "
                f"in {', '.join(te_sets)})",
                f"split by group so that each lesion/patient is in one dataset only (dermdl import does), {_ALLOW}",
                severity)
    counts = {kind: sum(1 for leak in check.leaks if leak.kind == kind) for kind in KINDS}
    check.summary = {
        "root": str(root),
        "train_images": len(usable_tr),
        "test_images": len(usable_te),
        "unreadable": len(paths) - len(usable_tr) - len(usable_te),
        "groups_file": groups.source if groups is not None else None,
        "shared_groups": shared,
        "counts": counts,
        "allowed": allow,
        "seconds": round(time.perf_counter() - started, 2),
        "thresholds": {"near_ncc": NEAR_NCC, "near_colour": NEAR_COLOUR, "same_colour": SAME_COLOUR,
                       "near_ncc_same_colour": NEAR_NCC_SAME_COLOUR},
    }
    return check


def check_layout(root: str | os.PathLike, task: str | None, train_sets: Sequence[str], test_sets: Sequence[str],
                 groups: str | os.PathLike | None = None, workers: int = 2, allow: bool = False,
                 report_missing: bool = True) -> LeakCheck:
    """Leak check of a layout root: images of the named training vs test datasets.

    ``task`` None guesses the layout; ``groups`` None uses ``<root>/groups.csv`` when it exists.
    """
    root = Path(root)
    task = task or detect_task(root, [*train_sets, *test_sets])
    problems = Report()
    for name in sorted(set(train_sets) & set(test_sets)):
        problems.add(root / name, f"dataset '{name}' is named as training AND test data",
                     "a test set must never be trained on: remove it from one of the two lists")
    test_sets = [name for name in test_sets if name not in set(train_sets)]
    sides: list[list[tuple[str, Path]]] = [[], []]
    for side, names in enumerate((train_sets, test_sets)):
        for name in dict.fromkeys(names):
            images = dataset_images(root, task, name)
            if images is None:
                if report_missing:
                    folder = LAYOUT_IMAGE_DIRS[task].format(root=root.as_posix(), dataset=name)
                    problems.add(folder, f"dataset '{name}' has no image folder (layout: {task})",
                                 "check the data root and the dataset names")
                continue
            sides[side] += [(name, p) for p in images]
    group_file = Path(groups) if groups else (root / "groups.csv")
    table = Groups.read(group_file, problems) if (groups or group_file.is_file()) else None
    check = find_leaks(sides[0], sides[1], root, table, workers, allow, report_unreadable=report_missing)
    check.report.problems[:0] = problems.problems
    check.notes.problems[:0] = problems.problems
    check.summary |= {"task": task, "train": list(dict.fromkeys(train_sets)), "test": list(dict.fromkeys(test_sets))}
    return check


def check_params(params: Any, report_missing: bool = False, workers: int | None = None) -> LeakCheck:
    """The leak check ``validate-layout`` runs: training = wl_train + sl_train, test = sl_tests."""
    data = params.data
    return check_layout(data.root, params.task, [*data.wl_train, *data.sl_train], list(data.sl_tests),
                        groups=data.groups, workers=workers or default_workers(), allow=data.allow_leaks,
                        report_missing=report_missing)


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def print_check(check: LeakCheck, stream=sys.stderr) -> None:
    for line in check.lines():
        print(line, file=stream)
    c = check.summary.get("counts", {})
    print(f"check-leaks: {check.summary.get('train_images', 0)} training vs {check.summary.get('test_images', 0)} test "
          f"images: {c.get('exact', 0)} exact, {c.get('near', 0)} near-duplicate, {c.get('group', 0)} same-group "
          f"pair(s) ({check.summary.get('shared_groups', 0)} shared group(s)) in {check.summary.get('seconds', 0)} s"
          + (" (allowed)" if check.summary.get("allowed") and check.leaks else ""))


def run_cli(args: Any, params: Any, overrides: dict[str, Any]) -> int:
    """``dermdl check-leaks`` (arguments: see dermdl/cli.py): exit 1 when leaks or other errors are found."""
    from dermdl.io import atomic_write_json
    from dermdl.params import params_from_dict

    if params is None:  # outside a project: defaults, plus -S overrides
        params = params_from_dict({})
        params = params.override(overrides) if overrides else params
    data = params.data
    check = check_layout(
        args.root or data.root,
        args.task or (None if args.root else params.task),
        args.train or [*data.wl_train, *data.sl_train],
        args.test or list(data.sl_tests),
        groups=args.groups or data.groups,
        workers=args.workers or default_workers(),
        allow=args.allow_leaks or data.allow_leaks,
    )
    out = Path(args.json) if args.json else params.out / "check-leaks" / "leaks.json"
    atomic_write_json(out, check.to_dict())
    for line in check.notes.lines():
        print(line, file=sys.stderr)
    print_check(check, sys.stdout)
    print(f"check-leaks: report written to {out}")
    return 0 if check.report.ok else 1
