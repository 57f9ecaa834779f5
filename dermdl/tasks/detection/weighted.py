"""Every COCO summary number for many image weightings at once: the bootstrap engine of detection.

Why the CIs do not re-run COCOeval per resample: ``evaluate()`` (box matching, the expensive part)
depends on one image at a time, so it runs once; each bootstrap resample is then a weighting of
images (how often each image, or each lesion/patient group, was drawn), and pycocotools'
``accumulate`` step is recomputed with those weights for all resamples at once in numpy:

- AP: sort detections by score, weighted cumulative TP/FP, interpolated precision at 101 recall points;
- AR: recall needs no ranking, only each image's matched count among its top 1/10/100 detections,
  so a resample's recall is ``weights @ matched / weights @ objects``.

With all weights 1 this reproduces ``COCOeval.stats`` exactly (tested), and a weighting equals
pycocotools on the explicitly duplicated images (tested).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, NamedTuple

import numpy as np

_CHUNK = 2_000_000  # bootstrap rows x detections per numpy block (~16 MB of float64)


class Stat(NamedTuple):
    """One of the 12 ``COCOeval.stats``: AP or AR, at one IoU (None: mean over .50:.95), area, max dets."""

    kind: str
    iou: float | None
    area: str
    max_dets: int


#: our key -> what it averages, in pycocotools ``stats`` order (index = position).
SPECS = {
    "AP": Stat("ap", None, "all", 100),
    "AP50": Stat("ap", 0.5, "all", 100),
    "AP75": Stat("ap", 0.75, "all", 100),
    "AP_small": Stat("ap", None, "small", 100),
    "AP_medium": Stat("ap", None, "medium", 100),
    "AP_large": Stat("ap", None, "large", 100),
    "AR1": Stat("ar", None, "all", 1),
    "AR10": Stat("ar", None, "all", 10),
    "AR100": Stat("ar", None, "all", 100),
    "AR_small": Stat("ar", None, "small", 100),
    "AR_medium": Stat("ar", None, "medium", 100),
    "AR_large": Stat("ar", None, "large", 100),
}
STATS = {key: index for index, key in enumerate(SPECS)}


def category_arrays(evaluator: Any, k: int, a: int = 0) -> dict[str, np.ndarray]:
    """Category ``k``'s detections over all images for area range ``a`` (max dets 100), in
    accumulate's order, plus ``hits`` (M, T, I): each image's TPs among its top ``maxDets[m]``."""
    p = evaluator.params
    n_img, n_area, max_det, n_thr = len(p.imgIds), len(p.areaRng), p.maxDets[-1], len(p.iouThrs)
    scores, matched, ignored, owner = [], [], [], []
    npig = np.zeros(n_img)
    hits = np.zeros((len(p.maxDets), n_thr, n_img))
    for i in range(n_img):
        e = evaluator.evalImgs[k * n_area * n_img + a * n_img + i]
        if e is None:
            continue
        scores.append(np.asarray(e["dtScores"][:max_det], dtype=np.float64))
        dtm = np.asarray(e["dtMatches"]).reshape(n_thr, -1)[:, :max_det]
        dtig = np.asarray(e["dtIgnore"]).reshape(n_thr, -1)[:, :max_det]
        matched.append(dtm)
        ignored.append(dtig)
        owner.append(np.full(len(scores[-1]), i))
        npig[i] = np.count_nonzero(np.asarray(e["gtIgnore"]) == 0)
        tp = (dtm != 0) & (dtig == 0)  # per image already sorted by score (evaluateImg)
        for m, limit in enumerate(p.maxDets):
            hits[m, :, i] = tp[:, :limit].sum(axis=1)
    if not scores:
        empty = np.zeros((n_thr, 0), bool)
        return {"tp": empty, "fp": empty, "owner": np.zeros(0, int), "npig": npig, "hits": hits}
    order = np.argsort(-np.concatenate(scores), kind="mergesort")
    dtm = np.concatenate(matched, axis=1)[:, order].astype(bool)
    dtig = np.concatenate(ignored, axis=1)[:, order].astype(bool)
    return {
        "tp": dtm & ~dtig,
        "fp": ~dtm & ~dtig,
        "owner": np.concatenate(owner)[order],
        "npig": npig,
        "hits": hits,
    }


def weighted_precision(arrays: dict[str, np.ndarray], weights: np.ndarray, rec_thrs: np.ndarray) -> np.ndarray:
    """Interpolated precision (rows, T, R) for image weights (rows, I); NaN rows = category absent."""
    rows, n_thr, n_rec = len(weights), arrays["tp"].shape[0], len(rec_thrs)
    npig = weights @ arrays["npig"]
    out = np.zeros((rows, n_thr, n_rec))
    n_det = arrays["tp"].shape[1]
    if n_det:
        w = weights[:, arrays["owner"]]
        denominator = np.where(npig > 0, npig, 1.0)[:, None]
        offsets = 2.0 * np.arange(rows)[:, None]
        for t in range(n_thr):
            tp = np.cumsum(w * arrays["tp"][t], axis=1)
            fp = np.cumsum(w * arrays["fp"][t], axis=1)
            recall = tp / denominator
            precision = tp / (fp + tp + np.spacing(1))
            envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
            # one searchsorted for all rows: row r lives in [2r, 2r + 1] after the offset
            index = np.searchsorted((recall + offsets).ravel(), (rec_thrs[None, :] + offsets).ravel(), side="left")
            index = index.reshape(rows, n_rec) - (np.arange(rows) * n_det)[:, None]
            valid = index < n_det
            out[:, t] = np.where(valid, np.take_along_axis(envelope, np.minimum(index, n_det - 1), axis=1), 0.0)
    out[npig == 0] = np.nan
    return out


def _weighted_recall(arrays: dict[str, np.ndarray], weights: np.ndarray, m: int) -> np.ndarray:
    """Recall (rows, T) among each image's top ``maxDets[m]`` detections; NaN rows = category absent."""
    objects = weights @ arrays["npig"]
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = (weights @ arrays["hits"][m].T) / objects[:, None]
    recall[objects == 0] = np.nan
    return recall


def _iou_position(evaluator: Any, iou: float) -> int:
    return int(np.argmin(np.abs(np.asarray(evaluator.params.iouThrs) - iou)))


def _iou_index(evaluator: Any, iou: float | None) -> slice | int:
    """Where ``iou`` sits in the IoU axis; None: every threshold (the .50:.95 average)."""
    return slice(None) if iou is None else _iou_position(evaluator, iou)


def weighted_stats(evaluator: Any, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Every :data:`SPECS` number, overall (rows,) and per category (rows, K) as ``<key>_per_category``,
    for image-weight rows (rows, I) in ``evaluator.params.imgIds`` order."""
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    p = evaluator.params
    rec_thrs = np.asarray(p.recThrs)
    rows, n_cat = len(weights), len(p.catIds)
    per_category = {key: np.full((rows, n_cat), np.nan) for key in SPECS}
    for k in range(n_cat):
        for a, area in enumerate(p.areaRngLbl):
            specs = {key: s for key, s in SPECS.items() if s.area == area}
            if not specs:
                continue
            arrays = category_arrays(evaluator, k, a)
            for key, spec in specs.items():
                if spec.kind == "ar":
                    recall = _weighted_recall(arrays, weights, list(p.maxDets).index(spec.max_dets))
                    per_category[key][:, k] = recall[:, _iou_index(evaluator, spec.iou)].reshape(rows, -1).mean(axis=1)
            ap_keys = [key for key, s in specs.items() if s.kind == "ap"]
            if not ap_keys:
                continue
            step = max(1, _CHUNK // max(1, arrays["tp"].shape[1]))
            for start in range(0, rows, step):
                q = weighted_precision(arrays, weights[start : start + step], rec_thrs)
                for key in ap_keys:
                    chosen = q[:, _iou_index(evaluator, SPECS[key].iou)]
                    per_category[key][start : start + step, k] = chosen.reshape(len(q), -1).mean(axis=1)
    out: dict[str, np.ndarray] = {}
    with np.errstate(invalid="ignore"), _nan_mean_quiet():
        for key, values in per_category.items():
            out[key] = np.nanmean(values, axis=1)
            out[f"{key}_per_category"] = values
    return out


@contextlib.contextmanager
def _nan_mean_quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "Mean of empty slice": all categories absent
        yield


def per_image_ap50(evaluator: Any, score_threshold: float = 0.0) -> list[float | None]:
    """AP50 of each image alone (``evaluator.params.imgIds`` order): the mean, over the categories
    annotated in the image, of COCO's 101-point interpolated precision at IoU 0.5 on that image's
    detections of the category. Why per category: as in COCO, a box of another category does not
    lower it (it counts in that category's dataset AP), but a right box with the wrong diagnosis
    leaves the annotated category unfound (AP 0). An image without annotations scores 0 when it has
    a detection scoring >= ``score_threshold`` (a false alarm) and is undefined (None) otherwise."""
    p = evaluator.params
    n_img, n_area, n_thr = len(p.imgIds), len(p.areaRng), len(p.iouThrs)
    t50 = _iou_position(evaluator, 0.5)
    rec_thrs = np.asarray(p.recThrs)
    sums, counts = np.zeros(n_img), np.zeros(n_img)
    one = np.ones((1, 1))
    for k in range(len(p.catIds)):
        for i in range(n_img):
            e = evaluator.evalImgs[k * n_area * n_img + i]  # area 'all'
            npig = 0 if e is None else np.count_nonzero(np.asarray(e["gtIgnore"]) == 0)
            if not npig:
                continue
            dtm = np.asarray(e["dtMatches"]).reshape(n_thr, -1)[t50 : t50 + 1] != 0
            dtig = np.asarray(e["dtIgnore"]).reshape(n_thr, -1)[t50 : t50 + 1] != 0
            arrays = {
                "tp": dtm & ~dtig,
                "fp": ~dtm & ~dtig,
                "owner": np.zeros(dtm.shape[1], int),
                "npig": np.array([npig]),
            }
            sums[i] += float(weighted_precision(arrays, one, rec_thrs).mean())
            counts[i] += 1
    out: list[float | None] = []
    for i, image_id in enumerate(p.imgIds):
        if counts[i]:
            out.append(float(sums[i] / counts[i]))
        else:
            scores = [d["score"] for d in evaluator.cocoDt.imgToAnns.get(image_id, [])]
            out.append(0.0 if any(s >= score_threshold for s in scores) else None)
    return out
