"""Boundary quality of a segmentation: 95th-percentile Hausdorff distance (HD95) and average symmetric
surface distance (ASSD), in pixels of the original image, per image and foreground class.

Why: Dice/IoU barely move when a border is ragged or a small satellite blob is wrong; surface distances
show it, and medical segmentation papers report them beside Dice.

Why our own ~40 lines on ``scipy.ndimage`` instead of MONAI or medpy: both compute the same thing on the
same scipy distance transform, but MONAI pulls in a large framework and medpy is barely maintained and
pins old numpy versions; scipy is already a dependency. The conventions follow medpy's ``hd95``/``assd``
except where noted, and the test checks them against a brute-force computation over boundary pixels and
``scipy.spatial.distance.directed_hausdorff``.

Conventions (docs/segmentation.md):
* Surface = the mask's pixels with at least one 4-neighbour outside the mask (a pixel on the image edge
  counts as on the surface); distances are Euclidean between pixel centres.
* HD95 = 95th percentile (numpy's linear interpolation) of the distances of both surfaces to each other,
  pooled (medpy ``hd95``).
* ASSD = the mean of those same pooled distances: sum of both directed distance sums over the number of
  surface pixels of both masks (Heimann et al. 2009; medpy's ``assd`` averages the two directed means
  instead, which weighs a short surface as much as a long one).
* Undefined (NaN, left out of the mean over images): the class is absent from truth AND prediction
  (nothing to delineate), or absent from exactly one of them (no surface to measure against); analyze
  counts the images of the second kind, because a mean that leaves out missed lesions flatters a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from dermdl.bootstrap import with_ci

METRICS = ("hd95", "asd")
PERCENTILE = 95.0
_CROSS = ndimage.generate_binary_structure(2, 1)


def surface(mask: np.ndarray) -> np.ndarray:
    """Boolean map of the mask's surface pixels (in the mask, with a 4-neighbour outside or the edge)."""
    mask = np.asarray(mask, dtype=bool)
    return mask & ~ndimage.binary_erosion(mask, structure=_CROSS, border_value=0)


def surface_distances(truth: np.ndarray, prediction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distances of each predicted surface pixel to the true surface, and of each true surface pixel to
    the predicted one; both masks must be non-empty.

    The distance transforms run on the bounding box of both masks plus one pixel: every surface pixel and
    every query lies inside it, so the Euclidean distances are exact, and a small lesion in a 24-megapixel
    photograph costs little."""
    truth, prediction = np.asarray(truth, dtype=bool), np.asarray(prediction, dtype=bool)
    rows, cols = np.nonzero(truth | prediction)
    r0, r1 = max(rows.min() - 1, 0), min(rows.max() + 2, truth.shape[0])
    c0, c1 = max(cols.min() - 1, 0), min(cols.max() + 2, truth.shape[1])
    # the crop's border is the image edge or a background row, so the surfaces are those of the full image
    t_surface = surface(truth[r0:r1, c0:c1])
    p_surface = surface(prediction[r0:r1, c0:c1])
    to_truth = ndimage.distance_transform_edt(~t_surface)
    to_prediction = ndimage.distance_transform_edt(~p_surface)
    return to_truth[p_surface], to_prediction[t_surface]


def image_boundary(truth: np.ndarray, prediction: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(k,) HD95 and (k,) ASSD of one image's class-id maps; NaN for class 0 (background) and wherever
    the class is absent from the truth or the prediction."""
    hd95, asd = np.full(k, np.nan), np.full(k, np.nan)
    for c in range(1, k):
        t, p = truth == c, prediction == c
        if not (t.any() and p.any()):
            continue
        a, b = surface_distances(t, p)
        both = np.concatenate([a, b])
        hd95[c] = float(np.percentile(both, PERCENTILE))
        asd[c] = float(both.mean())
    return hd95, asd


def _weighted_mean(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(b, n) multiplicities, (n,) values with NaN = undefined -> (b,) means over the defined values."""
    defined = ~np.isnan(values)
    num = weights @ np.where(defined, values, 0.0)
    den = weights @ defined.astype(np.float64)
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def boundary_metrics(
    values: dict[str, np.ndarray], cm: np.ndarray, classes: Sequence[str], weights: np.ndarray, ci: float
) -> dict[str, Any]:
    """Mean HD95/ASSD over images per foreground class with bootstrap CIs (``weights``: (b, n) image
    multiplicities of the resamples, plain or cluster), and the image counts behind them.

    ``values``: {"hd95": (n, k), "asd": (n, k)} per image (NaN = undefined); ``cm``: (n, k, k) pixel
    counts, which say whether a class is in an image's truth (row sums) and prediction (column sums)."""
    cm = np.asarray(cm)
    in_truth, in_prediction = cm.sum(axis=2) > 0, cm.sum(axis=1) > 0
    point = np.ones((1, cm.shape[0]))
    out: dict[str, Any] = {}
    for c, cls in enumerate(classes):
        if c == 0:
            continue
        entry: dict[str, Any] = {}
        for key in METRICS:
            column = np.asarray(values[key], dtype=np.float64)[:, c]
            entry[key] = with_ci(float(_weighted_mean(point, column)[0]), _weighted_mean(weights, column), ci)
        entry["n_images"] = int((~np.isnan(np.asarray(values["hd95"], dtype=np.float64)[:, c])).sum())
        entry["n_one_empty"] = int((in_truth[:, c] ^ in_prediction[:, c]).sum())
        out[cls] = entry
    return out
