"""Leak check: alignment and verification of candidate pairs (near duplicates)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from dermdl.leaks.hashes import Fingerprint, _bandpass, _dihedral, _pool, _zscore_rows
from dermdl.leaks.tuning import (
    BANDPASS,
    CANDIDATES_PER_TEST,
    CANDIDATES_PER_TRAIN,
    CANDIDATES_PHASH,
    COARSE,
    COARSE_TEMPLATE,
    COLOUR_BLUR,
    DARK,
    HALF_MIN,
    MARGIN,
    MAX_COLOUR_SHIFT,
    MIN_OVERLAP,
    MIN_STRUCTURE,
    MIN_VARIANTS,
    NEAR_COLOUR,
    NEAR_NCC,
    NEAR_NCC_SAME_COLOUR,
    SAME_COLOUR,
    SCALES,
    VARIANT_SLACK,
)

# --- alignment and verification of one pair -------------------------------------------------------------


def _template(image: np.ndarray, scale: float) -> tuple[np.ndarray, tuple[float, float]]:
    """Centre of ``image`` scaled by ``scale``; template pixel u shows image pixel (u + offset) / scale."""
    h, w = image.shape[:2]
    tw, th = max(4, round(w * scale * (1 - 2 * MARGIN))), max(4, round(h * scale * (1 - 2 * MARGIN)))
    ox, oy = float(round((w * scale - tw) / 2)), float(round((h * scale - th) / 2))  # whole pixels: exact at 1
    matrix = np.array([[scale, 0, -ox], [0, scale, -oy]], dtype=np.float32)
    return cv2.warpAffine(image, matrix, (tw, th), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT), (ox, oy)


def _coarse_templates(small: np.ndarray) -> np.ndarray:
    """(8 * len(SCALES), COARSE_TEMPLATE**2) z-scored centres of the 8 variants at every scale."""
    rows = []
    for variant in _dihedral(small):
        for s in SCALES:
            o = (COARSE * s - COARSE_TEMPLATE) / 2
            t = cv2.warpAffine(
                variant,
                np.array([[s, 0, -o], [0, s, -o]], dtype=np.float32),
                (COARSE_TEMPLATE, COARSE_TEMPLATE),
                flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REFLECT,
            )
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
    raw: list[np.ndarray]  # the 8 variants of the grayscale thumbnail (float32)
    bandpass: list[np.ndarray]  # ... band-passed
    colour: list[np.ndarray]  # ... of the colour thumbnail (float32)
    coarse: np.ndarray  # coarse templates, see _coarse_templates
    half: list[np.ndarray]  # the 8 variants of the band-passed half-size thumbnail (scale search)


def _half(gray: np.ndarray) -> np.ndarray:
    """Band-passed half-size thumbnail (same band as _bandpass, in half-size pixels)."""
    small = cv2.resize(
        gray.astype(np.float32), (max(4, gray.shape[1] // 2), max(4, gray.shape[0] // 2)), interpolation=cv2.INTER_AREA
    )
    return cv2.GaussianBlur(small, (0, 0), BANDPASS[0] / 2) - cv2.GaussianBlur(small, (0, 0), BANDPASS[1] / 2)


def _prepare_test(fp: Fingerprint) -> _Test:
    raw = _dihedral(fp.gray.astype(np.float32))
    return _Test(
        fp,
        raw,
        [_bandpass(g) for g in raw],
        _dihedral(fp.colour.astype(np.float32)),
        _coarse_templates(fp.small),
        _dihedral(_half(fp.gray)),
    )


def _coarse_search(trains: Sequence[Fingerprint], test: _Test) -> np.ndarray:
    """Best coarse correlation per (training image, variant, scale): shape (len(trains), 8, len(SCALES))."""
    windows = np.stack([_coarse_windows(t.small) for t in trains])  # (n, shifts, d)
    scores = (windows @ test.coarse.T).max(axis=1)  # (n, 8 * scales)
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

    ncc: float  # correlation of the fine structure at the best alignment (1 = identical)
    colour: float  # mean absolute colour difference there (0-255)
    variant: int  # flip/rotation of the test image (0 = as is, 1 = mirrored, 2 = rotated 90 ...)
    scale: float  # test-image scale relative to the training image

    @property
    def duplicate(self) -> bool:
        """Structure AND colours agree; a nearly exact colour match needs less structure (plain images)."""
        return (self.ncc >= NEAR_NCC and self.colour <= NEAR_COLOUR) or (
            self.ncc >= NEAR_NCC_SAME_COLOUR and self.colour <= SAME_COLOUR
        )


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
    scores = sorted(
        ((_fine_score(half, test.half[v], s)[0], -k, v, s) for v in tried for k, s in enumerate(SCALES)), reverse=True
    )
    if scores[0][0] < HALF_MIN:
        return None
    # full-size check of the best half-size hypothesis, its neighbouring scales and the best other variant
    v0, k0 = scores[0][2], -scores[0][1]
    hypotheses = [(v0, SCALES[k]) for k in (k0 - 1, k0, k0 + 1) if 0 <= k < len(SCALES)]
    hypotheses += [(v, s) for _, _, v, s in scores if v != v0][:1]
    target = _bandpass(train.gray)
    th_, tw_ = target.shape
    best: tuple[float, int, float, np.ndarray, tuple[float, float]] | None = None
    for v, s in hypotheses:
        value, templ, offset = _fine_score(target, test.bandpass[v], s)
        if best is None or value > best[0]:
            best = (value, v, s, templ, offset)
    if best is None:  # never: the hypotheses always include the best half-size scale
        return None
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
    tx, ty = x - ox, y - oy  # test-variant pixel p -> training pixel scale * p + (tx, ty)
    matrix = np.array([[scale, 0, tx], [0, scale, ty]], dtype=np.float32)
    # usable area: inside the template's footprint, away from dark vignette/background in either image
    footprint = np.zeros((th_, tw_), np.uint8)
    x0, y0 = int(math.ceil(x)) + 1, int(math.ceil(y)) + 1
    x1, y1 = int(x + templ.shape[1]) - 1, int(y + templ.shape[0]) - 1
    if x1 - x0 < 8 or y1 - y0 < 8:
        return None
    footprint[y0:y1, x0:x1] = 1
    warped_raw = cv2.warpAffine(test.raw[v], matrix, (tw_, th_), flags=cv2.INTER_LINEAR)
    dark = (cv2.GaussianBlur(train.gray, (0, 0), 1.0) < DARK) | (cv2.GaussianBlur(warped_raw, (0, 0), 1.0) < DARK)
    dark_grown = cv2.dilate(dark.astype(np.uint8), np.ones((9, 9), np.uint8))
    usable = (footprint > 0) & (dark_grown == 0)
    if usable.sum() < MIN_OVERLAP * footprint.sum():
        return None
    warped = cv2.warpAffine(test.bandpass[v], matrix, (tw_, th_), flags=cv2.INTER_LINEAR)
    ncc = _masked_ncc(warped, target, usable)
    # colours, on the colour thumbnails: colour_test c -> gray_test (c + .5) / r - .5 -> gray_train -> colour_train
    ch, cw = train.colour.shape[:2]
    fx, fy = cw / tw_, ch / th_
    colour_v = test.colour[v]
    rx, ry = colour_v.shape[1] / test.raw[v].shape[1], colour_v.shape[0] / test.raw[v].shape[0]
    m = np.array(
        [
            [scale * fx / rx, 0, fx * (scale * (0.5 / rx - 0.5) + tx + 0.5) - 0.5],
            [0, scale * fy / ry, fy * (scale * (0.5 / ry - 0.5) + ty + 0.5) - 0.5],
        ],
        dtype=np.float32,
    )
    warped_c = cv2.warpAffine(colour_v, m, (cw, ch), flags=cv2.INTER_LINEAR)
    usable_c = cv2.resize(usable.astype(np.float32), (cw, ch), interpolation=cv2.INTER_AREA) > 0.99
    if usable_c.sum() < 16:
        return None
    diff = np.abs(
        cv2.GaussianBlur(warped_c, (0, 0), COLOUR_BLUR)
        - cv2.GaussianBlur(train.colour.astype(np.float32), (0, 0), COLOUR_BLUR)
    )[usable_c]
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


def candidate_pairs(
    train: Sequence[Fingerprint], test: Sequence[Fingerprint], chunk: int = 512
) -> set[tuple[int, int]]:
    """(train index, test index) pairs worth aligning: nearest neighbours under the global fingerprints."""
    if not train or not test:
        return set()
    stats_tr = np.stack([f.stats for f in train])
    stats_te = np.stack([f.stats for f in test])
    spread = np.concatenate([stats_tr, stats_te]).std(0) + 1e-3
    col_tr, col_te = stats_tr[:, :15] / spread[:15], stats_te[:, :15] / spread[:15]
    ring_tr, ring_te = stats_tr[:, 15:] / spread[15:], stats_te[:, 15:] / spread[15:]
    coarse_tr = np.stack([f.coarse[0] for f in train])  # (n_tr, 64)
    coarse_te = np.stack([f.coarse for f in test])  # (n_te, 8, 64)
    hash_tr = np.array([f.phash[0] for f in train], np.uint64)
    hash_te = np.stack([f.phash for f in test])  # (n_te, 8)
    pairs: set[tuple[int, int]] = set()
    per_train: list[tuple[np.ndarray, np.ndarray]] = []  # (scores, test indices) per chunk

    def dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # euclidean, (len(b), len(a))
        d2 = (b * b).sum(1)[:, None] + (a * a).sum(1)[None, :] - 2 * b @ a.T
        return np.sqrt(np.maximum(d2, 0))

    def normalised(d: np.ndarray) -> np.ndarray:  # robust per-row scale
        return d / (np.partition(d, d.shape[1] // 2, axis=1)[:, d.shape[1] // 2][:, None] + 1e-6)

    for start in range(0, len(test), chunk):
        stop = min(start + chunk, len(test))
        c = stop - start
        dco = 1 - (coarse_te[start:stop].reshape(c * 8, -1) @ coarse_tr.T).reshape(c, 8, -1).max(axis=1)
        score = (
            normalised(dist(col_tr, col_te[start:stop]))
            + normalised(dist(ring_tr, ring_te[start:stop]))
            + normalised(dco)
        ).astype(np.float32)
        ham = np.bitwise_count(hash_te[start:stop, 0, None] ^ hash_tr[None, :])
        for v in range(1, 8):  # Hamming distance to the closest flip/rotation of the test image
            np.minimum(ham, np.bitwise_count(hash_te[start:stop, v, None] ^ hash_tr[None, :]), out=ham)
        for rows in (
            _smallest(score, CANDIDATES_PER_TEST),
            _smallest(ham.astype(np.float32) + score * 1e-3, CANDIDATES_PHASH),
        ):
            for r, row in enumerate(rows):
                pairs.update((int(i), start + r) for i in row[:CANDIDATES_PER_TEST])
        k = min(CANDIDATES_PER_TRAIN, stop - start)
        cols = _smallest(score.T, k)  # (n_tr, k) nearest test images
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


_LAB_UNITS = np.array([100 / 255, 1, 1], dtype=np.float32)  # 8-bit OpenCV Lab -> CIELAB units


_STATE: dict[str, Any] = {}


def _set_state(train: Sequence[Fingerprint], test: Sequence[Fingerprint], by_test: dict[int, list[int]]) -> None:
    _STATE.update(train=train, test=test, by_test=by_test)


def _verify_test_image(j: int) -> list[tuple[int, int, Match]]:
    """All near duplicates of test image j among its candidates (runs in a worker)."""
    train, test = _STATE["train"], _STATE["test"]
    if test[j].structure < MIN_STRUCTURE:
        return []
    todo = [
        i
        for i in _STATE["by_test"][j]
        if train[i].structure >= MIN_STRUCTURE and _colour_shift(train[i], test[j]) <= MAX_COLOUR_SHIFT
    ]
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


def near_duplicates(
    train: Sequence[Fingerprint], test: Sequence[Fingerprint], workers: int = 2
) -> list[tuple[int, int, Match]]:
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
