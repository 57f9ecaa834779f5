"""COCO detection metrics (pycocotools COCOeval) with bootstrap CIs over images, and a text table.

Point values are pycocotools' own numbers (AP@[.50:.95], AP50, AP75, AP small/medium/large,
AR@1/10/100, per-category AP), so they match what papers report.

Why the CIs do not re-run COCOeval per resample: ``evaluate()`` (box matching, the expensive part)
depends on one image at a time, so it runs once; each bootstrap resample is then a weighting of
images (how often each was drawn), and pycocotools' ``accumulate`` step (sort detections by score,
cumulative TP/FP, interpolated precision at 101 recall points) is recomputed with those weights for
all resamples at once in numpy. With all weights 1 this reproduces pycocotools exactly (tested).
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
from typing import Any

import numpy as np

from dermdl.bootstrap import bootstrap_indices, format_value, percentile_ci

#: pycocotools ``stats`` index -> our key; None values mean "undefined" (pycocotools' -1).
STATS = {"AP": 0, "AP50": 1, "AP75": 2, "AP_small": 3, "AP_medium": 4, "AP_large": 5, "AR1": 6, "AR10": 7, "AR100": 8}
LABELS = {
    "AP": "AP@[.50:.95]",
    "AP50": "AP50",
    "AP75": "AP75",
    "AP_small": "AP small",
    "AP_medium": "AP medium",
    "AP_large": "AP large",
    "AR1": "AR@1",
    "AR10": "AR@10",
    "AR100": "AR@100",
}
_CHUNK = 2_000_000  # bootstrap rows x detections per numpy block (~16 MB of float64)


def _quiet(fn, *args):
    """pycocotools prints progress to stdout; keep stage output readable."""
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args)


def gt_coco(gt: dict):
    """A pycocotools COCO object from a COCO dict (``area``/``iscrowd`` filled in when missing)."""
    from pycocotools.coco import COCO

    data = copy.deepcopy(gt)
    for ann in data.get("annotations", []):
        ann.setdefault("iscrowd", 0)
        if not ann.get("area"):
            ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])
    coco = COCO()
    coco.dataset = data
    _quiet(coco.createIndex)
    return coco


def results_coco(gt, results: list[dict]):
    """Detections as a COCO object, exactly as ``COCO.loadRes`` builds it for boxes, but also for
    an empty result list (loadRes fails on that)."""
    from pycocotools.coco import COCO

    anns = []
    for index, r in enumerate(results):
        x, y, w, h = r["bbox"]
        anns.append(
            {
                "id": index + 1,
                "image_id": r["image_id"],
                "category_id": r["category_id"],
                "bbox": [x, y, w, h],
                "score": r["score"],
                "area": w * h,
                "iscrowd": 0,
            }
        )
    res = COCO()
    res.dataset = {
        "images": list(gt.dataset["images"]),
        "categories": copy.deepcopy(gt.dataset["categories"]),
        "annotations": anns,
    }
    _quiet(res.createIndex)
    return res


def run_cocoeval(gt: dict, results: list[dict]):
    """COCOeval (bbox) after evaluate, accumulate and summarize; ``.stats`` holds the 12 numbers."""
    from pycocotools.cocoeval import COCOeval

    ground = gt_coco(gt)
    evaluator = COCOeval(ground, results_coco(ground, results), "bbox")
    for step in (evaluator.evaluate, evaluator.accumulate, evaluator.summarize):
        _quiet(step)
    return evaluator


def _category_arrays(evaluator, k: int) -> dict[str, np.ndarray]:
    """One category's detections over all images (area 'all', maxDets 100), in accumulate's order."""
    p = evaluator.params
    n_img, n_area, max_det = len(p.imgIds), len(p.areaRng), p.maxDets[-1]
    scores, matched, ignored, owner = [], [], [], []
    npig = np.zeros(n_img)
    for i in range(n_img):
        e = evaluator.evalImgs[k * n_area * n_img + i]
        if e is None:
            continue
        scores.append(np.asarray(e["dtScores"][:max_det], dtype=np.float64))
        matched.append(np.asarray(e["dtMatches"])[:, :max_det])
        ignored.append(np.asarray(e["dtIgnore"])[:, :max_det])
        owner.append(np.full(len(scores[-1]), i))
        npig[i] = np.count_nonzero(np.asarray(e["gtIgnore"]) == 0)
    n_thr = len(p.iouThrs)
    if not scores:
        return {
            "tp": np.zeros((n_thr, 0), bool),
            "fp": np.zeros((n_thr, 0), bool),
            "owner": np.zeros(0, int),
            "npig": npig,
        }
    order = np.argsort(-np.concatenate(scores), kind="mergesort")
    dtm = np.concatenate(matched, axis=1)[:, order].astype(bool)
    dtig = np.concatenate(ignored, axis=1)[:, order].astype(bool)
    return {"tp": dtm & ~dtig, "fp": ~dtm & ~dtig, "owner": np.concatenate(owner)[order], "npig": npig}


def _weighted_precision(arrays: dict[str, np.ndarray], weights: np.ndarray, rec_thrs: np.ndarray) -> np.ndarray:
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


def weighted_ap(evaluator, weights: np.ndarray) -> dict[str, np.ndarray]:
    """AP and AP50, overall (rows,) and per category (rows, K), for image-weight rows (rows, I)."""
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    rec_thrs = np.asarray(evaluator.params.recThrs)
    n_cat = len(evaluator.params.catIds)
    ap = np.full((len(weights), n_cat), np.nan)
    ap50 = np.full((len(weights), n_cat), np.nan)
    for k in range(n_cat):
        arrays = _category_arrays(evaluator, k)
        n_det = max(1, arrays["tp"].shape[1])
        step = max(1, _CHUNK // n_det)
        for start in range(0, len(weights), step):
            q = _weighted_precision(arrays, weights[start : start + step], rec_thrs)
            ap[start : start + step, k] = q.mean(axis=(1, 2))
            ap50[start : start + step, k] = q[:, 0].mean(axis=1)
    with np.errstate(invalid="ignore"), _nan_mean_quiet():
        return {
            "AP": np.nanmean(ap, axis=1),
            "AP50": np.nanmean(ap50, axis=1),
            "AP_per_category": ap,
            "AP50_per_category": ap50,
        }


@contextlib.contextmanager
def _nan_mean_quiet():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "Mean of empty slice": all categories absent
        yield


def _value(v: float) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) or v < 0 else float(v)


def _with_ci(value: float, boot: np.ndarray, ci: float) -> dict[str, float | None]:
    point = _value(value)
    lo, hi = percentile_ci(boot, ci) if point is not None else (None, None)
    return {"value": point, "lo": lo, "hi": hi}


def _category_ap(evaluator, k: int, t: slice | int) -> float | None:
    precision = evaluator.eval["precision"][t, :, k, 0, -1]
    return None if (precision < 0).any() or precision.size == 0 else float(precision.mean())


def detection_metrics(
    gt: dict, results: list[dict], n_boot: int = 1000, ci: float = 0.95, seed: int = 0, evaluator: Any = None
) -> dict[str, Any]:
    """COCO metrics with bootstrap CIs over images for AP and AP50 (overall and per category).

    ``{"n", "n_objects", "overall": {AP, AP50 (value/lo/hi), AP75, AP_small, ..., AR100},
    "per_category": {name: {AP, AP50 (value/lo/hi)}}, "bootstrap": {...}}``; undefined -> None.
    """
    evaluator = evaluator or run_cocoeval(gt, results)
    n_images = len(evaluator.params.imgIds)
    names = {c["id"]: c["name"] for c in gt["categories"]}
    categories = [names[c] for c in evaluator.params.catIds]
    counts = np.zeros((n_boot, n_images))
    if n_images:
        draws = bootstrap_indices(n_images, n_boot, seed)
        counts = np.stack([np.bincount(row, minlength=n_images) for row in draws]).astype(np.float64)
    boot = weighted_ap(evaluator, counts) if n_images and n_boot else None
    stats = evaluator.stats
    overall: dict[str, Any] = {}
    for key, index in STATS.items():
        if key in ("AP", "AP50") and boot is not None:
            overall[key] = _with_ci(float(stats[index]), boot[key], ci)
        else:
            overall[key] = _value(float(stats[index]))
    per_category = {}
    for k, name in enumerate(categories):
        entry = {}
        for key, t in (("AP", slice(None)), ("AP50", 0)):
            value = _category_ap(evaluator, k, t)
            samples = boot[f"{key}_per_category"][:, k] if boot is not None else np.zeros(0)
            entry[key] = {
                "value": value,
                **dict(zip(("lo", "hi"), percentile_ci(samples, ci) if value is not None else (None, None))),
            }
        per_category[name] = entry
    n_objects = sum(1 for a in gt.get("annotations", []) if not a.get("iscrowd"))
    return {
        "n": n_images,
        "n_objects": n_objects,
        "overall": overall,
        "per_category": per_category,
        "bootstrap": {"n_boot": int(n_boot), "ci": float(ci), "seed": int(seed), "unit": "image"},
    }


def class_agnostic(gt: dict, results: list[dict], name: str = "lesion") -> tuple[dict, list[dict]]:
    """The same boxes with every category merged into one: how well a multi-class detector finds
    lesions, whatever diagnosis it gives them (the "lesion" AP50 of a per-diagnosis detector)."""
    merged = {
        **gt,
        "categories": [{"id": 1, "name": name}],
        "annotations": [{**a, "category_id": 1} for a in gt.get("annotations", [])],
    }
    return merged, [{**r, "category_id": 1} for r in results]


def pr_points(evaluator, k: int, iou: float = 0.5) -> list[dict[str, float]]:
    """Interpolated precision-recall curve of category index ``k`` at one IoU (DVC ``simple`` plot)."""
    t = int(np.argmin(np.abs(np.asarray(evaluator.params.iouThrs) - iou)))
    precision = evaluator.eval["precision"][t, :, k, 0, -1]
    scores = evaluator.eval["scores"][t, :, k, 0, -1]
    if (precision < 0).any():
        return []
    return [
        {"recall": round(float(r), 4), "precision": round(float(p), 6), "threshold": round(float(s), 6)}
        for r, p, s in zip(evaluator.params.recThrs, precision, scores)
        if p > 0
    ]


def format_table(metrics: dict[str, Any], title: str = "Detection metrics", digits: int = 3) -> str:
    """Readable summary: overall COCO metrics, then one greppable line per category and metric."""
    boot = metrics.get("bootstrap", {})
    ci_text = f"{100 * boot['ci']:g}% bootstrap CI over images, {boot['n_boot']} resamples" if boot else "bootstrap CI"
    lines = [
        title,
        "=" * len(title),
        f"n = {metrics['n']} images, {metrics.get('n_objects', '?')} objects; values: point ({ci_text})",
        "",
    ]
    overall = metrics["overall"]
    width = max(len(label) for label in LABELS.values()) + 1
    lines += [f"{LABELS[key] + ':':<{width}} {format_value(overall.get(key), digits)}" for key in STATS]
    if "any_lesion" in metrics:  # a multi-class detector scored with its categories merged
        merged = metrics["any_lesion"]
        lines += [
            "",
            f"Any lesion, diagnosis ignored: AP50 {format_value(merged['AP50'], digits)}, "
            f"AP@[.50:.95] {format_value(merged['AP'], digits)}",
        ]
    rows = [
        (name, format_value(v["AP"], digits), format_value(v["AP50"], digits))
        for name, v in metrics["per_category"].items()
    ]
    if rows:
        name_w = max(len("category"), *(len(r[0]) for r in rows))
        col_w = [max(len("AP@[.50:.95]"), *(len(r[1]) for r in rows)), max(len("AP50"), *(len(r[2]) for r in rows))]
        header = f"{'category':<{name_w}}  {'AP@[.50:.95]':<{col_w[0]}}  AP50"
        lines += ["", header, "-" * (name_w + col_w[0] + col_w[1] + 4)]
        lines += [f"{n:<{name_w}}  {a:<{col_w[0]}}  {b}" for n, a, b in rows]
        lines += ["", "Details:"]
        detail = [
            (f"{label} {n}:", v) for label, i in (("AP", 1), ("AP50", 2)) for n, *vals in rows for v in [vals[i - 1]]
        ]
        label_w = max(len(label) for label, _ in detail)
        lines += [f"{label:<{label_w}} {value}" for label, value in detail]
    return "\n".join(lines) + "\n"
