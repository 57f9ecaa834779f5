"""Calibration, temperature scaling and operating points: the arithmetic against naive references, then
end to end (train fits the temperature on validation, infer applies it, analyze reports before/after and
chooses thresholds on validation only)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from dermdl.bootstrap import resample_weights
from dermdl.evaluation.calibration import (
    apply_temperature,
    calibration_resamples,
    fit_temperature,
    reliability_points,
    rescale,
)
from dermdl.evaluation.operating_points import binary_auc, operating_resamples, threshold_for_sensitivity


def _probs(n: int, k: int, seed: int, sharpness: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)) * sharpness
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(k, p=p) for p in apply_temperature(probs, 2.0)])  # truth from a softer model
    return probs, y


def _naive_ece(probs: np.ndarray, y: np.ndarray, bins: int) -> float:
    conf, pred = probs.max(axis=1), probs.argmax(axis=1)
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        chosen = (conf >= lo) & ((conf < hi) if b < bins - 1 else (conf <= hi))
        if chosen.any():
            total += chosen.sum() / len(y) * abs((pred[chosen] == y[chosen]).mean() - conf[chosen].mean())
    return total


@pytest.mark.parametrize("n, k, bins", [(50, 2, 10), (300, 3, 15), (1000, 7, 20)])
def test_ece_and_brier_match_naive_definitions(n, k, bins):
    probs, y = _probs(n, k, seed=n)
    point = calibration_resamples(probs, y, np.ones((1, n)), bins)
    assert point["ece"][0] == pytest.approx(_naive_ece(probs, y, bins), abs=1e-12)
    brier = ((probs - np.eye(k)[y]) ** 2).sum(axis=1).mean()
    assert point["brier"][0] == pytest.approx(brier, abs=1e-12)
    assert point["nll"][0] == pytest.approx(log_loss(y, probs, labels=list(range(k))), rel=1e-9)
    # a resample = the metric of the resampled data set
    idx = np.random.default_rng(1).integers(0, n, n)
    weights = np.bincount(idx, minlength=n)[None].astype(float)
    boot = calibration_resamples(probs, y, weights, bins)
    assert boot["ece"][0] == pytest.approx(_naive_ece(probs[idx], y[idx], bins), abs=1e-12)


def test_reliability_points_cover_every_image():
    probs, y = _probs(200, 3, seed=3)
    points = reliability_points(probs, y, 10)
    assert sum(p["count"] for p in points) == 200
    assert all(0 <= p["accuracy"] <= 1 and (p["bin"] - 0.05) <= p["confidence"] <= (p["bin"] + 0.05) for p in points)


def test_fitted_temperature_recovers_the_overconfidence_and_lowers_ece():
    probs, y = _probs(4000, 5, seed=0)  # labels drawn from the same logits at T = 2
    temperature = fit_temperature(probs, y)
    assert temperature == pytest.approx(2.0, rel=0.1)
    before = calibration_resamples(probs, y, np.ones((1, len(y))), 15)["ece"][0]
    after = calibration_resamples(apply_temperature(probs, temperature), y, np.ones((1, len(y))), 15)["ece"][0]
    assert after < before / 2
    assert (apply_temperature(probs, temperature).argmax(1) == probs.argmax(1)).all()  # never changes a decision


def test_rescale_round_trips():
    probs, _ = _probs(20, 4, seed=5)
    scaled = apply_temperature(probs, 1.7)
    np.testing.assert_allclose(rescale(scaled, 1.7, 1.0), probs, atol=1e-9)
    np.testing.assert_allclose(rescale(scaled, 1.7, 0.5), apply_temperature(probs, 0.5), atol=1e-9)


@pytest.mark.parametrize(
    "scores, positive, target, expected",
    [
        ([0.9, 0.8, 0.7, 0.6], [1, 1, 1, 1], 0.75, 0.7),  # 3 of 4 positives must score >= t
        ([0.9, 0.8, 0.7, 0.6], [1, 1, 1, 1], 0.76, 0.6),  # 3.04 of 4 -> all 4
        ([0.9, 0.2, 0.5, 0.1], [1, 0, 1, 0], 0.95, 0.5),
        ([0.3, 0.3, 0.3], [1, 1, 0], 0.5, 0.3),  # ties: the threshold is the score itself
        ([0.4, 0.2], [0, 0], 0.9, None),  # no positives: no threshold
    ],
)
def test_threshold_for_sensitivity(scores, positive, target, expected):
    got = threshold_for_sensitivity(np.array(positive), np.array(scores), target)
    assert got == (pytest.approx(expected) if expected is not None else None)
    if got is not None:
        pos = np.array(positive, bool)
        assert (np.array(scores)[pos] >= got).mean() >= target


def test_operating_metrics_and_auc_match_naive():
    rng = np.random.default_rng(7)
    positive = rng.random(300) < 0.3
    score = np.clip(positive * 0.3 + rng.random(300) * 0.7, 0, 1).round(2)  # ties included
    weights = resample_weights(300, 50, seed=0)
    auc = binary_auc(positive, score, weights)
    ops = operating_resamples(positive, score, 0.5, weights)
    for row in range(50):
        idx = np.repeat(np.arange(300), weights[row].astype(int))
        p, s = positive[idx], score[idx]
        assert auc[row] == pytest.approx(roc_auc_score(p, s), abs=1e-12)
        referred = s >= 0.5
        assert ops["sensitivity"][row] == pytest.approx((referred & p).sum() / p.sum())
        assert ops["specificity"][row] == pytest.approx((~referred & ~p).sum() / (~p).sum())
        assert ops["ppv"][row] == pytest.approx((referred & p).sum() / referred.sum())
        assert ops["npv"][row] == pytest.approx((~referred & ~p).sum() / (~referred).sum())


# --- end to end on the demo -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from dermdl import pipeline
    from dermdl.demo import generate_demo
    from dermdl.params import params_from_dict

    base = tmp_path_factory.mktemp("clinical")
    generate_demo(base / "demo", n_train=12, n_test=6, n_weak=1, size=48)
    raw = {
        "out_dir": str(base / "out"),
        "data": {"root": str(base / "demo" / "classification")},
        "preprocess": {"size": 48, "workers": 1},
        "train": {"input_size": 48, "bs": 8, "epochs": 1, "pretrained": False},
        "infer": {"tta": "flips"},
        "analyze": {"n_boot": 200, "class_groups": {"malignant": ["melanoma"]}},
    }
    params = params_from_dict(raw)
    pipeline.preprocess(params)
    pipeline.train(params)
    pipeline.infer(params)
    return raw, params, pipeline.analyze(params)


pytestmark_e2e = pytest.mark.slow


@pytestmark_e2e
def test_training_fits_a_temperature_on_the_validation_split(trained):
    _, params, _ = trained
    config = json.loads((params.out / "model" / "model.json").read_text())
    fit = config["extra"]["temperature_fit"]
    validation = pd.read_csv(params.out / "model" / "validation.csv")
    assert 0.05 <= config["extra"]["temperature"] <= 20
    assert fit["images"] == len(validation) > 0 and fit["views"] == "flips"
    assert fit["nll_after"] <= fit["nll_before"] + 1e-9  # the fit minimises the validation NLL
    assert (validation["temperature"] == config["extra"]["temperature"]).all()
    manifest = json.loads((params.out / "prepared" / "manifest.json").read_text())
    tests = {r["source"] for r in manifest["datasets"]["sl_test"]}
    assert not tests & set(validation["path"])  # never fitted on a test image


@pytestmark_e2e
def test_analyze_reports_calibration_before_and_after(trained):
    _, params, report = trained
    section = report["sl_test"]["calibration"]
    frame = pd.read_csv(params.out / "predictions" / "sl_test.csv")
    classes = json.loads((params.out / "model" / "model.json").read_text())["classes"]
    probs = frame[[f"prob_{c}" for c in classes]].to_numpy()
    y = frame["true_label"].map(classes.index).to_numpy()
    assert section["reported"] == "after" and section["applied_temperature"] == section["temperature"]
    after = calibration_resamples(probs, y, np.ones((1, len(y))), 15)["ece"][0]
    before = calibration_resamples(rescale(probs, section["temperature"], 1.0), y, np.ones((1, len(y))), 15)
    assert section["after"]["ece"]["value"] == pytest.approx(after, abs=1e-6)
    assert section["before"]["ece"]["value"] == pytest.approx(before["ece"][0], abs=1e-4)
    assert (params.out / "plots" / "calibration" / "sl_test.json").is_file()
    assert (params.out / "plots" / "figures" / "sl_test_reliability.png").is_file()
    summary = (params.out / "summary.txt").read_text()
    assert "Calibration" in summary and "fitted on validation" in summary


@pytestmark_e2e
def test_operating_point_threshold_comes_from_validation(trained):
    _, params, report = trained
    section = report["sl_test"]["operating_points"]
    validation = pd.read_csv(params.out / "model" / "validation.csv")
    positive = (validation["true_label"] == "melanoma").to_numpy()
    expected = threshold_for_sensitivity(positive, validation["prob_melanoma"].to_numpy(), 0.95)
    malignant = section["groups"]["malignant"]
    assert malignant["threshold"] == pytest.approx(expected, abs=1e-5)
    assert malignant["validation"]["sensitivity"] >= 0.95
    frame = pd.read_csv(params.out / "predictions" / "sl_test.csv")
    referred = frame["prob_melanoma"] >= malignant["threshold"]
    truth = frame["true_label"] == "melanoma"
    assert malignant["sensitivity"]["value"] == pytest.approx((referred & truth).sum() / truth.sum())
    assert malignant["n_positive"] == truth.sum()
    assert set(section["per_class"]) == {"melanoma", "nevus", "seborrheic_keratosis"}
    assert (params.out / "plots" / "roc" / "sl_test--group-malignant.json").is_file()
    assert "Operating points" in (params.out / "summary.txt").read_text()


@pytestmark_e2e
def test_calibrate_false_writes_the_raw_softmax(trained, tmp_path):
    from dermdl import pipeline
    from dermdl.params import params_from_dict

    raw, params, report = trained
    off = params_from_dict({**raw, "infer": {"tta": "flips", "calibrate": False}})
    pipeline.infer(off)
    frame = pd.read_csv(params.out / "predictions" / "sl_test.csv")
    assert (frame["temperature"] == 1.0).all()
    again = pipeline.analyze(off)["sl_test"]["calibration"]
    assert again["reported"] == "before"
    before = report["sl_test"]["calibration"]["before"]["ece"]["value"]
    assert again["before"]["ece"]["value"] == pytest.approx(before, abs=1e-4)


def test_unknown_class_in_a_group_is_one_clear_error(tmp_path):
    from dermdl.models import ModelConfig
    from dermdl.params import params_from_dict
    from dermdl.tasks.classification.clinical import operating_points
    from dermdl.tasks.classification.predictions_csv import TestPredictions

    test = TestPredictions("t", pd.DataFrame({"x": [0, 1]}), ["a", "b"], np.array([0, 1]), np.eye(2), None)
    config = ModelConfig("classification", "m", ["a", "b"], 32, [0.5] * 3, [0.5] * 3, 32, "squish")
    params = params_from_dict({"analyze": {"class_groups": {"malignant": ["melanoma"]}}}).analyze
    with pytest.raises(ValueError, match=r"analyze.class_groups.malignant: \['melanoma'\] not among"):
        operating_points(test, config, params, tmp_path, tmp_path)


@pytest.mark.parametrize("bad", [0, -1.0, 1e9, "2", True, None])
def test_a_broken_temperature_in_model_json_is_one_clear_error(bad):
    from dermdl.models import ModelConfig
    from dermdl.tasks.classification.predict import applied_temperature

    config = ModelConfig(
        "classification", "m", ["a", "b"], 32, [0.5] * 3, [0.5] * 3, 32, "squish", extra={"temperature": bad}
    )
    with pytest.raises(ValueError, match=r"model.json: extra.temperature is .*expected a number"):
        applied_temperature(config)
    assert (
        applied_temperature(ModelConfig(**{**config.__dict__, "extra": {"temperature": bad, "calibrate": False}})) == 1
    )


@pytestmark_e2e
def test_predict_applies_the_temperature_unless_no_calibrate(trained, tmp_path):
    from dermdl.cli import main

    _, params, _ = trained
    images = sorted((params.out.parent / "demo" / "classification" / "sl_test" / "melanoma").iterdir())[:3]
    frames = {}
    for flag in ([], ["--no-calibrate"]):
        out = tmp_path / f"p{len(flag)}.csv"
        assert main(["predict", "--model", str(params.out / "model"), *map(str, images), "--out", str(out), *flag]) == 0
        frames[bool(flag)] = pd.read_csv(out)
    temperature = json.loads((params.out / "model" / "model.json").read_text())["extra"]["temperature"]
    assert (frames[False]["temperature"] == temperature).all() and (frames[True]["temperature"] == 1.0).all()
    cols = [c for c in frames[True] if c.startswith("prob_")]
    np.testing.assert_allclose(
        apply_temperature(frames[True][cols].to_numpy(), temperature), frames[False][cols].to_numpy(), atol=2e-5
    )


def test_subgroups_report_each_class_groups_operating_point(tmp_path):
    """Per subgroup: sensitivity/specificity at the one validation-chosen threshold, from that subgroup's images."""
    from dermdl.params import params_from_dict
    from dermdl.tasks.classification.predictions_csv import TestPredictions
    from dermdl.tasks.classification.subgroups import subgroups_section

    rng = np.random.default_rng(0)
    n = 60
    y = rng.integers(0, 3, n)
    probs = rng.dirichlet(np.ones(3), n)
    probs[np.arange(n), y] += 0.5
    probs /= probs.sum(axis=1, keepdims=True)
    paths = [f"sl_test/c{y[i]}/img{i}.png" for i in range(n)]
    site = ["back" if i % 3 else "face" for i in range(n)]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "metadata.csv").write_text("path,site\n" + "".join(f"{p},{s}\n" for p, s in zip(paths, site)))
    test = TestPredictions("sl_test", pd.DataFrame({"path": paths}), ["a", "b", "c"], y, probs, None)
    params = params_from_dict(
        {"data": {"root": str(tmp_path / "data")}, "analyze": {"n_boot": 100, "subgroups": ["site"]}}
    )
    decisions = {"bad": {"classes": ["b", "c"], "threshold": 0.6}, "none": {"classes": ["a"], "threshold": None}}
    section = subgroups_section(test, params, tmp_path / "plots", decisions)
    for value in ("back", "face"):
        chosen = np.array(site) == value
        positive = np.isin(y[chosen], [1, 2])
        referred = probs[chosen][:, 1:].sum(axis=1) >= 0.6
        row = section["columns"]["site"][value]
        assert row["bad_sensitivity"]["value"] == pytest.approx((referred & positive).sum() / positive.sum())
        assert row["bad_specificity"]["value"] == pytest.approx((~referred & ~positive).sum() / (~positive).sum())
        assert not any(key.startswith("none_") for key in row)


@pytest.mark.parametrize("temperature, warned", [(0.05, True), (0.9, False), (1.7, False), (19.9, True), (20.0, True)])
def test_a_temperature_at_its_bound_is_reported(temperature, warned):
    from dermdl.tasks.classification.calibrate import temperature_warning

    assert (temperature_warning(temperature) is not None) == warned


def test_a_chance_level_model_drives_the_fit_to_the_bound():
    """Confident and right half of the time: the NLL falls all the way to the uniform distribution."""
    probs = np.tile([[0.9933, 0.0067]], (6, 1))
    assert fit_temperature(probs, np.array([0, 1] * 3)) == pytest.approx(20.0, rel=0.01)
