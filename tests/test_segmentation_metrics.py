"""Segmentation metrics vs an independent computation (sklearn / plain loops) on fixed arrays."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, f1_score, jaccard_score, roc_auc_score, roc_curve

from dermdl.bootstrap import bootstrap_indices, percentile_ci
from dermdl.tasks.segmentation import metrics as sm

CLASSES = ["skin", "lesion", "scar"]
K = len(CLASSES)
RNG = np.random.default_rng(7)
SHAPES = [(12, 10), (8, 8), (10, 14), (9, 11), (6, 7)]


def _case():
    """Five images: noisy predictions, one where 'scar' is absent from truth AND prediction, one
    with no lesion in the truth but some predicted, one perfect."""
    truths, preds, probs = [], [], []
    for i, (h, w) in enumerate(SHAPES):
        truth = np.zeros((h, w), np.int64)
        truth[2 : h - 2, 3 : w - 1] = 1
        if i in (1, 3):
            truth[0:2, 0:3] = 2
        if i == 2:
            truth[truth == 1] = 0
        logits = np.eye(K)[truth].transpose(2, 0, 1) * 2.0 + RNG.normal(0, 1.2, (K, h, w))
        if i == 0:
            logits[2] -= 10  # no scar predicted (and none true): scar Dice undefined for image 0
        p = np.exp(logits) / np.exp(logits).sum(0)
        pred = p.argmax(0)
        if i == 4:
            pred, p = truth.copy(), np.eye(K)[truth].transpose(2, 0, 1) * 0.98 + 0.02 / K
        truths.append(truth), preds.append(pred), probs.append(p)
    return truths, preds, probs


TRUTHS, PREDS, PROBS = _case()
CM = np.stack([sm.confusion_counts(t, p, K) for t, p in zip(TRUTHS, PREDS)])
HIST = np.stack([sm.probability_histograms(t, p) for t, p in zip(TRUTHS, PROBS)])


def _reference(images: list[int]) -> dict[str, list[float]]:
    """The same metrics from the pixels themselves, with sklearn where it has them."""
    out: dict[str, list[float]] = {m: [] for m in sm.CLASS_METRICS}
    t_all = np.concatenate([TRUTHS[i].ravel() for i in images])
    p_all = np.concatenate([PREDS[i].ravel() for i in images])
    for c in range(K):
        dice, iou = [], []
        for i in images:
            t, p = TRUTHS[i].ravel() == c, PREDS[i].ravel() == c
            if t.any() or p.any():  # undefined when the class is in neither
                dice.append(f1_score(t, p))
                iou.append(jaccard_score(t, p))
        out["dice"].append(np.mean(dice) if dice else np.nan)
        out["iou"].append(np.mean(iou) if iou else np.nan)
        out["thresholded_jaccard"].append(np.mean([v if v >= 0.65 else 0.0 for v in iou]) if iou else np.nan)
        t, p = t_all == c, p_all == c
        tn, fp, fn, tp = confusion_matrix(t, p, labels=[False, True]).ravel()
        defined = t.any() or p.any()
        out["dice_pooled"].append(f1_score(t, p) if defined else np.nan)
        out["iou_pooled"].append(jaccard_score(t, p) if defined else np.nan)
        out["precision"].append(tp / (tp + fp) if tp + fp else np.nan)
        out["recall"].append(tp / (tp + fn) if tp + fn else np.nan)
        out["specificity"].append(tn / (tn + fp) if tn + fp else np.nan)
        scores = np.concatenate([np.floor(np.clip(PROBS[i][c].ravel(), 0, 1 - 1e-9) * sm.BINS) for i in images])
        out["auc"].append(roc_auc_score(t, scores) if 0 < t.sum() < t.size else np.nan)
    out["pixel_accuracy"] = [float((t_all == p_all).mean())]
    out["dice_foreground"] = [np.nanmean(out["dice"][1:])]
    out["iou_foreground"] = [np.nanmean(out["iou"][1:])]
    return out


def _value(m):
    return np.nan if m["value"] is None else m["value"]


def test_point_estimates_match_an_independent_computation():
    metrics = sm.segmentation_metrics(CM, HIST, CLASSES, n_boot=100)
    ref = _reference(list(range(len(TRUTHS))))
    for c, cls in enumerate(CLASSES):
        for m in sm.CLASS_METRICS:
            np.testing.assert_allclose(_value(metrics["per_class"][cls][m]), ref[m][c], atol=1e-12, err_msg=(cls, m))
    for m in sm.OVERALL_METRICS:
        np.testing.assert_allclose(_value(metrics["overall"][m]), ref[m][0], atol=1e-12, err_msg=m)
    assert metrics["n"] == 5 and metrics["pixels"] == sum(h * w for h, w in SHAPES)
    cm = confusion_matrix(np.concatenate([t.ravel() for t in TRUTHS]), np.concatenate([p.ravel() for p in PREDS]))
    assert [[metrics["pixel_confusion"][t][p] for p in CLASSES] for t in CLASSES] == cm.tolist()


def test_undefined_images_are_left_out_and_thresholded_jaccard_zeroes_low_iou():
    images = sm.per_image(CM)
    assert np.isnan(images["dice"][0, 2]) and np.isnan(images["iou"][0, 2])  # scar: in neither truth nor prediction
    assert images["dice"][4, :2].tolist() == [1.0, 1.0] and np.isnan(images["dice"][4, 2])  # perfect image
    low = images["iou"] < 0.65
    assert (images["thresholded_jaccard"][low] == 0).all()
    assert np.array_equal(
        images["thresholded_jaccard"][~low & ~np.isnan(images["iou"])], images["iou"][~low & ~np.isnan(images["iou"])]
    )


def test_bootstrap_cis_match_a_naive_resampling_loop():
    indices = bootstrap_indices(len(TRUTHS), 60, seed=3)
    metrics = sm.segmentation_metrics(CM, HIST, CLASSES, ci=0.9, indices=indices)
    refs = [_reference(list(row)) for row in indices]
    for c, cls in enumerate(CLASSES):
        for m in sm.CLASS_METRICS:
            lo, hi = percentile_ci(np.array([r[m][c] for r in refs]), 0.9)
            got = metrics["per_class"][cls][m]
            assert (got["lo"], got["hi"]) == pytest.approx((lo, hi), abs=1e-12), (cls, m)
    for m in sm.OVERALL_METRICS:
        lo, hi = percentile_ci(np.array([r[m][0] for r in refs]), 0.9)
        assert (metrics["overall"][m]["lo"], metrics["overall"][m]["hi"]) == pytest.approx((lo, hi), abs=1e-12)
    assert metrics["bootstrap"] == {"n_boot": 60, "ci": 0.9, "seed": 0, "unit": "image"}


def test_seeded_bootstrap_is_reproducible_and_json_safe():
    a = sm.segmentation_metrics(CM, HIST, CLASSES, n_boot=300, seed=1)
    assert a == sm.segmentation_metrics(CM, HIST, CLASSES, n_boot=300, seed=1)
    json.dumps(a, allow_nan=False)
    assert a != sm.segmentation_metrics(CM, HIST, CLASSES, n_boot=300, seed=2)


def test_undefined_metrics_are_none():
    cm = np.array([[[10, 0], [0, 0]]])  # one image, only skin, predicted as skin
    metrics = sm.segmentation_metrics(cm, None, ["skin", "lesion"], n_boot=100)
    lesion = metrics["per_class"]["lesion"]
    assert lesion["dice"] == {"value": None, "lo": None, "hi": None}
    assert lesion["precision"]["value"] is None and lesion["specificity"]["value"] == 1.0
    assert lesion["auc"]["value"] is None  # no histograms
    assert "Dice lesion:" in sm.format_table(metrics) and "n/a" in sm.format_table(metrics)
    with pytest.raises(ValueError, match="per-image confusion counts"):
        sm.segmentation_metrics(np.zeros((0, 2, 2)), None, ["skin", "lesion"])


def test_roc_points_match_sklearn_on_the_binned_scores():
    for c in range(K):
        points = sm.roc_points(HIST, c)
        truth = np.concatenate([t.ravel() == c for t in TRUTHS])
        scores = np.concatenate([np.floor(np.clip(p[c].ravel(), 0, 1 - 1e-9) * sm.BINS) for p in PROBS])
        fpr, tpr, _ = roc_curve(truth, scores)
        ours = {(round(p["fpr"], 12), round(p["tpr"], 12)) for p in points}
        assert {(round(f, 12), round(t, 12)) for f, t in zip(fpr, tpr)} <= ours
        assert points[0] == {"fpr": 0.0, "tpr": 0.0, "threshold": 1.0}
        assert points[-1] == {"fpr": 1.0, "tpr": 1.0, "threshold": 0.0}
    assert sm.roc_points(np.zeros((1, 2, 2, sm.BINS)), 1) == []


def test_confusion_records_represent_pixel_shares():
    confusion = {"skin": {"skin": 700, "lesion": 55}, "lesion": {"skin": 45, "lesion": 200}}
    records = sm.confusion_records(confusion, n_records=100)
    assert len(records) == 100
    count = lambda a, p: sum(r == {"actual": a, "predicted": p} for r in records)  # noqa: E731
    assert (count("skin", "skin"), count("skin", "lesion"), count("lesion", "skin"), count("lesion", "lesion")) in [
        (70, 6, 4, 20),
        (70, 5, 5, 20),
        (70, 6, 5, 19),
    ]
    assert sm.confusion_records({"a": {"a": 0}}) == []


def test_table_has_greppable_lines_with_cis():
    metrics = sm.segmentation_metrics(CM, HIST, CLASSES, n_boot=200)
    text = sm.format_table(metrics, "Test set x (n=5, 95% CI)")
    m = metrics["per_class"]["lesion"]["dice"]
    assert "Dice lesion:" in text
    line = next(line for line in text.splitlines() if line.startswith("Dice lesion:"))
    assert line.split(":", 1)[1].strip() == f"{m['value']:.2f} ({m['lo']:.2f}-{m['hi']:.2f})"
    for label in (
        "Thresholded Jaccard scar:",
        "IoU (pooled) skin:",
        "Specificity lesion:",
        "AUC lesion:",
        "Pixel accuracy:",
        "Pixel confusion",
    ):
        assert label in text
    assert text.startswith("Test set x (n=5, 95% CI)\n========================")
