"""COCO detection metrics (pycocotools COCOeval) with bootstrap CIs, and a text table.

Point values are pycocotools' own numbers (AP@[.50:.95], AP50, AP75, AP small/medium/large,
AR@1/10/100, AR small/medium/large, per-category AP), so they match what papers report. Every one
gets a bootstrap CI, computed by re-weighting pycocotools' accumulate step
(:mod:`dermdl.tasks.detection.weighted`): images are resampled, or lesion/patient groups when they
are known (cluster bootstrap: images of one lesion are not independent).
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from dermdl.bootstrap import format_value, resample_weights, with_ci
from dermdl.tasks.detection.weighted import STATS, weighted_stats

#: Summary lines: several numbers of one family share a line, so the table stays short.
LINES = {
    "AP@[.50:.95]": ["AP"],
    "AP50": ["AP50"],
    "AP75": ["AP75"],
    "AP small / medium / large": ["AP_small", "AP_medium", "AP_large"],
    "AR@1 / 10 / 100": ["AR1", "AR10", "AR100"],
    "AR small / medium / large": ["AR_small", "AR_medium", "AR_large"],
}


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


def _with_ci(value: float | None, boot: np.ndarray | None, ci: float) -> dict[str, float | None]:
    """The value/lo/hi record; pycocotools' -1 (and None) mean undefined, which has no interval."""
    if value is None or math.isnan(value) or value < 0:
        return with_ci(math.nan, np.zeros(0), ci)
    return with_ci(float(value), boot if boot is not None else np.zeros(0), ci)


def _category_ap(evaluator, k: int, t: slice | int) -> float | None:
    precision = evaluator.eval["precision"][t, :, k, 0, -1]
    return None if (precision < 0).any() or precision.size == 0 else float(precision.mean())


def _resample_weights(
    evaluator, gt: dict, n_boot: int, seed: int, groups: Sequence[Any] | None
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """(n_boot, I) image multiplicities in ``evaluator.params.imgIds`` order, and the unit record.
    ``groups`` follow ``gt["images"]``; evaluator ids are sorted, so they are re-ordered by id."""
    image_ids = list(evaluator.params.imgIds)
    ordered = None
    unit: dict[str, Any] = {"unit": "image"}
    if groups is not None:
        if len(groups) != len(gt["images"]):
            raise ValueError(f"{len(groups)} group ids for {len(gt['images'])} images")
        by_id = {img["id"]: str(g) for img, g in zip(gt["images"], groups)}
        ordered = [by_id[i] for i in image_ids]
        unit = {"unit": "group", "n_groups": len(set(ordered))}
    if not image_ids or not n_boot:
        return None, unit
    return resample_weights(len(image_ids), n_boot, seed, ordered), unit


def detection_metrics(
    gt: dict,
    results: list[dict],
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    evaluator: Any = None,
    groups: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """COCO metrics, each with a bootstrap CI, overall and (AP, AP50) per category.

    ``{"n", "n_objects", "overall": {AP, AP50, AP75, AP_small, ..., AR100, AR_small, ...},
    "per_category": {name: {AP, AP50}}, "bootstrap": {n_boot, ci, seed, unit[, n_groups]}}``, every
    number ``{"value", "lo", "hi"}`` (None when undefined). ``groups`` (lesion/patient id per entry of
    ``gt["images"]``) makes the bootstrap resample groups instead of images.
    """
    evaluator = evaluator or run_cocoeval(gt, results)
    names = {c["id"]: c["name"] for c in gt["categories"]}
    categories = [names[c] for c in evaluator.params.catIds]
    weights, unit = _resample_weights(evaluator, gt, n_boot, seed, groups)
    boot = weighted_stats(evaluator, weights) if weights is not None else None
    stats = evaluator.stats
    overall = {
        key: _with_ci(float(stats[index]), boot[key] if boot is not None else None, ci) for key, index in STATS.items()
    }
    per_category = {}
    for k, name in enumerate(categories):
        per_category[name] = {
            key: _with_ci(
                _category_ap(evaluator, k, t), boot[f"{key}_per_category"][:, k] if boot is not None else None, ci
            )
            for key, t in (("AP", slice(None)), ("AP50", 0))
        }
    n_objects = sum(1 for a in gt.get("annotations", []) if not a.get("iscrowd"))
    return {
        "n": len(evaluator.params.imgIds),
        "n_objects": n_objects,
        "overall": overall,
        "per_category": per_category,
        "bootstrap": {"n_boot": int(n_boot), "ci": float(ci), "seed": int(seed)} | unit,
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
    ci_text = "bootstrap CI"
    if boot:
        over = f"{boot['n_groups']} lesion/patient groups" if boot.get("unit") == "group" else "images"
        ci_text = f"{100 * boot['ci']:g}% bootstrap CI over {over}, {boot['n_boot']} resamples"
    lines = [
        title,
        "=" * len(title),
        f"n = {metrics['n']} images, {metrics.get('n_objects', '?')} objects; values: point ({ci_text})",
        "",
    ]
    overall = metrics["overall"]
    width = max(len(label) for label in LINES) + 1
    lines += [
        f"{label + ':':<{width}} {' | '.join(format_value(overall.get(key), digits) for key in keys)}"
        for label, keys in LINES.items()
    ]
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
    if metrics.get("subgroups"):
        from dermdl.evaluation.subgroups import format_subgroups

        lines += ["", format_subgroups(metrics["subgroups"]).rstrip("\n")]
    return "\n".join(lines) + "\n"
