"""Detection metrics: pycocotools numbers, a hand-made case with known AP, and the bootstrap recombination."""

import copy
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from dermdl.tasks.detection.metrics import (
    class_agnostic,
    detection_metrics,
    format_table,
    pr_points,
    run_cocoeval,
)
from dermdl.tasks.detection.weighted import weighted_stats

KNOWN_AP = (51 * 1.0 + 50 * (2 / 3)) / 101  # see test_hand_made_case_has_known_ap


def hand_made():
    """Two objects; detections: TP (0.9), FP (0.8), TP (0.7).

    Precision/recall after each detection: (1, .5), (.5, .5), (.667, 1). Interpolated precision is
    1 for recall <= .5 (51 of COCO's 101 recall points) and 2/3 above (50 points). The boxes are exact,
    so every IoU threshold gives the same AP.
    """
    gt = {
        "images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [50, 50, 30, 30], "area": 900, "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "lesion"}],
    }
    results = [
        {"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.9},
        {"image_id": 1, "category_id": 1, "bbox": [60, 60, 10, 10], "score": 0.8},
        {"image_id": 2, "category_id": 1, "bbox": [50, 50, 30, 30], "score": 0.7},
    ]
    return gt, results


def reference_stats(gt, results, tmp_path):
    """Plain pycocotools, the documented way: files, COCO(), loadRes, COCOeval."""
    gt_file = tmp_path / "gt.json"
    gt_file.write_text(json.dumps(gt))
    coco = COCO(str(gt_file))
    evaluator = COCOeval(coco, coco.loadRes(copy.deepcopy(results)), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return evaluator.stats


def random_case(seed=0, n_images=30):
    rng = np.random.default_rng(seed)
    gt = {
        "images": [],
        "annotations": [],
        "categories": [{"id": 3, "name": "melanoma"}, {"id": 5, "name": "nevus"}, {"id": 7, "name": "never_annotated"}],
    }
    results = []
    for i in range(1, n_images + 1):
        gt["images"].append({"id": i, "width": 200, "height": 200})
        for _ in range(rng.integers(0, 3) if i > 3 else 0):  # images 1-3 are negatives
            x, y = rng.uniform(0, 120, 2)
            w, h = rng.uniform(10, 80, 2)
            cat = int(rng.choice([3, 5]))
            gt["annotations"].append(
                {
                    "id": len(gt["annotations"]) + 1,
                    "image_id": i,
                    "category_id": cat,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": int(rng.random() < 0.05),
                }
            )
            if rng.random() < 0.8:
                jitter = rng.normal(0, 4, 4)
                results.append(
                    {
                        "image_id": i,
                        "category_id": cat if rng.random() < 0.85 else 8 - cat,
                        "bbox": [x + jitter[0], y + jitter[1], max(1, w + jitter[2]), max(1, h + jitter[3])],
                        "score": float(rng.uniform(0.3, 1)),
                    }
                )
        for _ in range(rng.integers(0, 3)):  # false positives
            x, y = rng.uniform(0, 150, 2)
            results.append(
                {
                    "image_id": i,
                    "category_id": int(rng.choice([3, 5, 7])),
                    "bbox": [x, y, 30, 30],
                    "score": float(rng.uniform(0, 0.8)),
                }
            )
    return gt, results


def test_hand_made_case_has_known_ap(tmp_path):
    gt, results = hand_made()
    metrics = detection_metrics(gt, results, n_boot=200)
    overall = metrics["overall"]
    for key in ("AP", "AP50"):
        assert overall[key]["value"] == pytest.approx(KNOWN_AP, abs=1e-9)
    assert overall["AP75"]["value"] == pytest.approx(KNOWN_AP, abs=1e-9)
    assert overall["AP_small"]["value"] == pytest.approx(KNOWN_AP, abs=1e-9)
    undefined = {"value": None, "lo": None, "hi": None}
    assert overall["AP_medium"] == undefined and overall["AP_large"] == undefined  # no objects of that size
    assert overall["AR1"]["value"] == pytest.approx(1.0) and overall["AR100"]["value"] == pytest.approx(1.0)
    assert metrics["per_category"]["lesion"]["AP50"]["value"] == pytest.approx(KNOWN_AP, abs=1e-9)
    assert metrics["n"] == 2 and metrics["n_objects"] == 2
    stats = reference_stats(gt, results, tmp_path)
    assert stats[0] == pytest.approx(KNOWN_AP, abs=1e-9) and stats[1] == pytest.approx(KNOWN_AP, abs=1e-9)


def test_metrics_match_pycocotools_on_a_messy_case(tmp_path):
    gt, results = random_case()
    metrics = detection_metrics(gt, results, n_boot=100)
    stats = reference_stats(gt, results, tmp_path)
    keys = ["AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR1", "AR10", "AR100"]
    keys += ["AR_small", "AR_medium", "AR_large"]
    for index, key in enumerate(keys):
        value = metrics["overall"][key]["value"]
        assert (value is None and stats[index] < 0) or value == pytest.approx(stats[index], abs=1e-12), key
    assert metrics["per_category"]["never_annotated"]["AP"] == {"value": None, "lo": None, "hi": None}


def test_recombination_with_unit_weights_is_pycocotools():
    gt, results = random_case(seed=1)
    evaluator = run_cocoeval(gt, results)
    ones = np.ones((1, len(gt["images"])))
    recombined = weighted_stats(evaluator, ones)
    assert recombined["AP"][0] == pytest.approx(evaluator.stats[0], abs=1e-12)
    assert recombined["AP50"][0] == pytest.approx(evaluator.stats[1], abs=1e-12)
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    for k in range(precision.shape[2]):
        expected = precision[:, :, k].mean() if (precision[:, :, k] > -1).all() else np.nan
        assert np.allclose(recombined["AP_per_category"][0, k], expected, equal_nan=True)


def test_bootstrap_weights_equal_pycocotools_on_the_resampled_dataset():
    """A resample (images drawn with replacement) evaluated by pycocotools on an explicitly duplicated
    dataset gives the same AP/AP50 as the weighted recombination."""
    gt, results = random_case(seed=2, n_images=20)
    evaluator = run_cocoeval(gt, results)
    draw = np.random.default_rng(5).integers(0, 20, 20)
    ids = [img["id"] for img in gt["images"]]
    big = {"images": [], "annotations": [], "categories": gt["categories"]}
    big_results = []
    for new_id, index in enumerate(sorted(draw), start=1):
        old = ids[index]
        big["images"].append({"id": new_id, "width": 200, "height": 200})
        for ann in gt["annotations"]:
            if ann["image_id"] == old:
                big["annotations"].append(ann | {"id": len(big["annotations"]) + 1, "image_id": new_id})
        big_results += [r | {"image_id": new_id} for r in results if r["image_id"] == old]
    reference = run_cocoeval(big, big_results).stats
    weights = np.bincount(draw, minlength=20)[None].astype(float)
    recombined = weighted_stats(evaluator, weights)
    assert recombined["AP"][0] == pytest.approx(reference[0], abs=1e-9)
    assert recombined["AP50"][0] == pytest.approx(reference[1], abs=1e-9)


def test_confidence_intervals_are_seeded_and_bracket_the_value():
    gt, results = random_case(seed=3, n_images=40)
    a = detection_metrics(gt, results, n_boot=300, seed=1)
    b = detection_metrics(gt, results, n_boot=300, seed=1)
    assert a == b
    for key in ("AP", "AP50"):
        m = a["overall"][key]
        assert m["lo"] <= m["value"] <= m["hi"] and m["hi"] - m["lo"] > 0
    assert a["bootstrap"] == {"n_boot": 300, "ci": 0.95, "seed": 1, "unit": "image"}
    json.dumps(a, allow_nan=False)  # JSON-safe: undefined values are None


def test_no_detections_and_no_objects():
    gt, _ = hand_made()
    empty = detection_metrics(gt, [], n_boot=100)
    assert empty["overall"]["AP"]["value"] == 0.0 and empty["overall"]["AR100"]["value"] == 0.0
    negatives = {"images": gt["images"], "annotations": [], "categories": gt["categories"]}
    none = detection_metrics(negatives, hand_made()[1], n_boot=100)
    assert none["overall"]["AP"] == {"value": None, "lo": None, "hi": None}


def test_pr_points_and_table():
    gt, results = hand_made()
    evaluator = run_cocoeval(gt, results)
    points = pr_points(evaluator, 0)
    assert len(points) == 101 and points[0] == {"recall": 0.0, "precision": 1.0, "threshold": 0.9}
    assert points[-1]["precision"] == pytest.approx(2 / 3, abs=1e-5) and points[-1]["threshold"] == 0.7
    table = format_table(detection_metrics(gt, results, n_boot=100), "Test set demo")
    assert table.startswith("Test set demo\n=============")
    assert "AP50:" in table and "AP50 lesion: 0.835" in table and "AR@1 / 10 / 100:" in table
    assert "AP small / medium / large: 0.835 (" in table and "| n/a | n/a" in table


def test_class_agnostic_scores_boxes_whatever_their_class():
    """Right boxes, wrong diagnosis: per-class AP50 is 0, the merged "lesion" AP50 is the box AP."""
    gt, results = hand_made()
    gt = {**gt, "categories": [{"id": 1, "name": "mel"}, {"id": 2, "name": "nv"}]}
    wrong = [{**r, "category_id": 2} for r in results]
    assert detection_metrics(gt, wrong, n_boot=100)["per_category"]["mel"]["AP50"]["value"] == 0.0
    merged = detection_metrics(*class_agnostic(gt, wrong), n_boot=100)
    assert merged["overall"]["AP50"]["value"] == pytest.approx(KNOWN_AP)
    assert gt["annotations"][0]["category_id"] == 1 and wrong[0]["category_id"] == 2  # inputs untouched
    table = format_table({**detection_metrics(gt, wrong, n_boot=100), "any_lesion": merged["overall"]})
    assert "Any lesion, diagnosis ignored: AP50 0.83" in table
