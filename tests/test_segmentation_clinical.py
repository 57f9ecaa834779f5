"""Segmentation clinical evaluation (issue 13): boundary distances, pixel calibration and the cluster
bootstrap, each against an independent computation (brute force over pixels, scipy, a plain loop)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.spatial.distance import cdist, directed_hausdorff

from dermdl.bootstrap import bootstrap_indices, percentile_ci
from dermdl.tasks.segmentation import boundary as sb
from dermdl.tasks.segmentation import calibration as sc
from dermdl.tasks.segmentation import metrics as sm

# --- boundary ------------------------------------------------------------------------------------------


def _brute_surface(mask: np.ndarray) -> np.ndarray:
    """(m, 2) coordinates of mask pixels with a 4-neighbour outside the mask or outside the image."""
    h, w = mask.shape
    out = []
    for r in range(h):
        for c in range(w):
            if not mask[r, c]:
                continue
            for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                rr, cc = r + dr, c + dc
                if not (0 <= rr < h and 0 <= cc < w) or not mask[rr, cc]:
                    out.append((r, c))
                    break
    return np.array(out, dtype=np.float64)


def _disk(shape, centre, radius):
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


def _rect(shape, r0, r1, c0, c1):
    m = np.zeros(shape, bool)
    m[r0:r1, c0:c1] = True
    return m


SHAPE = (24, 30)
CASES = {
    "identical squares": (_rect(SHAPE, 5, 15, 5, 15), _rect(SHAPE, 5, 15, 5, 15)),
    "shifted squares": (_rect(SHAPE, 5, 15, 5, 15), _rect(SHAPE, 7, 17, 8, 18)),
    "disk vs square": (_disk(SHAPE, (12, 14), 7), _rect(SHAPE, 6, 18, 8, 20)),
    "touching the image edge": (_rect(SHAPE, 0, 10, 0, 30), _rect(SHAPE, 0, 12, 3, 30)),
    "whole image vs a blob": (np.ones(SHAPE, bool), _disk(SHAPE, (10, 10), 4)),
    "single pixel vs disk": (_rect(SHAPE, 3, 4, 3, 4), _disk(SHAPE, (15, 20), 5)),
    "two blobs vs one": (_rect(SHAPE, 2, 6, 2, 6) | _rect(SHAPE, 15, 22, 20, 28), _rect(SHAPE, 3, 7, 2, 6)),
    "ring vs disk": (_disk(SHAPE, (12, 15), 9) & ~_disk(SHAPE, (12, 15), 4), _disk(SHAPE, (12, 15), 8)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_hd95_and_assd_match_brute_force_over_surface_pixels(name):
    truth, prediction = CASES[name]
    t, p = _brute_surface(truth), _brute_surface(prediction)
    d = cdist(p, t)
    pred_to_truth, truth_to_pred = d.min(axis=1), d.min(axis=0)
    both = np.concatenate([pred_to_truth, truth_to_pred])
    labels_t, labels_p = truth.astype(np.uint8), prediction.astype(np.uint8)
    hd95, asd = sb.image_boundary(labels_t, labels_p, 2)
    assert np.isnan(hd95[0]) and np.isnan(asd[0])  # background: not measured
    assert hd95[1] == pytest.approx(np.percentile(both, 95), abs=1e-9)
    assert asd[1] == pytest.approx(both.mean(), abs=1e-9)
    a, b = sb.surface_distances(truth, prediction)
    hausdorff = max(directed_hausdorff(p, t)[0], directed_hausdorff(t, p)[0])
    assert max(a.max(), b.max()) == pytest.approx(hausdorff, abs=1e-9)
    assert sorted(a) == pytest.approx(sorted(pred_to_truth)) and sorted(b) == pytest.approx(sorted(truth_to_pred))


@pytest.mark.parametrize(
    "truth_has, prediction_has",
    [(False, False), (True, False), (False, True)],
)
def test_boundary_is_undefined_when_a_mask_is_empty(truth_has, prediction_has):
    blob = _rect(SHAPE, 4, 9, 4, 9).astype(np.uint8) * 2  # class 2 of 3
    truth, prediction = (blob if truth_has else 0 * blob), (blob if prediction_has else 0 * blob)
    hd95, asd = sb.image_boundary(truth, prediction, 3)
    assert np.isnan(hd95).all() and np.isnan(asd).all()


def test_boundary_means_leave_out_and_count_undefined_images():
    pairs = [CASES["shifted squares"], CASES["disk vs square"], (_rect(SHAPE, 1, 5, 1, 5), np.zeros(SHAPE, bool))]
    pairs.append((np.zeros(SHAPE, bool), np.zeros(SHAPE, bool)))
    truths = [t.astype(np.uint8) for t, _ in pairs]
    preds = [p.astype(np.uint8) for _, p in pairs]
    per = [sb.image_boundary(t, p, 2) for t, p in zip(truths, preds)]
    values = {"hd95": np.stack([h for h, _ in per]), "asd": np.stack([a for _, a in per])}
    cm = np.stack([sm.confusion_counts(t, p, 2) for t, p in zip(truths, preds)])
    metrics = sm.segmentation_metrics(cm, None, ["skin", "lesion"], n_boot=200, boundary=values)
    lesion = metrics["boundary"]["lesion"]
    assert lesion["hd95"]["value"] == pytest.approx((per[0][0][1] + per[1][0][1]) / 2)
    assert lesion["asd"]["value"] == pytest.approx((per[0][1][1] + per[1][1][1]) / 2)
    assert (lesion["n_images"], lesion["n_one_empty"]) == (2, 1)
    assert "skin" not in metrics["boundary"]
    text = sm.format_table(metrics)
    assert "HD95 (px) lesion:" in text and "1 left out (class in only one of truth and prediction)" in text


# --- calibration ---------------------------------------------------------------------------------------

RNG = np.random.default_rng(11)
SHAPES = [(9, 12), (10, 10), (7, 13), (12, 8), (11, 11), (6, 9)]


def _calibration_case(k: int = 3):
    """Over-confident noisy probabilities of k classes on small images."""
    truths, probs = [], []
    for h, w in SHAPES:
        truth = RNG.integers(0, k, (h, w))
        logits = 2.5 * np.eye(k)[truth].transpose(2, 0, 1) + RNG.normal(0, 1.5, (k, h, w))
        p = np.exp(logits) / np.exp(logits).sum(axis=0)
        truths.append(truth), probs.append(p)
    return truths, probs


TRUTHS, PROBS = _calibration_case()
STATS = sc.PixelCalibration.stack([sc.image_stats(t, p) for t, p in zip(TRUTHS, PROBS)])


def _naive(images, c, n_bins):
    """ECE, Brier and the reliability bins of class c, pixel by pixel."""
    p = np.concatenate([PROBS[i][c].ravel() for i in images])
    y = np.concatenate([(TRUTHS[i] == c).ravel() for i in images]).astype(float)
    index = np.minimum((p * n_bins).astype(int), n_bins - 1)
    ece, records = 0.0, []
    for j in range(n_bins):
        inside = index == j
        if inside.any():
            ece += inside.sum() / p.size * abs(y[inside].mean() - p[inside].mean())
            records.append((p[inside].mean(), y[inside].mean(), int(inside.sum())))
    return ece, float(((p - y) ** 2).mean()), records


@pytest.mark.parametrize("n_bins", [2, 8, 10, 20, 100, 1000])
def test_ece_brier_and_reliability_match_a_pixel_loop_when_bins_divide_the_grid(n_bins):
    weights = np.ones((1, len(TRUTHS)))
    got = sc.resample_calibration(STATS, n_bins, weights)
    for c in (1, 2):
        ece, brier, records = _naive(range(len(TRUTHS)), c, n_bins)
        assert got["ece"][0, c - 1] == pytest.approx(ece, abs=1e-6)
        assert got["brier"][0, c - 1] == pytest.approx(brier, abs=1e-12)
        ours = [(r["confidence"], r["accuracy"], r["count"]) for r in sc.reliability_records(STATS, c, n_bins)]
        assert len(ours) == len(records)
        for a, b in zip(ours, records):
            assert a == pytest.approx(b, abs=1e-6)


def test_ece_with_bins_that_do_not_divide_the_grid_moves_edges_by_under_a_thousandth():
    got = sc.resample_calibration(STATS, 15, np.ones((1, len(TRUTHS))))["ece"][0, 0]
    ece = _naive(range(len(TRUTHS)), 1, 15)[0]
    assert got == pytest.approx(ece, abs=0.01)


def test_calibration_cis_match_a_naive_resampling_loop_and_survive_a_file_round_trip(tmp_path):
    STATS.save(tmp_path / sc.FILE)
    loaded = sc.PixelCalibration.load(tmp_path / sc.FILE)
    indices = bootstrap_indices(len(TRUTHS), 50, seed=4)
    cm = np.stack([sm.confusion_counts(t, p.argmax(0), 3) for t, p in zip(TRUTHS, PROBS)])
    metrics = sm.segmentation_metrics(
        cm, None, ["skin", "lesion", "scar"], ci=0.9, indices=indices, calibration=loaded, calibration_bins=10
    )
    assert metrics["calibration"]["bins"] == 10 and set(metrics["calibration"]) == {"lesion", "scar", "bins"}
    for c, cls in ((1, "lesion"), (2, "scar")):
        refs = np.array([_naive(list(row), c, 10)[:2] for row in indices])
        point = _naive(range(len(TRUTHS)), c, 10)
        for j, key in enumerate(("ece", "brier")):
            lo, hi = percentile_ci(refs[:, j], 0.9)
            got = metrics["calibration"][cls][key]
            assert got["value"] == pytest.approx(point[j], abs=1e-6)
            assert (got["lo"], got["hi"]) == pytest.approx((lo, hi), abs=1e-6)
    text = sm.format_table(metrics)
    assert "Pixel calibration (10 equal-width probability bins)" in text and "ECE scar:" in text


def test_a_perfectly_calibrated_constant_has_zero_ece():
    truth = np.zeros((10, 10), int)
    truth[:3] = 1  # 30% lesion, predicted 0.3 everywhere
    probs = np.stack([np.full((10, 10), 0.7), np.full((10, 10), 0.3)])
    stats = sc.PixelCalibration.stack([sc.image_stats(truth, probs)])
    got = sc.resample_calibration(stats, 15, np.ones((1, 1)))
    assert got["ece"][0, 0] == pytest.approx(0.0, abs=1e-12)
    assert got["brier"][0, 0] == pytest.approx(0.3 * 0.7**2 + 0.7 * 0.3**2)


# --- cluster bootstrap ---------------------------------------------------------------------------------


def test_cluster_bootstrap_of_copies_equals_the_bootstrap_of_the_originals():
    """k copies of each image in one group give exactly the CIs of the originals, for every metric
    (pixel counts, boundary, calibration); resampling the copies as images shrinks the CIs."""
    n, k = len(TRUTHS), 3
    cm = np.stack([sm.confusion_counts(t, p.argmax(0), 3) for t, p in zip(TRUTHS, PROBS)])
    hist = np.stack([sm.probability_histograms(t, p) for t, p in zip(TRUTHS, PROBS)])
    per = [sb.image_boundary(t, p.argmax(0), 3) for t, p in zip(TRUTHS, PROBS)]
    bound = {"hd95": np.stack([h for h, _ in per]), "asd": np.stack([a for _, a in per])}
    classes = ["skin", "lesion", "scar"]
    common = {"n_boot": 300, "seed": 1, "calibration_bins": 10}
    alone = sm.segmentation_metrics(cm, hist, classes, boundary=bound, calibration=STATS, **common)
    copies = sc.PixelCalibration(np.repeat(STATS.bins, k, axis=0), np.repeat(STATS.squared, k, axis=0))
    rep = {key: np.repeat(v, k, axis=0) for key, v in bound.items()}
    args = (np.repeat(cm, k, axis=0), np.repeat(hist, k, axis=0), classes)
    groups = np.repeat([f"lesion{i}" for i in range(n)], k)
    grouped = sm.segmentation_metrics(*args, groups=groups, boundary=rep, calibration=copies, **common)
    naive = sm.segmentation_metrics(*args, boundary=rep, calibration=copies, **common)
    json.dumps(grouped, allow_nan=False)
    for cls in ("lesion", "scar"):
        for key in ("hd95", "asd"):
            assert grouped["boundary"][cls][key] == pytest.approx(alone["boundary"][cls][key])
        assert grouped["boundary"][cls]["n_images"] == k * alone["boundary"][cls]["n_images"]
        for key in ("ece", "brier"):
            assert grouped["calibration"][cls][key] == pytest.approx(alone["calibration"][cls][key])
    for cls in classes:
        for m in sm.CLASS_METRICS:
            a, g = alone["per_class"][cls][m], grouped["per_class"][cls][m]
            assert [g[x] for x in ("value", "lo", "hi")] == pytest.approx([a[x] for x in ("value", "lo", "hi")])
    assert grouped["bootstrap"] == {"n_boot": 300, "ci": 0.95, "seed": 1, "unit": "group", "n_groups": n}
    assert naive["bootstrap"]["unit"] == "image" and "n_groups" not in naive["bootstrap"]
    width = lambda m: m["hi"] - m["lo"]  # noqa: E731
    assert width(naive["overall"]["dice_foreground"]) < 0.8 * width(grouped["overall"]["dice_foreground"])
    assert f"of {n} lesion/patient groups" in sm.format_table(grouped)
    assert "bootstrap CI over images" in sm.format_table(naive)
    with pytest.raises(ValueError, match="2 group ids for 6 images"):
        sm.segmentation_metrics(cm, hist, classes, groups=["a", "b"])
