"""Training procedures end to end on tiny demo data: weak labels, CV, full_data, monitoring, LR finder,
progressive resizing, MixUp, oversampling. Each case trains for real (48 px, a few epochs)."""

from __future__ import annotations

import csv
import json
import re
import shutil

import pytest

from dermdl import pipeline
from dermdl.demo import generate_demo
from dermdl.params import params_from_dict

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("train_core")]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    base = tmp_path_factory.mktemp("procedures")
    generate_demo(base / "demo", n_train=6, n_test=2, n_weak=4, size=48)
    detection = base / "demo" / "detection"  # the demo has no weak detection set: reuse sl_train's images
    shutil.copy(detection / "annotations" / "sl_train.json", detection / "annotations" / "wl_train.json")
    shutil.copytree(detection / "images" / "sl_train", detection / "images" / "wl_train")
    return base


def _train(demo, name: str, task: str = "classification", data: dict | None = None, **train) -> tuple:
    raw = {
        "task": task,
        "out_dir": str(demo / name),
        "data": {"root": str(demo / "demo" / task), "wl_train": ["wl_train"], "sl_tests": ["sl_test"], **(data or {})},
        "preprocess": {"size": 48, "workers": 1},
        "train": {"input_size": 48, "bs": 6, "fepochs": 1, "epochs": 1, **train},
    }
    params = params_from_dict(raw)
    pipeline.preprocess(params)
    summary = pipeline.train(params)
    return params.out, summary, json.loads((params.out / "dvclive" / "metrics.json").read_text())


def _logged(out, key: str) -> list[float]:
    with open(out / "dvclive" / "plots" / "metrics" / f"{key}.tsv", newline="") as handle:
        return [float(row[key.split("/")[-1]]) for row in csv.DictReader(handle, delimiter="\t")]


@pytest.mark.parametrize(
    "task, metric, weak",
    [("classification", "accuracy", 12), ("segmentation", "dice_foreground", 12), ("detection", "AP50", 20)],
)
def test_self_training_scores_every_round(demo, task, metric, weak):
    out, summary, _ = _train(demo, f"self-{task}", task, weak_labels="self_train", nrepeats=2)
    rounds = json.loads((out / "model" / "rounds" / "rounds.json").read_text())
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert all(0 <= r["tests"]["sl_test"][metric] <= 1 for r in rounds)
    assert len(_logged(out, f"round/sl_test/{metric}")) == 3  # one DVCLive step per round
    assert len(re.findall(r"^\| \d", (out / "model" / "rounds" / "rounds.md").read_text(), re.M)) == 3
    assert summary["weak_images"] == weak
    assert not list(out.glob(".pseudo-labels-*"))  # pseudo-label files are cleaned up


def test_pseudo_labels_are_the_teachers_predictions(demo):
    from dermdl.arrays import PreparedImages
    from dermdl.models import load_model
    from dermdl.tasks import get_task

    out, _, _ = _train(demo, "teacher")
    model, config = load_model(out / "model")
    task = get_task("classification")
    weak = pipeline.load_manifest(params_from_dict({"out_dir": str(out)}))["datasets"]["wl_train"]
    params = params_from_dict({})
    probs = task.predict(model, config, PreparedImages(weak), 8, params.tta)  # the teacher as infer runs it
    pseudo = task.pseudo_label(model, config, weak, params, out)
    assert [r["target"] for r in pseudo] == [config.classes[i] for i in probs.argmax(1)]
    assert [r["path"] for r in pseudo] == [r["path"] for r in weak]


def test_pretrain_trains_on_weak_labels_first(demo):
    _, summary, metrics = _train(demo, "pretrain", weak_labels="pretrain")
    assert summary["epochs"] == 4 and metrics["step"] == 3  # (1 + 1) epochs on wl_train, then on sl_train


def test_cross_validation_reports_folds_and_pooled_ci(demo):
    groups = demo / "groups.csv"
    rows = [("path", "group")]
    for path in sorted((demo / "demo" / "classification" / "sl_train").rglob("*.png")):
        stem, index = path.stem.rsplit("_", 1)
        rows.append((path.relative_to(demo / "demo" / "classification").as_posix(), f"{stem}-{int(index) // 2}"))
    groups.write_text("\n".join(",".join(r) for r in rows) + "\n")
    out, summary, _ = _train(demo, "cv", data={"groups": str(groups)}, cv_folds=2, fepochs=0)
    cv = json.loads((out / "model" / "cv" / "metrics.json").read_text())
    assert len(cv["per_fold"]) == 2 and set(cv["mean_std"]["accuracy"]) == {"mean", "std"}
    report = json.loads((out / "model" / "cv" / "report.json").read_text())
    assert report["grouped"] and report["pooled"]["n"] == 18  # every sl_train image held out once
    assert {"lo", "hi"} <= set(report["pooled"]["overall"]["accuracy"])
    assert "mean ± std" in (out / "model" / "cv" / "summary.md").read_text()
    assert summary["grouped_images"] == 18


def test_full_data_trains_without_validation(demo):
    _, summary, metrics = _train(demo, "full", full_data=True)
    assert (summary["train_images"], summary["valid_images"]) == (18, 0)
    assert "valid" not in metrics


def test_early_stopping_and_best_epoch(demo):
    # min_delta 100: no epoch ever "improves" after the first, so patience 1 stops after epoch 2
    _, summary, _ = _train(demo, "early", fepochs=0, epochs=4, early_stopping=1, min_delta=100.0, keep_best=True)
    assert summary["stopped_early"] and summary["epochs"] == 2 and summary["best_epoch"] == 1


def test_plateau_divides_the_learning_rate(demo):
    out, _, _ = _train(demo, "plateau", fepochs=0, epochs=4, plateau=1, plateau_factor=10.0, min_delta=100.0)
    lrs = _logged(out, "lr")  # logged before the epoch's reduction
    assert (
        lrs[1] == pytest.approx(lrs[0])
        and lrs[2] == pytest.approx(lrs[0] / 10)
        and lrs[3] == pytest.approx(lrs[0] / 100)
    )


def test_lr_finder_sets_lr_and_saves_plot(demo):
    out, summary, _ = _train(demo, "lrfind", auto_lr=True)
    assert (out / "model" / "lr_find.png").read_bytes()[:4] == b"\x89PNG"
    assert summary["lr"] != 2e-3 and 1e-7 < summary["lr"] < 10


def test_progressive_resizing_runs_the_schedule_per_size(demo):
    _, summary, metrics = _train(demo, "progressive", progressive_resizing=[0.5, 1.0])
    assert summary["epochs"] == 4 and metrics["step"] == 3


@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_mixup_changes_training(demo, task):
    _, _, plain = _train(demo, f"plain-{task}", task, weak_labels="none")
    _, _, mixed = _train(demo, f"mixup-{task}", task, weak_labels="none", mixup=0.4)
    assert mixed["train"]["loss"] != plain["train"]["loss"]


def test_oversampling_and_focal_tversky_train(demo):
    _, _, metrics = _train(demo, "oversample", oversample=True)
    assert 0 <= metrics["valid"]["accuracy"] <= 1
    raw = {"segmentation": {"loss": "focal_tversky"}}
    params = params_from_dict(
        {
            "task": "segmentation",
            "out_dir": str(demo / "tversky"),
            **raw,
            "data": {"root": str(demo / "demo" / "segmentation"), "wl_train": []},
            "preprocess": {"size": 48, "workers": 1},
            "train": {"input_size": 48, "bs": 6, "fepochs": 0, "epochs": 1},
        }
    )
    pipeline.preprocess(params)
    pipeline.train(params)
    logged = json.loads((params.out / "dvclive" / "metrics.json").read_text())
    assert 0 <= logged["valid"]["foreground_dice"] <= 1 and logged["train"]["loss"] > 0


def test_unknown_monitor_is_reported(demo):
    with pytest.raises(ValueError, match="train.monitor: 'dice'.*accuracy"):
        _train(demo, "badmonitor", monitor="dice", keep_best=True)
