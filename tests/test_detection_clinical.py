"""Detection clinical evaluation (issue 13): a CI on every COCO number, the cluster bootstrap, per-image
AP50 and the gallery of the worst images, checked against plain pycocotools runs."""

import json

import numpy as np
import pytest
from PIL import Image

from dermdl.models import ModelConfig
from dermdl.params import params_from_dict
from dermdl.tasks.detection.analyze import analyze
from dermdl.tasks.detection.metrics import detection_metrics, format_table, run_cocoeval
from dermdl.tasks.detection.weighted import STATS, per_image_ap50, weighted_stats

SIZES = {"small": (8, 28), "medium": (36, 90), "large": (100, 180)}  # box sides: area < 32², < 96², above


def sized_case(seed=0, n_images=40):
    """Objects of all three COCO sizes, two categories, jittered true boxes, false positives, distinct
    scores (so duplicated images keep a well-defined ranking) and one negative image."""
    rng = np.random.default_rng(seed)
    gt = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "mel"}, {"id": 2, "name": "nv"}]}
    results = []
    for i in range(1, n_images + 1):
        gt["images"].append({"id": i, "file_name": f"img_{i:03d}.png", "width": 400, "height": 400})
        for _ in range(0 if i == 1 else int(rng.integers(1, 4))):
            side = rng.uniform(*SIZES[str(rng.choice(list(SIZES)))], 2)
            x, y = rng.uniform(0, 400 - side)
            cat = int(rng.integers(1, 3))
            gt["annotations"].append(
                {
                    "id": len(gt["annotations"]) + 1,
                    "image_id": i,
                    "category_id": cat,
                    "bbox": [x, y, side[0], side[1]],
                    "area": float(side[0] * side[1]),
                    "iscrowd": 0,
                }
            )
            if rng.random() < 0.85:
                jitter = rng.normal(0, 0.08, 4) * np.r_[side, side]
                box = [x + jitter[0], y + jitter[1], max(2, side[0] + jitter[2]), max(2, side[1] + jitter[3])]
                wrong = rng.random() < 0.1
                results.append({"image_id": i, "category_id": 3 - cat if wrong else cat, "bbox": box})
        for _ in range(int(rng.integers(0, 3))):
            side = rng.uniform(10, 120)
            results.append({"image_id": i, "category_id": int(rng.integers(1, 3)), "bbox": [50, 60, side, side]})
    for r, score in zip(results, rng.permutation(len(results))):
        r["score"] = float(0.05 + 0.9 * (score + rng.random() * 0.5) / len(results))
    return gt, results


@pytest.fixture(scope="module")
def case():
    gt, results = sized_case()
    return gt, results, run_cocoeval(gt, results)


def test_case_has_objects_of_every_size(case):
    evaluator = case[2]
    assert all(v > -1 for v in evaluator.stats), evaluator.stats  # every one of the 12 numbers is defined


def test_every_coco_number_gets_a_seeded_ci_around_pycocotools_value(case):
    gt, results, evaluator = case
    a = detection_metrics(gt, results, n_boot=300, seed=4, evaluator=evaluator)
    assert list(a["overall"]) == list(STATS) and len(STATS) == 12
    for key, index in STATS.items():
        m = a["overall"][key]
        assert m["value"] == pytest.approx(evaluator.stats[index], abs=1e-12), key
        assert m["lo"] <= m["value"] <= m["hi"] and m["hi"] - m["lo"] > 0, key
    assert detection_metrics(gt, results, n_boot=300, seed=4) == a
    other = detection_metrics(gt, results, n_boot=300, seed=5, evaluator=evaluator)
    assert other["overall"]["AR10"]["lo"] != a["overall"]["AR10"]["lo"]
    assert a["bootstrap"] == {"n_boot": 300, "ci": 0.95, "seed": 4, "unit": "image"}


def duplicated(gt, results, copies_of):
    """A COCO set holding image ``ids[j]`` once per entry ``j`` of ``copies_of`` (new ids 1..n)."""
    ids = [img["id"] for img in gt["images"]]
    big = {"images": [], "annotations": [], "categories": gt["categories"]}
    big_results = []
    for new_id, index in enumerate(copies_of, start=1):
        old = ids[index]
        big["images"].append({**gt["images"][index], "id": new_id, "file_name": f"copy_{new_id:04d}.png"})
        for ann in gt["annotations"]:
            if ann["image_id"] == old:
                big["annotations"].append(ann | {"id": len(big["annotations"]) + 1, "image_id": new_id})
        big_results += [r | {"image_id": new_id} for r in results if r["image_id"] == old]
    return big, big_results


@pytest.mark.parametrize("seed", [5, 6])
def test_a_resample_weighting_is_pycocotools_on_the_duplicated_images(case, seed):
    gt, results, evaluator = case
    n = len(gt["images"])
    draw = np.sort(np.random.default_rng(seed).integers(0, n, n))
    reference = run_cocoeval(*duplicated(gt, results, draw)).stats
    recombined = weighted_stats(evaluator, np.bincount(draw, minlength=n)[None].astype(float))
    for key, index in STATS.items():
        assert recombined[key][0] == pytest.approx(reference[index], abs=1e-9), key


@pytest.mark.parametrize("k", [2, 3])
def test_k_copies_of_each_image_in_one_group_give_the_originals_cis(k):
    gt, results = sized_case(seed=1, n_images=15)
    original = detection_metrics(gt, results, n_boot=200, seed=2)
    order = np.repeat(np.arange(len(gt["images"])), k)
    big, big_results = duplicated(gt, results, order)
    groups = [f"lesion{gt['images'][i]['id']:03d}" for i in order]  # sorted like the original image ids
    clustered = detection_metrics(big, big_results, n_boot=200, seed=2, groups=groups)
    assert clustered["bootstrap"] == {"n_boot": 200, "ci": 0.95, "seed": 2, "unit": "group", "n_groups": 15}
    assert clustered["n"] == k * original["n"]
    for section in ("overall", "per_category"):
        flat_a, flat_b = _flat(original[section]), _flat(clustered[section])
        assert flat_a.keys() == flat_b.keys()
        for name, value in flat_a.items():
            assert flat_b[name] == pytest.approx(value, abs=1e-12), name
    naive = detection_metrics(big, big_results, n_boot=200, seed=2)  # images as if independent
    width = _flat(naive["overall"])["AP50.hi"] - _flat(naive["overall"])["AP50.lo"]
    assert width < _flat(original["overall"])["AP50.hi"] - _flat(original["overall"])["AP50.lo"]


def _flat(tree, prefix=""):
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_groups_must_match_the_images(case):
    gt, results, evaluator = case
    with pytest.raises(ValueError, match="3 group ids for 40 images"):
        detection_metrics(gt, results, n_boot=100, evaluator=evaluator, groups=["a", "b", "c"])


def single_image_reference(gt, results, image_id, threshold):
    """Per-image AP50 the slow way: pycocotools on a data set of that one image (its stats[1] averages
    AP50 over the categories annotated there); no annotations: 0 with a detection >= threshold."""
    alone = {
        "images": [img for img in gt["images"] if img["id"] == image_id],
        "annotations": [a for a in gt["annotations"] if a["image_id"] == image_id],
        "categories": gt["categories"],
    }
    mine = [r for r in results if r["image_id"] == image_id]
    if not any(not a.get("iscrowd") for a in alone["annotations"]):
        return 0.0 if any(r["score"] >= threshold for r in mine) else None
    return float(run_cocoeval(alone, mine).stats[1])


def test_per_image_ap50_equals_pycocotools_on_each_image_alone(case):
    gt, results, evaluator = case
    threshold = float(np.median([r["score"] for r in results]))
    values = per_image_ap50(evaluator, threshold)
    expected = [single_image_reference(gt, results, i, threshold) for i in evaluator.params.imgIds]
    assert values == pytest.approx(expected, abs=1e-12)
    assert 0 < sum(v == 1.0 for v in values) < len(values) and any(v is not None and v < 1 for v in values)


BOX = [10, 10, 20, 20]
FP_BOX = [60, 60, 10, 10]


@pytest.mark.parametrize(
    ("truth", "detections", "threshold", "expected"),
    [
        ([1], [(1, BOX, 0.9)], 0.5, 1.0),  # found
        ([1], [(2, BOX, 0.9)], 0.5, 0.0),  # right box, wrong diagnosis: the lesion is not found
        ([1], [(1, FP_BOX, 0.9), (1, BOX, 0.8)], 0.5, 0.5),  # a false alarm ranked first: precision 1/2
        ([1], [(1, BOX, 0.9), (2, FP_BOX, 0.95)], 0.5, 1.0),  # another category's box counts in its own AP
        ([], [(1, FP_BOX, 0.3)], 0.5, None),  # no lesion, nothing shown: undefined
        ([], [(1, FP_BOX, 0.6)], 0.5, 0.0),  # no lesion, a shown detection: a false alarm
        ([], [], 0.5, None),
        ([1, 2], [(1, BOX, 0.9)], 0.5, 0.5),  # mean over the annotated categories
    ],
)
def test_per_image_ap50_conventions(truth, detections, threshold, expected):
    gt = {
        "images": [{"id": 1, "width": 100, "height": 100}],
        "annotations": [
            {"id": n, "image_id": 1, "category_id": c, "bbox": BOX, "area": 400, "iscrowd": 0}
            for n, c in enumerate(truth, start=1)
        ],
        "categories": [{"id": 1, "name": "mel"}, {"id": 2, "name": "nv"}],
    }
    results = [{"image_id": 1, "category_id": c, "bbox": b, "score": s} for c, b, s in detections]
    assert per_image_ap50(run_cocoeval(gt, results), threshold) == [pytest.approx(expected)]


def test_table_shows_every_number_and_the_resampling_unit(case):
    gt, results, evaluator = case
    groups = [f"p{img['id'] // 2}" for img in gt["images"]]
    table = format_table(detection_metrics(gt, results, n_boot=100, evaluator=evaluator, groups=groups))
    assert "95% bootstrap CI over 21 lesion/patient groups, 100 resamples" in table
    for label in ("AP75:", "AP small / medium / large:", "AR@1 / 10 / 100:", "AR small / medium / large:"):
        line = next(line for line in table.splitlines() if line.startswith(label))
        assert line.count("(") == line.count("|") + 1 and "n/a" not in line, line


def _config():
    return ModelConfig(
        task="detection",
        arch="efficientnet_lite0",
        classes=["mel", "nv"],
        input_size=64,
        mean=[0.5] * 3,
        std=[0.5] * 3,
        preprocess_size=64,
        resize="pad",
    )


def _write_test_set(root, out, gt, results):
    """What infer leaves for analyze: images on disk, <test>_gt.json with each image's path, results."""
    folder = root / "images" / "sl_test"
    folder.mkdir(parents=True)
    for img in gt["images"]:
        Image.new("RGB", (img["width"], img["height"]), (180, 120, 100)).save(folder / img["file_name"])
        img["path"] = str((folder / img["file_name"]).resolve())
    (out / "predictions").mkdir(parents=True)
    (out / "predictions" / "sl_test_gt.json").write_text(json.dumps(gt))
    (out / "predictions" / "sl_test.json").write_text(json.dumps(results))


@pytest.mark.parametrize(("resample", "explain"), [("auto", 3), ("image", 0)])
def test_analyze_writes_cluster_cis_per_image_table_and_worst_gallery(tmp_path, resample, explain):
    gt, results = sized_case(seed=3, n_images=12)
    root, out = tmp_path / "data", tmp_path / "out"
    _write_test_set(root, out, gt, results)
    rows = ["path,group"] + [f"images/sl_test/{img['file_name']},patient{img['id'] % 4}" for img in gt["images"]]
    (root / "groups.csv").write_text("\n".join(rows) + "\n")
    params = params_from_dict(
        {
            "task": "detection",
            "out_dir": str(out),
            "data": {"root": str(root), "sl_train": ["sl_train"], "sl_tests": ["sl_test"]},
            "analyze": {"n_boot": 100, "resample": resample, "explain": explain},
        }
    )
    config = _config()
    plots = out / "plots"
    metrics = analyze(out / "predictions", "sl_test", config, params, plots)
    unit = {"unit": "group", "n_groups": 4} if resample == "auto" else {"unit": "image"}
    assert metrics["bootstrap"] == {"n_boot": 100, "ci": 0.95, "seed": 0} | unit
    evaluator = run_cocoeval(gt, results)
    groups = [f"patient{img['id'] % 4}" for img in gt["images"]] if resample == "auto" else None
    expected_metrics = detection_metrics(gt, results, n_boot=100, groups=groups)
    assert metrics == {**expected_metrics, "any_lesion": metrics["any_lesion"], "subgroups": None}
    table = json.loads((plots / "per_image_ap" / "sl_test.json").read_text())
    expected = dict(zip(evaluator.params.imgIds, per_image_ap50(evaluator, params.detection.score_threshold)))
    by_name = {img["file_name"]: expected[img["id"]] for img in gt["images"]}
    assert {row["image"]: row["ap"] for row in table} == pytest.approx(by_name)
    defined = [row["ap"] for row in table if row["ap"] is not None]
    assert defined == sorted(defined) and len(table) == 12 and set(table[0]) == {"image", "ap", "objects"}
    worst = plots / "figures" / "sl_test_gallery_worst_ap.png"
    assert worst.is_file() == (explain > 0) and (plots / "figures" / "sl_test_gallery.png").is_file()


def test_group_resampling_without_groups_is_a_one_line_error(tmp_path):
    gt, results = sized_case(seed=3, n_images=4)
    root, out = tmp_path / "data", tmp_path / "out"
    _write_test_set(root, out, gt, results)
    params = params_from_dict(
        {"task": "detection", "out_dir": str(out), "data": {"root": str(root)}, "analyze": {"resample": "group"}}
    )
    config = _config()
    with pytest.raises(ValueError, match=r"^analyze.resample: group needs lesion/patient ids[^\n]*$"):
        analyze(out / "predictions", "sl_test", config, params, out / "plots")


def test_analyze_reports_ap_per_metadata_subgroup(tmp_path):
    """Each subgroup's AP/AP50 are the COCO numbers of its images alone (same seed, same groups)."""
    gt, results = sized_case(seed=4, n_images=16)
    root, out = tmp_path / "data", tmp_path / "out"
    _write_test_set(root, out, gt, results)
    site = {img["file_name"]: ("back" if img["id"] % 2 else "face") for img in gt["images"]}
    rows = ["path,site"] + [f"images/sl_test/{name},{value}" for name, value in site.items()]
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    params = params_from_dict(
        {
            "task": "detection",
            "out_dir": str(out),
            "data": {"root": str(root), "sl_train": ["sl_train"], "sl_tests": ["sl_test"]},
            "analyze": {"n_boot": 100, "explain": 0, "subgroups": ["site"]},
        }
    )
    metrics = analyze(out / "predictions", "sl_test", _config(), params, out / "plots")
    by_site = metrics["subgroups"]["columns"]["site"]
    for value in ("back", "face"):
        images = [img for img in gt["images"] if site[img["file_name"]] == value]
        ids = {img["id"] for img in images}
        subset = {**gt, "images": images, "annotations": [a for a in gt["annotations"] if a["image_id"] in ids]}
        expected = detection_metrics(subset, [r for r in results if r["image_id"] in ids], n_boot=100)["overall"]
        assert by_site[value]["n"] == 8
        assert by_site[value]["AP"] == expected["AP"] and by_site[value]["AP50"] == expected["AP50"]
    assert (out / "plots" / "subgroups" / "sl_test--site.json").is_file()
    assert "site" in format_table(metrics)
