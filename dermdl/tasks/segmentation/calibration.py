"""Pixel-level calibration of the predicted class probabilities: expected calibration error (ECE), Brier
score and reliability-diagram data, per foreground class (one vs rest), pooled over the pixels of a test set.

Why per-image sufficient statistics: infer does not know ``analyze.calibration_bins`` (changing it must not
re-run inference), and analyze never re-reads masks. So infer stores, per image and foreground class, the
pixel count, the sum of predicted probabilities and the number of truly-that-class pixels in each of
``FINE_BINS`` equal-width probability bins, plus the sum of squared errors (Brier). Analyze merges the fine
bins into ``calibration_bins`` equal-width bins (exact when calibration_bins divides 1000, else each bin edge
moves to the nearest 1/1000), and a bootstrap resample is again a vector of image multiplicities ``w``:
every pooled sum is ``w @ stats``, for plain and cluster resamples alike.

Definitions: the confidence of a bin is the mean predicted probability of its pixels, the accuracy the share
of its pixels that truly are the class; ECE = sum over bins of (pixels in bin / all pixels) x
|accuracy - confidence|; Brier = mean over pixels of (p - y)^2 with y = 1 for the class, else 0. Class 0
(background) is left out: with two classes its calibration mirrors the lesion's exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dermdl.bootstrap import with_ci
from dermdl.io import atomic_file

FINE_BINS = 1000
COUNT, PROB_SUM, TRUE_SUM = 0, 1, 2
FILE = "calibration.npz"


def image_stats(truth: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One image: (k-1, 3, FINE_BINS) count / probability sum / true pixels per fine bin, and (k-1,) sums
    of squared errors, for each foreground class; ``probs`` is (k, h, w), ``truth`` (h, w) class ids."""
    k = probs.shape[0]
    flat_truth = np.asarray(truth).ravel()
    bins = np.zeros((k - 1, 3, FINE_BINS))
    squared = np.zeros(k - 1)
    for c in range(1, k):
        p = np.asarray(probs[c], dtype=np.float64).ravel()
        y = (flat_truth == c).astype(np.float64)
        index = np.clip((p * FINE_BINS).astype(np.int64), 0, FINE_BINS - 1)
        bins[c - 1, COUNT] = np.bincount(index, minlength=FINE_BINS)
        bins[c - 1, PROB_SUM] = np.bincount(index, weights=p, minlength=FINE_BINS)
        bins[c - 1, TRUE_SUM] = np.bincount(index, weights=y, minlength=FINE_BINS)
        squared[c - 1] = float(((p - y) ** 2).sum())
    return bins, squared


@dataclass(frozen=True)
class PixelCalibration:
    """The per-image statistics of one test set: ``bins`` (n, k-1, 3, FINE_BINS), ``squared`` (n, k-1)."""

    bins: np.ndarray
    squared: np.ndarray

    @classmethod
    def stack(cls, parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> PixelCalibration:
        return cls(np.stack([b for b, _ in parts]), np.stack([s for _, s in parts]))

    def save(self, path: Path) -> None:
        with atomic_file(path) as tmp, open(tmp, "wb") as handle:
            # float32 counts are exact below 16.7 M pixels per bin and image; sums keep 7 digits: 4x smaller
            np.savez_compressed(handle, bins=self.bins.astype(np.float32), squared=self.squared)

    @classmethod
    def load(cls, path: Path) -> PixelCalibration:
        with np.load(path) as data:
            return cls(data["bins"].astype(np.float64), data["squared"].astype(np.float64))

    def coarse(self, n_bins: int) -> np.ndarray:
        """(n, k-1, 3, n_bins): fine bin i goes to the bin that holds its centre (i + 0.5) / FINE_BINS."""
        target = np.minimum(((np.arange(FINE_BINS) + 0.5) * n_bins / FINE_BINS).astype(np.int64), n_bins - 1)
        return self.bins @ np.eye(n_bins)[target]


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def resample_calibration(stats: PixelCalibration, n_bins: int, weights: np.ndarray) -> dict[str, np.ndarray]:
    """ECE and Brier (b, k-1) for each row of image multiplicities ``weights`` (b, n); NaN where a class
    has no pixels in the resample."""
    pooled = np.einsum("bn,ncsj->bcsj", np.asarray(weights, dtype=np.float64), stats.coarse(n_bins))
    count = pooled[:, :, COUNT].sum(axis=-1)
    gap = np.abs(pooled[:, :, PROB_SUM] - pooled[:, :, TRUE_SUM]).sum(axis=-1)  # = sum_bins n_b |conf - acc|
    pixels = np.asarray(weights, dtype=np.float64) @ stats.bins[:, :, COUNT].sum(axis=-1)
    return {"ece": _divide(gap, count), "brier": _divide(np.asarray(weights, np.float64) @ stats.squared, pixels)}


def calibration_metrics(
    stats: PixelCalibration, classes: Sequence[str], n_bins: int, weights: np.ndarray, ci: float
) -> dict[str, Any]:
    """{"<foreground class>": {"ece", "brier"} with CIs, "bins": n_bins}; ``weights`` as the other metrics'."""
    point = resample_calibration(stats, n_bins, np.ones((1, stats.bins.shape[0])))
    boot = resample_calibration(stats, n_bins, weights)
    out: dict[str, Any] = {
        cls: {key: with_ci(float(point[key][0, c]), boot[key][:, c], ci) for key in ("ece", "brier")}
        for c, cls in enumerate(list(classes)[1:])
    }
    return out | {"bins": int(n_bins)}


def reliability_records(stats: PixelCalibration, c: int, n_bins: int) -> list[dict[str, float]]:
    """DVC plot data of foreground class ``c`` (1-based class index): one record per non-empty bin."""
    pooled = stats.coarse(n_bins)[:, c - 1].sum(axis=0)
    return [
        {
            "confidence": float(pooled[PROB_SUM, j] / pooled[COUNT, j]),
            "accuracy": float(pooled[TRUE_SUM, j] / pooled[COUNT, j]),
            "count": int(round(pooled[COUNT, j])),
        }
        for j in range(n_bins)
        if pooled[COUNT, j] > 0
    ]
