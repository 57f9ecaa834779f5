"""Tests for dermdl.tasks.classification.metrics and .plots: point values vs scikit-learn, bootstrap CIs,
table, plot data, PNGs."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

from dermdl.bootstrap import bootstrap_indices, percentile_ci
from dermdl.tasks.classification import metrics as evaluate
from dermdl.tasks.classification.metrics import (
    CLASS_METRICS,
    classification_metrics,
    format_table,
    resample_metrics,
)
from dermdl.tasks.classification.plots import (
    confusion_records,
    plot_confusion_matrix,
    plot_metric_bars,
    plot_roc_curves,
    roc_points,
)

NAMES = ["nevus", "melanoma", "seborrheic_keratosis", "bcc", "akiec"]


def _hand2() -> tuple[np.ndarray, np.ndarray]:
    """Binary, with tied scores (AUC tie handling) and errors both ways."""
    y = np.array([0, 0, 0, 0, 1, 1, 1, 0, 1, 0])
    s = np.array([0.1, 0.4, 0.6, 0.4, 0.4, 0.8, 0.9, 0.2, 0.3, 0.7])
    return y, np.stack([1 - s, s], axis=1)


def _hand3() -> tuple[np.ndarray, np.ndarray]:
    y = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 0, 1, 2])
    p = np.array(
        [
            [0.7, 0.2, 0.1],
            [0.5, 0.3, 0.2],
            [0.2, 0.6, 0.2],
            [0.3, 0.5, 0.2],
            [0.1, 0.8, 0.1],
            [0.4, 0.4, 0.2],
            [0.2, 0.2, 0.6],
            [0.1, 0.3, 0.6],
            [0.5, 0.1, 0.4],
            [0.6, 0.2, 0.2],
            [0.2, 0.3, 0.5],
            [0.3, 0.3, 0.4],
        ]
    )
    return y, p


def _random(k: int, n: int, seed: int, signal: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += signal * 2
    p = np.exp(logits)
    return y, p / p.sum(axis=1, keepdims=True)


CASES = {
    "hand_k2": _hand2,
    "hand_k3": _hand3,
    "random_k2": lambda: _random(2, 80, 1),
    "random_k3": lambda: _random(3, 150, 2),
    "random_k5": lambda: _random(5, 300, 3),
}


def _nan(v: float | None) -> float:
    return math.nan if v is None else v


def _sklearn_reference(y: np.ndarray, p: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class and overall values computed independently with scikit-learn."""
    k = p.shape[1]
    pred = p.argmax(axis=1)
    labels = list(range(k))
    prec, rec, f1, _ = precision_recall_fscore_support(y, pred, labels=labels, zero_division=np.nan)
    cm = confusion_matrix(y, pred, labels=labels)
    tp = np.diag(cm)
    fp, fn = cm.sum(axis=0) - tp, cm.sum(axis=1) - tp
    tn = cm.sum() - tp - fp - fn
    with np.errstate(divide="ignore", invalid="ignore"):
        spec, npv = tn / (tn + fp), tn / (tn + fn)
    auc = np.array([roc_auc_score(y == c, p[:, c]) if 0 < (y == c).sum() < len(y) else np.nan for c in labels])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bal = balanced_accuracy_score(y, pred)
    return {
        "precision": prec,
        "recall": rec,
        "f1": f1,
        "specificity": spec,
        "npv": npv,
        "auc": auc,
        "accuracy": accuracy_score(y, pred),
        "balanced_accuracy": bal,
    }


@pytest.mark.parametrize("case", sorted(CASES))
def test_point_values_match_sklearn(case: str) -> None:
    y, p = CASES[case]()
    k = p.shape[1]
    classes = NAMES[:k]
    m = classification_metrics(y, p, classes, n_boot=50, seed=0)
    ref = _sklearn_reference(y, p)
    assert m["n"] == len(y)
    for name in CLASS_METRICS:
        ours = [_nan(m["per_class"][c][name]["value"]) for c in classes]
        np.testing.assert_allclose(ours, ref[name], rtol=0, atol=1e-12, err_msg=name)
        macro = np.nanmean(ref[name])
        assert m["macro"][name]["value"] == pytest.approx(macro, abs=1e-12), name
    assert m["overall"]["accuracy"]["value"] == pytest.approx(ref["accuracy"], abs=1e-12)
    assert m["overall"]["balanced_accuracy"]["value"] == pytest.approx(ref["balanced_accuracy"], abs=1e-12)


@pytest.mark.parametrize("case", sorted(CASES))
def test_macro_matches_sklearn_averages(case: str) -> None:
    y, p = CASES[case]()
    k = p.shape[1]
    pred = p.argmax(axis=1)
    m = classification_metrics(y, p, NAMES[:k], n_boot=0)
    prec, rec, f1, _ = precision_recall_fscore_support(y, pred, average="macro", zero_division=np.nan)
    assert m["macro"]["precision"]["value"] == pytest.approx(prec)
    assert m["macro"]["recall"]["value"] == pytest.approx(rec)
    assert m["macro"]["f1"]["value"] == pytest.approx(f1_score(y, pred, average="macro", zero_division=np.nan))
    if k > 2:
        assert m["macro"]["auc"]["value"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"))
    else:
        # Binary: both one-vs-rest AUCs equal the usual AUC (class 0 scores are 1 - class 1 scores).
        assert m["macro"]["auc"]["value"] == pytest.approx(roc_auc_score(y, p[:, 1]))


@pytest.mark.parametrize("case", sorted(CASES))
def test_ci_brackets_point_and_is_ordered(case: str) -> None:
    y, p = CASES[case]()
    m = classification_metrics(y, p, NAMES[: p.shape[1]], n_boot=300, seed=4)
    groups = [m["overall"], m["macro"], *m["per_class"].values()]
    for group in groups:
        for name, v in group.items():
            if v["value"] is None:
                continue
            assert v["lo"] is not None and v["hi"] is not None, name
            assert v["lo"] <= v["hi"], name
            assert v["lo"] - 1e-12 <= v["value"] <= v["hi"] + 1e-12, (name, v)
            assert 0.0 <= v["lo"] and v["hi"] <= 1.0


def test_same_seed_same_ci_different_seed_different() -> None:
    y, p = _random(3, 200, 7)
    a = classification_metrics(y, p, NAMES[:3], n_boot=200, seed=1)
    b = classification_metrics(y, p, NAMES[:3], n_boot=200, seed=1)
    c = classification_metrics(y, p, NAMES[:3], n_boot=200, seed=2)
    assert a == b
    assert json.dumps(a) != json.dumps(c)
    assert a["overall"]["accuracy"]["value"] == c["overall"]["accuracy"]["value"]
    assert a["overall"]["accuracy"]["lo"] != c["overall"]["accuracy"]["lo"] or (
        a["overall"]["accuracy"]["hi"] != c["overall"]["accuracy"]["hi"]
    )


@pytest.mark.parametrize("k", [2, 3, 5])
def test_perfect_classifier_is_all_ones(k: int) -> None:
    y = np.tile(np.arange(k), 10)
    p = np.eye(k)[y] * 0.9 + 0.1 / k
    m = classification_metrics(y, p, NAMES[:k], n_boot=100)
    for group in [m["overall"], m["macro"], *m["per_class"].values()]:
        for name, v in group.items():
            assert (v["value"], v["lo"], v["hi"]) == (1.0, 1.0, 1.0), name


def test_class_never_predicted_gives_none_not_nan() -> None:
    y = np.array([0, 0, 1, 1, 2, 2, 0, 1])
    p = np.array(
        [
            [0.8, 0.1, 0.1],
            [0.6, 0.3, 0.1],
            [0.2, 0.7, 0.1],
            [0.3, 0.6, 0.1],
            [0.5, 0.2, 0.3],
            [0.2, 0.5, 0.3],
            [0.7, 0.2, 0.1],
            [0.1, 0.8, 0.1],
        ]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from 0/0 either
        m = classification_metrics(y, p, NAMES[:3], n_boot=100)
    seb = m["per_class"]["seborrheic_keratosis"]
    assert seb["precision"] == {"value": None, "lo": None, "hi": None}
    assert seb["recall"]["value"] == 0.0 and seb["f1"]["value"] == 0.0
    assert seb["auc"]["value"] is not None  # still rankable by its probability column
    macro = np.mean([m["per_class"][c]["precision"]["value"] for c in ("nevus", "melanoma")])
    assert m["macro"]["precision"]["value"] == pytest.approx(macro)
    json.dumps(m, allow_nan=False)
    assert "n/a" in format_table(m, "t")


def test_class_absent_from_truth() -> None:
    y = np.array([0, 0, 1, 1, 0, 1])
    p = np.array([[0.6, 0.3, 0.1], [0.2, 0.3, 0.5], [0.2, 0.7, 0.1], [0.3, 0.6, 0.1], [0.7, 0.2, 0.1], [0.5, 0.4, 0.1]])
    m = classification_metrics(y, p, NAMES[:3], n_boot=100)
    seb = m["per_class"]["seborrheic_keratosis"]
    assert seb["recall"]["value"] is None and seb["auc"]["value"] is None
    assert seb["precision"]["value"] == 0.0 and seb["specificity"]["value"] == pytest.approx(5 / 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bal = balanced_accuracy_score(y, p.argmax(axis=1))
    assert m["overall"]["balanced_accuracy"]["value"] == pytest.approx(bal)
    json.dumps(m, allow_nan=False)


def test_json_safe_and_shape() -> None:
    y, p = _random(3, 60, 0)
    m = classification_metrics(y, p, NAMES[:3], n_boot=100)
    text = json.dumps(m, allow_nan=False)
    assert json.loads(text) == m
    assert set(m["overall"]) == {"accuracy", "balanced_accuracy"}
    assert set(m["per_class"]) == set(NAMES[:3])
    assert all(set(v) == set(CLASS_METRICS) for v in m["per_class"].values())
    assert set(m["macro"]) == set(CLASS_METRICS)
    assert all(set(v) == {"value", "lo", "hi"} for v in m["macro"].values())


def test_no_resamples_gives_null_ci() -> None:
    y, p = _hand3()
    m = classification_metrics(y, p, NAMES[:3], n_boot=0)
    assert m["overall"]["accuracy"]["lo"] is None and m["overall"]["accuracy"]["value"] is not None
    assert "Accuracy:" in format_table(m, "t")


@pytest.mark.parametrize("k,n,seed", [(2, 40, 0), (3, 50, 1), (4, 30, 2)])
def test_vectorised_bootstrap_matches_naive_loop(k: int, n: int, seed: int) -> None:
    """Same resample indices -> same CI as a plain per-resample sklearn loop."""
    y, p = _random(k, n, seed, signal=0.3)
    idx = bootstrap_indices(n, 150, seed)
    m = classification_metrics(y, p, NAMES[:k], indices=idx)
    naive: dict[str, list[float]] = {"accuracy": [], "balanced_accuracy": [], "f1_0": [], "prec_1": [], "auc_1": []}
    for row in idx:
        yt, pp = y[row], p[row]
        pred = pp.argmax(axis=1)
        naive["accuracy"].append(accuracy_score(yt, pred))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            naive["balanced_accuracy"].append(balanced_accuracy_score(yt, pred))
        prec, _, f1, _ = precision_recall_fscore_support(yt, pred, labels=list(range(k)), zero_division=np.nan)
        naive["f1_0"].append(f1[0])
        naive["prec_1"].append(prec[1])
        pos = yt == 1
        naive["auc_1"].append(roc_auc_score(pos, pp[:, 1]) if 0 < pos.sum() < n else np.nan)
    got = {
        "accuracy": m["overall"]["accuracy"],
        "balanced_accuracy": m["overall"]["balanced_accuracy"],
        "f1_0": m["per_class"][NAMES[0]]["f1"],
        "prec_1": m["per_class"][NAMES[1]]["precision"],
        "auc_1": m["per_class"][NAMES[1]]["auc"],
    }
    for key, values in naive.items():
        v = np.array(values, dtype=float)
        v = v[~np.isnan(v)]
        lo, hi = np.percentile(v, [2.5, 97.5])
        assert got[key]["lo"] == pytest.approx(lo, abs=1e-12), key
        assert got[key]["hi"] == pytest.approx(hi, abs=1e-12), key


def test_resample_metrics_chunking_is_invisible(monkeypatch: pytest.MonkeyPatch) -> None:
    y, p = _random(3, 40, 5)
    idx = bootstrap_indices(40, 37, 0)
    whole = resample_metrics(y, p, idx)
    monkeypatch.setattr(evaluate, "_CHUNK_ELEMENTS", 100)  # -> chunks of 2 resamples
    chunked = resample_metrics(y, p, idx)
    assert whole.keys() == chunked.keys()
    for key in whole:
        np.testing.assert_array_equal(whole[key], chunked[key], err_msg=key)


def test_bootstrap_indices() -> None:
    a = bootstrap_indices(10, 5, 3)
    assert a.shape == (5, 10) and a.min() >= 0 and a.max() < 10
    np.testing.assert_array_equal(a, bootstrap_indices(10, 5, 3))
    assert not np.array_equal(a, bootstrap_indices(10, 5, 4))


@pytest.mark.parametrize(
    "values,expected",
    [
        ([0.1, 0.2, 0.3], (0.105, 0.295)),
        ([np.nan, 0.5, np.nan], (0.5, 0.5)),
        ([np.nan, np.nan], (None, None)),
        ([], (None, None)),
    ],
)
def test_percentile_ci(values: list[float], expected: tuple) -> None:
    lo, hi = percentile_ci(np.array(values, dtype=float), ci=0.95)
    if expected[0] is None:
        assert (lo, hi) == (None, None)
    else:
        assert (lo, hi) == pytest.approx(expected)


@pytest.mark.parametrize(
    "y,p,classes,match",
    [
        ([0, 1], [[0.5, 0.5], [0.2, 0.8]], ["a"], "columns"),
        ([0, 2], [[0.5, 0.5], [0.2, 0.8]], ["a", "b"], r"\[0, 2\)"),
        ([0, 1, 1], [[0.5, 0.5], [0.2, 0.8]], ["a", "b"], "y_true"),
        ([0, 1], [[0.5, np.nan], [0.2, 0.8]], ["a", "b"], "NaN"),
        ([0, 1], [[0.5, 0.5], [0.2, 0.8]], ["a", "a"], "unique"),
        ([0, 1], [0.5, 0.2], ["a", "b"], "shape"),
        ([0.5, 1], [[0.5, 0.5], [0.2, 0.8]], ["a", "b"], "integer"),
    ],
)
def test_bad_input_raises_clear_error(y: list, p: list, classes: list[str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        classification_metrics(np.array(y), np.array(p), classes, n_boot=10)


def test_format_table_contents() -> None:
    y, p = _hand3()
    m = classification_metrics(y, p, ["nevus", "melanoma", "seborrheic_keratosis"], n_boot=200)
    text = format_table(m, "Test set sl_test")
    assert text.startswith("Test set sl_test\n")
    f1 = m["per_class"]["melanoma"]["f1"]
    assert "F1 melanoma: " in text
    line = next(line for line in text.splitlines() if line.startswith("F1 melanoma:"))
    assert line.split(":", 1)[1].strip() == f"{f1['value']:.2f} ({f1['lo']:.2f}-{f1['hi']:.2f})"
    for needle in ("Accuracy:", "Balanced accuracy:", "AUC macro:", "NPV", "Specificity", "macro"):
        assert needle in text
    assert "nan" not in text.lower()
    assert text.count("\n") > 30
    digits3 = format_table(m, "t", digits=3)
    assert f"{f1['value']:.3f}" in digits3


def test_confusion_records() -> None:
    recs = confusion_records([0, 1, 2], np.array([0, 2, 2]), ["nevus", "melanoma", "sk"])
    assert recs == [
        {"actual": "nevus", "predicted": "nevus"},
        {"actual": "melanoma", "predicted": "sk"},
        {"actual": "sk", "predicted": "sk"},
    ]
    json.dumps(recs, allow_nan=False)


@pytest.mark.parametrize("case", ["hand_k2", "hand_k3", "random_k3"])
def test_roc_points_match_sklearn_and_are_finite(case: str) -> None:
    y, p = CASES[case]()
    for c in range(p.shape[1]):
        pts = roc_points(y, p, c)
        fpr, tpr, thr = roc_curve(y == c, p[:, c])
        assert [d["fpr"] for d in pts] == pytest.approx(fpr.tolist())
        assert [d["tpr"] for d in pts] == pytest.approx(tpr.tolist())
        assert all(math.isfinite(d["threshold"]) for d in pts)
        assert pts[0]["threshold"] > p[:, c].max()
        assert [d["threshold"] for d in pts[1:]] == pytest.approx(thr[1:].tolist())
        json.dumps(pts, allow_nan=False)


def test_roc_points_undefined_class_is_empty() -> None:
    assert roc_points([0, 0, 1], np.array([[0.6, 0.3, 0.1]] * 3), 2) == []


def _is_png(path) -> bool:
    data = path.read_bytes()
    return len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots_write_png(tmp_path) -> None:
    y = np.array([0, 0, 1, 1, 2, 2, 0, 1])
    p = np.array(
        [
            [0.8, 0.1, 0.1],
            [0.6, 0.3, 0.1],
            [0.2, 0.7, 0.1],
            [0.3, 0.6, 0.1],
            [0.5, 0.2, 0.3],
            [0.2, 0.5, 0.3],
            [0.7, 0.2, 0.1],
            [0.1, 0.8, 0.1],
        ]
    )
    classes = NAMES[:3]
    m = classification_metrics(y, p, classes, n_boot=50)  # includes an undefined precision
    out = tmp_path / "plots dir ü"
    plot_metric_bars(m, out / "bars.png", "Metrics")
    plot_confusion_matrix(y, p.argmax(axis=1), classes, out / "cm.png", "CM")
    plot_roc_curves(y, p, classes, out / "roc.png")
    plot_roc_curves([0, 0, 1], np.array([[0.6, 0.3, 0.1]] * 3), classes, out / "roc_undef.png")
    for name in ("bars.png", "cm.png", "roc.png", "roc_undef.png"):
        assert _is_png(out / name), name
    assert sorted(f.name for f in out.iterdir()) == ["bars.png", "cm.png", "roc.png", "roc_undef.png"]


def test_cluster_bootstrap_of_copies_equals_the_bootstrap_of_the_originals():
    """k copies of each image in one group: resampling the groups gives exactly the CIs of the images
    alone — copies add no information; resampling images would shrink the CIs by ~sqrt(k)."""
    from dermdl.tasks.classification.metrics import classification_metrics

    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 40)
    probs = rng.dirichlet(np.ones(3), 40)
    probs[np.arange(40), y] += 0.5
    probs /= probs.sum(axis=1, keepdims=True)
    alone = classification_metrics(y, probs, ["a", "b", "c"], n_boot=300, seed=1)
    k = 4
    copies = classification_metrics(
        np.repeat(y, k),
        np.repeat(probs, k, axis=0),
        ["a", "b", "c"],
        n_boot=300,
        seed=1,
        groups=np.repeat([f"lesion{i:02d}" for i in range(40)], k),
    )
    naive = classification_metrics(np.repeat(y, k), np.repeat(probs, k, axis=0), ["a", "b", "c"], n_boot=300, seed=1)
    for key in ("accuracy", "balanced_accuracy"):
        assert copies["overall"][key] == pytest.approx(alone["overall"][key])
    assert copies["macro"]["auc"] == pytest.approx(alone["macro"]["auc"])
    assert copies["bootstrap"]["unit"] == "group" and copies["bootstrap"]["n_groups"] == 40
    width = lambda m: m["hi"] - m["lo"]  # noqa: E731
    assert width(naive["macro"]["auc"]) < 0.75 * width(copies["macro"]["auc"])
    assert "of 40 lesion/patient groups" in format_table(copies)


@pytest.mark.parametrize(
    "resample, groups_file, unit",
    [("auto", True, "group"), ("auto", False, "image"), ("image", True, "image"), ("group", True, "group")],
)
def test_analyze_resamples_lesions_when_groups_are_known(tmp_path, resample, groups_file, unit):
    from dermdl.models import ModelConfig
    from dermdl.params import params_from_dict
    from dermdl.tasks.classification.analyze import analyze

    root = tmp_path / "data"
    root.mkdir()
    rng = np.random.default_rng(0)
    rows = ["path,true_label,predicted_label,prob_a,prob_b"]
    for i in range(30):
        p = rng.uniform()
        rows.append(f"sl_test/{'ab'[i % 2]}/{i}.png,{'ab'[i % 2]},{'ab'[p > 0.5]},{1 - p:.4f},{p:.4f}")
    (tmp_path / "pred").mkdir()
    (tmp_path / "pred" / "sl_test.csv").write_text("\n".join(rows) + "\n")
    if groups_file:
        (root / "groups.csv").write_text(
            "path,group\n" + "".join(f"sl_test/{'ab'[i % 2]}/{i}.png,L{i // 3}\n" for i in range(30))
        )
    params = params_from_dict(
        {
            "data": {"root": str(root)},
            "out_dir": str(tmp_path / "out"),
            "analyze": {"resample": resample, "n_boot": 200},
        }
    )
    config = ModelConfig(
        task="classification",
        arch="efficientnet_lite0",
        classes=["a", "b"],
        input_size=32,
        mean=[0.5] * 3,
        std=[0.5] * 3,
        preprocess_size=32,
        resize="squish",
    )
    metrics = analyze(tmp_path / "pred", "sl_test", config, params, tmp_path / "plots")
    assert metrics["bootstrap"]["unit"] == unit
    if unit == "group":
        assert metrics["bootstrap"]["n_groups"] == 10


def test_analyze_resample_group_without_groups_is_an_error(tmp_path):
    from dermdl.models import ModelConfig
    from dermdl.params import params_from_dict
    from dermdl.tasks.classification.analyze import analyze

    (tmp_path / "pred").mkdir()
    (tmp_path / "pred" / "t.csv").write_text("path,true_label,predicted_label,prob_a,prob_b\nx.png,a,a,0.9,0.1\n")
    params = params_from_dict({"data": {"root": str(tmp_path / "data")}, "analyze": {"resample": "group"}})
    config = ModelConfig(
        task="classification",
        arch="efficientnet_lite0",
        classes=["a", "b"],
        input_size=32,
        mean=[0.5] * 3,
        std=[0.5] * 3,
        preprocess_size=32,
        resize="squish",
    )
    with pytest.raises(ValueError, match="analyze.resample: group needs lesion/patient ids"):
        analyze(tmp_path / "pred", "t", config, params, tmp_path / "plots")
