"""Segmentation metrics per class with bootstrap CIs over images, from per-image pixel counts.

Why counts: infer stores, per image, the k x k pixel confusion matrix (truth x prediction) and
histograms of the class probabilities; every metric (mean over images, pooled over pixels, ROC)
follows from those small arrays, so analyze never re-reads masks. A bootstrap resample is a
vector of image multiplicities ``w``: pooled counts are ``w @ counts`` and image means are
weighted means, so point estimates and CIs come from the same code (all weights 1 = the point).

Conventions (documented in docs/segmentation.md):
* Dice/IoU of an image are undefined (left out of the mean) when the class is absent from both
  its truth and its prediction; pooled values sum the pixels of all images first.
* ISIC "thresholded Jaccard": per-image IoU, counted as 0 when below 0.65, averaged over images.
* Precision, recall, specificity and AUC are pixel-level, pooled over the test set; the AUC and
  ROC use probabilities binned into ``BINS`` steps (one-vs-rest per class).
* Undefined values are ``None`` (never NaN), so the output is JSON- and DVC-safe.
* Resamples draw images, or lesion/patient groups when ``groups`` are given (cluster bootstrap: images
  of one lesion are not independent); boundary distances (:mod:`.boundary`) and pixel calibration
  (:mod:`.calibration`) use the same resamples as every other metric.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dermdl import bootstrap
from dermdl.bootstrap import format_value, with_ci
from dermdl.tasks.segmentation.boundary import boundary_metrics
from dermdl.tasks.segmentation.calibration import PixelCalibration, calibration_metrics

BINS = 100
ISIC_THRESHOLD = 0.65
CLASS_METRICS = (
    "dice",
    "dice_pooled",
    "iou",
    "iou_pooled",
    "thresholded_jaccard",
    "precision",
    "recall",
    "specificity",
    "auc",
)
OVERALL_METRICS = ("pixel_accuracy", "dice_foreground", "iou_foreground")
LABELS = {
    "dice": "Dice",
    "dice_pooled": "Dice (pooled)",
    "iou": "IoU",
    "iou_pooled": "IoU (pooled)",
    "thresholded_jaccard": "Thresholded Jaccard",
    "precision": "Precision",
    "recall": "Recall",
    "specificity": "Specificity",
    "auc": "AUC",
    "pixel_accuracy": "Pixel accuracy",
    "dice_foreground": "Dice (foreground mean)",
    "iou_foreground": "IoU (foreground mean)",
}
_CHUNK = 250  # resamples per block: bounds the (resamples x images) working arrays


def confusion_counts(truth: np.ndarray, prediction: np.ndarray, k: int) -> np.ndarray:
    """k x k pixel counts of one image: rows = true class, columns = predicted class."""
    codes = truth.astype(np.int64).ravel() * k + prediction.astype(np.int64).ravel()
    return np.bincount(codes, minlength=k * k).reshape(k, k)


def probability_histograms(truth: np.ndarray, probs: np.ndarray, bins: int = BINS) -> np.ndarray:
    """(k, 2, bins) counts of p(class c) over pixels not of class c ([c, 0]) and of class c ([c, 1])."""
    k = probs.shape[0]
    out = np.zeros((k, 2, bins), dtype=np.int64)
    flat_truth = truth.ravel()
    for c in range(k):
        index = np.clip((probs[c].ravel() * bins).astype(np.int64), 0, bins - 1)
        positive = flat_truth == c
        out[c, 1] = np.bincount(index[positive], minlength=bins)
        out[c, 0] = np.bincount(index[~positive], minlength=bins)
    return out


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def per_image(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image, per-class (n, k) tp/fp/fn/tn and Dice/IoU/thresholded Jaccard (NaN = undefined)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diagonal(cm, axis1=1, axis2=2)
    fp = cm.sum(axis=1) - tp
    fn = cm.sum(axis=2) - tp
    tn = cm.sum(axis=(1, 2))[:, None] - tp - fp - fn
    iou = _divide(tp, tp + fp + fn)
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "dice": _divide(2 * tp, 2 * tp + fp + fn),
        "iou": iou,
        "thresholded_jaccard": np.where(np.isnan(iou), np.nan, np.where(iou < ISIC_THRESHOLD, 0.0, iou)),
    }


def _weighted_mean(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(b, n) weights, (n, k) values with NaN = undefined -> (b, k) means over defined values."""
    defined = ~np.isnan(values)
    return _divide(weights @ np.where(defined, values, 0.0), weights @ defined.astype(np.float64))


def _auc(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Binned Mann-Whitney AUC; pos/neg (..., bins) counts; ties within a bin count one half."""
    below = np.cumsum(neg, axis=-1) - neg
    return _divide((pos * (below + 0.5 * neg)).sum(axis=-1), pos.sum(axis=-1) * neg.sum(axis=-1))


def resample_metrics(cm: np.ndarray, hist: np.ndarray | None, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric for each row of image multiplicities ``weights`` (b, n): class metrics (b, k),
    overall metrics (b,)."""
    images = per_image(cm)
    w = np.asarray(weights, dtype=np.float64)
    tp, fp, fn, tn = (w @ images[key] for key in ("tp", "fp", "fn", "tn"))
    out = {key: _weighted_mean(w, images[key]) for key in ("dice", "iou", "thresholded_jaccard")}
    out |= {
        "dice_pooled": _divide(2 * tp, 2 * tp + fp + fn),
        "iou_pooled": _divide(tp, tp + fp + fn),
        "precision": _divide(tp, tp + fp),
        "recall": _divide(tp, tp + fn),
        "specificity": _divide(tn, tn + fp),
    }
    if hist is None:
        out["auc"] = np.full_like(tp, np.nan)
    else:
        pooled = np.einsum("bn,nksj->bksj", w, np.asarray(hist, dtype=np.float64))
        out["auc"] = _auc(pooled[:, :, 1], pooled[:, :, 0])
    out["pixel_accuracy"] = _divide(tp.sum(axis=1), (tp + fn).sum(axis=1))
    for key, source in (("dice_foreground", "dice"), ("iou_foreground", "iou")):
        fg = out[source][:, 1:]
        defined = ~np.isnan(fg)
        out[key] = _divide(np.where(defined, fg, 0.0).sum(axis=1), defined.sum(axis=1).astype(np.float64))
    return out


def resample_weights(
    n: int, n_boot: int, seed: int, indices: np.ndarray | None = None, groups: Sequence[Any] | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """(b, n) image multiplicities of the bootstrap resamples (:func:`dermdl.bootstrap.resample_weights`)
    and the resampling unit for the report: drawn ``groups`` (lesion/patient ids, cluster bootstrap) when
    given, else drawn images; ``indices`` replaces the seeded image draws, so tests can replay a naive loop."""
    if groups is not None:
        if len(groups) != n:
            raise ValueError(f"{len(groups)} group ids for {n} images")
        unit = {"unit": "group", "n_groups": len(set(map(str, groups)))}
        return bootstrap.resample_weights(n, n_boot, seed, groups), unit
    if indices is None:
        return bootstrap.resample_weights(n, n_boot, seed), {"unit": "image"}
    idx = np.asarray(indices)
    rows = np.arange(len(idx))[:, None]
    weights = np.bincount((rows * n + idx).ravel(), minlength=len(idx) * n).reshape(len(idx), n)
    return weights.astype(np.float64), {"unit": "image"}


def segmentation_metrics(
    cm: np.ndarray,
    hist: np.ndarray | None,
    classes: Sequence[str],
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    indices: np.ndarray | None = None,
    groups: Sequence[Any] | None = None,
    boundary: dict[str, np.ndarray] | None = None,
    calibration: PixelCalibration | None = None,
    calibration_bins: int = 15,
) -> dict[str, Any]:
    """Metrics dict: ``n`` images, ``pixels``, ``overall``, ``per_class`` (values with CIs as
    value/lo/hi), ``pixel_confusion`` (truth -> prediction -> pixels) and ``bootstrap`` settings (with the
    resampling unit); ``boundary`` (per-image {"hd95", "asd"} (n, k)) and ``calibration`` (infer's
    per-image statistics) add the keys of the same names."""
    cm = np.asarray(cm)
    n, k = cm.shape[0], len(classes)
    if cm.ndim != 3 or cm.shape[1:] != (k, k) or n < 1:
        raise ValueError(f"need per-image confusion counts of shape (n >= 1, {k}, {k}), got {cm.shape}")
    weights, unit = resample_weights(n, n_boot, seed, indices, groups)
    point = resample_metrics(cm, hist, np.ones((1, n)))
    parts = [resample_metrics(cm, hist, weights[start : start + _CHUNK]) for start in range(0, len(weights), _CHUNK)]
    boot = {key: np.concatenate([p[key] for p in parts]) for key in point} if parts else point
    total = cm.sum(axis=0)
    out = {
        "n": int(n),
        "pixels": int(total.sum()),
        "overall": {m: with_ci(point[m][0], boot[m], ci) for m in OVERALL_METRICS},
        "per_class": {
            cls: {m: with_ci(point[m][0, c], boot[m][:, c], ci) for m in CLASS_METRICS} for c, cls in enumerate(classes)
        },
        "pixel_confusion": {t: {p: int(total[i, j]) for j, p in enumerate(classes)} for i, t in enumerate(classes)},
        "bootstrap": {"n_boot": int(len(weights)), "ci": float(ci), "seed": int(seed)} | unit,
    }
    if boundary is not None:
        out["boundary"] = boundary_metrics(boundary, cm, classes, weights, ci)
    if calibration is not None:
        out["calibration"] = calibration_metrics(calibration, classes, calibration_bins, weights, ci)
    return out


def roc_points(hist: np.ndarray, c: int) -> list[dict[str, float]]:
    """Pooled pixel ROC of class ``c`` vs the rest from (n, k, 2, bins) histograms; [] if undefined.

    Threshold j/bins: a pixel counts as class c when its binned probability is >= the threshold.
    """
    pooled = np.asarray(hist, dtype=np.float64).sum(axis=0)[c]
    neg, pos = pooled[0], pooled[1]
    if pos.sum() == 0 or neg.sum() == 0:
        return []
    bins = pooled.shape[-1]
    tpr = np.concatenate([np.cumsum(pos[::-1])[::-1], [0.0]]) / pos.sum()
    fpr = np.concatenate([np.cumsum(neg[::-1])[::-1], [0.0]]) / neg.sum()
    return [{"fpr": float(fpr[j]), "tpr": float(tpr[j]), "threshold": j / bins} for j in range(bins, -1, -1)]


def confusion_records(confusion: dict[str, dict[str, int]], n_records: int = 1000) -> list[dict[str, str]]:
    """DVC ``confusion`` plot data: ``n_records`` rows, each standing for 1/n_records of all pixels
    (largest-remainder rounding), because one record per pixel would be millions of rows."""
    cells = [(t, p, count) for t, row in confusion.items() for p, count in row.items()]
    total = sum(c for _, _, c in cells)
    if total == 0:
        return []
    exact = np.array([c * n_records / total for _, _, c in cells])
    share = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - share), kind="stable")[: n_records - share.sum()]:
        share[i] += 1
    return [{"actual": t, "predicted": p} for (t, p, _), s in zip(cells, share) for _ in range(s)]


def format_table(metrics: dict[str, Any], title: str = "Segmentation metrics", digits: int = 2) -> str:
    """Overall lines, a class x metric grid of point values, the pixel confusion matrix, then one
    greppable line per value with its CI (``Dice lesion: 0.91 (0.89-0.93)``)."""
    boot = metrics.get("bootstrap", {})
    ci_text = f"{100 * boot['ci']:g}% bootstrap CI over images, {boot['n_boot']} resamples" if boot else "CI"
    if boot.get("unit") == "group":
        ci_text = (
            f"{100 * boot['ci']:g}% bootstrap CI, {boot['n_boot']} resamples "
            f"of {boot['n_groups']} lesion/patient groups"
        )
    lines = [
        title,
        "=" * len(title),
        f"n = {metrics['n']} images, {metrics.get('pixels', 0):,} pixels; values: point ({ci_text})",
        "",
    ]
    width = max(len(LABELS[m]) for m in OVERALL_METRICS) + 1
    lines += [f"{LABELS[m] + ':':<{width}} {format_value(metrics['overall'].get(m), digits)}" for m in OVERALL_METRICS]
    classes = list(metrics["per_class"])
    name_w = max(len("class"), *(len(c) for c in classes))
    cols = [(m, max(len(LABELS[m]), digits + 2)) for m in CLASS_METRICS]
    header = "  ".join([f"{'class':<{name_w}}"] + [f"{LABELS[m]:<{w}}" for m, w in cols]).rstrip()
    lines += ["", header, "-" * len(header)]
    for cls in classes:
        vals = metrics["per_class"][cls]
        cells = [
            (f"{vals[m]['value']:.{digits}f}" if vals.get(m, {}).get("value") is not None else "n/a") for m, _ in cols
        ]
        lines.append("  ".join([f"{cls:<{name_w}}"] + [f"{c:<{w}}" for c, (_, w) in zip(cells, cols)]).rstrip())
    confusion = metrics.get("pixel_confusion")
    if confusion:
        total = max(1, sum(sum(row.values()) for row in confusion.values()))
        cell_w = max(8, name_w)
        lines += [
            "",
            "Pixel confusion (% of all pixels; rows = truth, columns = prediction)",
            " " * (name_w + 2) + "  ".join(f"{c:>{cell_w}}" for c in classes),
        ]
        for t in classes:
            lines.append(
                f"{t:<{name_w}}  " + "  ".join(f"{100 * confusion[t][p] / total:>{cell_w}.2f}" for p in classes)
            )
    detail = [
        (f"{LABELS[m]} {cls}:", format_value(metrics["per_class"][cls].get(m), digits))
        for m in CLASS_METRICS
        for cls in classes
    ]
    lines += _boundary_lines(metrics.get("boundary"), digits) + _calibration_lines(metrics.get("calibration"))
    detail += [
        (f"{label} {cls}:", format_value(values.get(key), digits if key in ("hd95", "asd") else 3))
        for section, keys in (("boundary", BOUNDARY_LABELS), ("calibration", CALIBRATION_LABELS))
        for cls, values in metrics.get(section, {}).items()
        if isinstance(values, dict)
        for key, label in keys.items()
    ]
    label_w = max(len(label) for label, _ in detail)
    lines += ["", "Details:"] + [f"{label:<{label_w}} {value}" for label, value in detail]
    if metrics.get("subgroups"):
        from dermdl.evaluation.subgroups import format_subgroups

        lines += ["", format_subgroups(metrics["subgroups"]).rstrip("\n")]
    return "\n".join(lines) + "\n"


BOUNDARY_LABELS = {"hd95": "HD95 (px)", "asd": "ASSD (px)"}
CALIBRATION_LABELS = {"ece": "ECE", "brier": "Brier"}


def _boundary_lines(boundary: dict[str, Any] | None, digits: int) -> list[str]:
    """Surface distances per foreground class, with the images they leave out said out loud."""
    if not boundary:
        return []
    lines = ["", "Boundary (pixels of the original image; mean over images where both masks have the class)"]
    for cls, b in boundary.items():
        lines.append(
            f"{cls}: HD95 {format_value(b['hd95'], digits)}, ASSD {format_value(b['asd'], digits)}; "
            f"{b['n_images']} images, {b['n_one_empty']} left out (class in only one of truth and prediction)"
        )
    return lines


def _calibration_lines(calibration: dict[str, Any] | None) -> list[str]:
    if not calibration:
        return []
    lines = ["", f"Pixel calibration ({calibration['bins']} equal-width probability bins)"]
    for cls, c in calibration.items():
        if isinstance(c, dict):
            lines.append(f"{cls}: ECE {format_value(c['ece'], 3)}, Brier {format_value(c['brier'], 3)}")
    return lines
