"""External test sets (issue 13, item 5): label maps, class subsets, and what analyze says is not defined.

The scan cases run through ``params`` (``data.label_maps``, ``data.sl_tests``) as validate/preprocess do;
the metrics are checked against scikit-learn restricted to the present classes; one case runs the whole
pipeline on an external set made from a subset of the demo data.
"""

from __future__ import annotations

import csv
import json
import shutil
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import balanced_accuracy_score, precision_recall_fscore_support, roc_auc_score

from dermdl import pipeline
from dermdl.errors import ParamsError
from dermdl.params import params_from_dict
from dermdl.tasks import get_task
from dermdl.tasks.classification.metrics import classification_metrics, format_table

CLASSES = ["melanoma", "nevus", "seborrheic_keratosis"]


def _img(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((12, 12, 3), 120, np.uint8)).save(path)


def _scan(tmp_path: Path, folders: dict[str, int], label_map: dict[str, str] | None, train_only: bool = False):
    """A training set with every class (two images each) and a test set ``ext`` of the given folders."""
    root = tmp_path / "data"
    for cls in CLASSES:
        for i in range(2):
            _img(root / "sl_train" / cls / f"{cls}_{i}.png")
    for folder, n in folders.items():
        for i in range(n):
            _img(root / "ext" / folder / f"{folder}_{i}.png")
    maps = {} if label_map is None else {"ext": label_map}
    params = params_from_dict({"data": {"root": str(root), "sl_tests": ["ext"], "label_maps": maps}})
    names = ["sl_train"] if train_only else ["sl_train", "ext"]
    return get_task("classification").scan(params, names, check_images=True)


# id, ext folders (name -> images), label map, expected ext targets, error needles, warning needles
SCAN_CASES = [
    (
        "many_to_one",
        {"common_nevus": 2, "atypical_nevus": 1, "mel": 3, "seborrheic_keratosis": 1},
        {"common_nevus": "nevus", "atypical_nevus": "nevus", "mel": "melanoma"},
        {"nevus": 3, "melanoma": 3, "seborrheic_keratosis": 1},
        [],
        [],
    ),
    (
        "subset_with_map",
        {"common_nevus": 2, "mel": 1},
        {"common_nevus": "nevus", "mel": "melanoma"},
        {"nevus": 2, "melanoma": 1},
        [],
        ["test set 'ext' has no images of class(es) seborrheic_keratosis"],
    ),
    # declared external by an (empty) map: a subset under the model's own folder names
    ("subset_empty_map", {"nevus": 2}, {}, {"nevus": 2}, [], ["no images of class(es) melanoma, seborrheic_k"]),
    # not in data.label_maps: an ordinary test set, a missing class is a forgotten folder
    (
        "subset_not_declared",
        {"nevus": 2, "melanoma": 1},
        None,
        {"nevus": 2, "melanoma": 1},
        ["class 'seborrheic_keratosis' is missing from dataset 'ext' (present in: sl_train)", "label_maps: {ext: {}}"],
        [],
    ),
    (
        "unknown_folder",
        {"nevus": 1, "vasc": 2},
        {},
        {"nevus": 1},
        ["folder 'vasc' of test set 'ext' is neither a model class", "data.label_maps"],
        [],
    ),
    (
        "case_mismatch_folder",
        {"Nevus": 1, "melanoma": 1},
        {},
        {"melanoma": 1},
        ["folder 'Nevus' of test set 'ext'", "rename the folder to 'nevus'"],
        [],
    ),
    (
        "value_not_a_class",
        {"common_nevus": 1, "melanoma": 1},
        {"common_nevus": "naevus"},
        {"melanoma": 1},
        ["data.label_maps.ext maps folder 'common_nevus' to 'naevus', which is not a model class"],
        [],
    ),
    (
        "map_names_a_missing_folder",
        {"nevus": 1, "melanoma": 1, "seborrheic_keratosis": 1},
        {"sk": "seborrheic_keratosis"},
        {"nevus": 1, "melanoma": 1, "seborrheic_keratosis": 1},
        [],
        ["data.label_maps.ext maps folder 'sk', which test set 'ext' does not have"],
    ),
]


@pytest.mark.parametrize(
    "folders, label_map, targets, errors, warns", [c[1:] for c in SCAN_CASES], ids=[c[0] for c in SCAN_CASES]
)
def test_label_map_scan(tmp_path, folders, label_map, targets, errors, warns):
    items, classes, report = _scan(tmp_path, folders, label_map)
    assert classes == CLASSES  # the training sets' classes: a test set never adds or removes one
    assert Counter(it.target for it in items if it.dataset == "ext") == targets
    for it in items:  # the original folder stays in the path
        assert it.path.parent.name in folders or it.dataset == "sl_train"
    error_text = "\n".join(p.line() for p in report.errors)
    warning_text = "\n".join(p.line() for p in report.warnings)
    assert len(report.errors) == (1 if errors else 0), error_text  # one problem, one line
    for needle in errors:
        assert needle in error_text
    for needle in warns:
        assert needle in warning_text
    assert report.ok == (not errors)


def test_classes_come_from_training_sets_only(tmp_path):
    """The same classes whether or not the test set is scanned: preprocess's manifest can't drift."""
    folders, label_map = {"mel": 1, "nevus": 1}, {"mel": "melanoma"}
    assert _scan(tmp_path / "a", folders, label_map)[1] == _scan(tmp_path / "b", folders, label_map, True)[1]


@pytest.mark.parametrize(
    "data, needle",
    [
        ({"sl_tests": ["ext"], "label_maps": {"other": {"a": "b"}}}, "label_maps names ['other'], which are not in"),
        ({"sl_tests": ["ext"], "label_maps": {"ext": ["a"]}}, "label_maps"),
    ],
)
def test_label_map_params_errors(data, needle):
    with pytest.raises(ParamsError, match=r"label_maps") as info:
        params_from_dict({"data": data})
    assert needle in str(info.value)


@pytest.mark.parametrize("task, why", [("segmentation", "mask values"), ("detection", "COCO file")])
def test_label_maps_are_refused_where_classes_are_not_folders(task, why):
    with pytest.raises(ParamsError, match=rf"data.label_maps: not available for {task} \(.*{why}"):
        params_from_dict({"task": task, "data": {"sl_tests": ["ext"], "label_maps": {"ext": {"a": "b"}}}})


def _subset_case() -> tuple[np.ndarray, np.ndarray]:
    """4 classes, class 3 absent from the truth but predicted (at least twice)."""
    rng = np.random.default_rng(3)
    y = np.array([0] * 12 + [1] * 10 + [2] * 8)
    logits = rng.normal(size=(len(y), 4))
    logits[np.arange(len(y)), y] += 1.2
    logits[[0, 13], 3] += 5  # two images predicted as the absent class
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, p


def test_absent_class_metrics_match_sklearn_over_present_classes():
    y, p = _subset_case()
    names = ["a", "b", "c", "vasc"]
    m = classification_metrics(y, p, names, n_boot=200)
    pred = p.argmax(axis=1)
    present = [0, 1, 2]
    assert m["absent_classes"] == ["vasc"]
    vasc = m["per_class"]["vasc"]
    assert vasc["recall"] == {"value": None, "lo": None, "hi": None} and vasc["auc"]["value"] is None
    n_vasc = int((pred == 3).sum())
    assert n_vasc >= 2 and vasc["precision"]["value"] == 0.0  # predicted, never right: all false positives
    assert vasc["specificity"]["value"] == pytest.approx(1 - n_vasc / 30)
    prec, rec, f1, _ = precision_recall_fscore_support(y, pred, labels=present, zero_division=np.nan)
    aucs = [roc_auc_score(y == c, p[:, c]) for c in present]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns that y_pred holds a class absent from y_true
        bal = balanced_accuracy_score(y, pred)
    expected = {"precision": np.nanmean(prec), "recall": np.mean(rec), "f1": np.nanmean(f1), "auc": np.mean(aucs)}
    for key, value in expected.items():
        assert m["macro"][key]["value"] == pytest.approx(value), key
    assert m["overall"]["balanced_accuracy"]["value"] == pytest.approx(bal)
    # every macro averages the present classes only, also for metrics the absent class has (specificity)
    spec = np.mean([m["per_class"][names[c]]["specificity"]["value"] for c in present])
    assert m["macro"]["specificity"]["value"] == pytest.approx(spec)
    json.dumps(m, allow_nan=False)
    text = format_table(m, "Test set ext")
    assert "macro: mean over the 3 of 4 classes present: a, b, c" in text
    assert "vasc: no images in this test set; recall and AUC not defined" in text
    assert "Balanced accuracy:" in text and "(over the 3 of 4 classes present" in text


def test_all_classes_present_has_no_absent_note():
    y, p = _subset_case()
    m = classification_metrics(y, p[:, :3], ["a", "b", "c"], n_boot=50)
    assert m["absent_classes"] == [] and "not defined" not in format_table(m, "t")


@pytest.fixture(scope="module")
def external_run(tmp_path_factory):
    """validate -> preprocess -> train (1 epoch, 32 px, no download) -> infer -> analyze on an external set
    made like docs/external-validation.md: two demo classes of sl_test under other folder names."""
    from dermdl.demo import generate_demo

    base = tmp_path_factory.mktemp("external")
    generate_demo(base / "demo", n_train=6, n_test=4, n_weak=0, size=32)
    root = base / "demo" / "classification"
    ext = root / "hospital_b"
    shutil.copytree(root / "sl_test" / "melanoma", ext / "MEL")
    nevi = sorted((root / "sl_test" / "nevus").iterdir())
    for i, image in enumerate(nevi):  # one class split into two folders: many-to-one
        target = ext / ("common_nevus" if i % 2 else "atypical_nevus") / image.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(image, target)
    params = params_from_dict(
        {
            "out_dir": str(base / "out"),
            "data": {
                "root": str(root),
                "sl_tests": ["hospital_b"],
                "label_maps": {"hospital_b": {"MEL": "melanoma", "common_nevus": "nevus", "atypical_nevus": "nevus"}},
            },
            "preprocess": {"size": 32, "workers": 1},
            "train": {"pretrained": False, "input_size": 32, "bs": 8, "fepochs": 0, "epochs": 1},
            "analyze": {"n_boot": 100},
        }
    )
    report = pipeline.validate(params)
    manifest = pipeline.preprocess(params)
    pipeline.train(params)
    pipeline.infer(params)
    full = pipeline.analyze(params)
    return params, report, manifest, full


def test_external_set_runs_end_to_end(external_run):
    params, report, manifest, full = external_run
    assert report.ok and any("seborrheic_keratosis" in p.line() for p in report.warnings)
    assert manifest["classes"] == CLASSES
    targets = Counter(r["target"] for r in manifest["datasets"]["hospital_b"])
    assert targets == {"melanoma": 4, "nevus": 4}
    with open(params.out / "predictions" / "hospital_b.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    pairs = {(r["folder"], r["true_label"]) for r in rows}
    assert pairs == {("MEL", "melanoma"), ("common_nevus", "nevus"), ("atypical_nevus", "nevus")}
    metrics = full["hospital_b"]
    assert metrics["n"] == 8 and metrics["absent_classes"] == ["seborrheic_keratosis"]
    sk = metrics["per_class"]["seborrheic_keratosis"]
    assert sk["recall"]["value"] is None and sk["auc"]["value"] is None
    for cls in ("melanoma", "nevus"):
        assert metrics["per_class"][cls]["recall"]["value"] is not None
        assert metrics["per_class"][cls]["auc"]["value"] is not None
    aucs = [metrics["per_class"][c]["auc"]["value"] for c in ("melanoma", "nevus")]
    assert metrics["macro"]["auc"]["value"] == pytest.approx(np.mean(aucs))
    summary = (params.out / "summary.txt").read_text()
    assert "seborrheic_keratosis: no images in this test set; recall and AUC not defined" in summary
    assert "macro: mean over the 2 of 3 classes present: melanoma, nevus" in summary
    point = json.loads((params.out / "metrics.json").read_text())["hospital_b"]
    assert point["macro_auc"] == pytest.approx(np.mean(aucs))  # over the classes present
