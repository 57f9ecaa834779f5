"""Detection end to end through dermdl.pipeline on a tiny generated dataset (64 px, 1 epoch), plus
`dermdl predict` on raw images with the saved weights-only model."""

import json
from pathlib import Path

import pytest

from dermdl import pipeline
from dermdl.cli import main
from dermdl.demo import generate_demo
from dermdl.params import params_from_dict

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("detection_e2e")]  # one worker trains the model once


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("detection")
    generate_demo(base / "demo", seed=0, size=64, n_train=4, n_test=2, n_weak=1, n_negative=1)
    params = params_from_dict(
        {
            "task": "detection",
            "out_dir": str(base / "out"),
            "data": {"root": str(base / "demo" / "detection"), "sl_train": ["sl_train.json"], "sl_tests": ["sl_test"]},
            "preprocess": {"size": 64, "resize": "pad", "workers": 1},
            "train": {"input_size": 64, "bs": 8, "fepochs": 0, "epochs": 1, "lr": 1e-3, "valid_size": 0.25},
            "analyze": {"n_boot": 100},
        }
    )
    report = pipeline.validate(params)
    pipeline.preprocess(params)
    summary = pipeline.train(params)
    written = pipeline.infer(params)
    metrics = pipeline.analyze(params)
    return params, report, summary, written, metrics


def test_stages_write_every_output(run):
    params, report, summary, written, metrics = run
    out = params.out
    assert report.ok and summary["train_images"] + summary["valid_images"] == 13
    for rel in [
        "validate/report.json",
        "prepared/manifest.json",
        "model/model.pt",
        "model/model.json",
        "model/train.json",
        "predictions/sl_test.json",
        "predictions/sl_test_gt.json",
        "metrics.json",
        "report.json",
        "summary.txt",
        "plots/figures/sl_test_pr.png",
        "plots/figures/sl_test_gallery.png",
        "plots/figures/sl_test_gallery_worst_ap.png",
        "plots/per_image_ap/sl_test.json",
        "dvclive/metrics.json",
    ]:
        assert (out / rel).is_file(), rel
    assert written == {"sl_test": out / "predictions" / "sl_test.json"}
    assert len(list((out / "predictions" / "overlays" / "sl_test").glob("*.png"))) == 7
    assert sorted(p.name for p in (out / "plots" / "pr").glob("*.json")) == [
        "sl_test--melanoma.json",
        "sl_test--nevus.json",
        "sl_test--seborrheic_keratosis.json",
    ]
    assert list((out / "tensorboard").rglob("events.out.tfevents*"))
    config = json.loads((out / "model" / "model.json").read_text())
    assert (
        config["task"] == "detection" and config["extra"]["detection"]["model"] == "fasterrcnn_efficientnet_lite0_fpn"
    )


def test_each_loss_component_is_logged(run):
    params = run[0]
    logged = json.loads((params.out / "dvclive" / "metrics.json").read_text())
    for key in ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg", "loss"):
        assert key in logged["valid"] and (params.out / "dvclive/plots/metrics/train" / f"{key}.tsv").is_file(), key
    assert "AP50" in logged["valid"] and set(logged["train"]) == {"loss"}  # training components: curves only
    assert (params.out / "dvclive" / "plots" / "metrics" / "train" / "loss_box_reg.tsv").is_file()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next((params.out / "tensorboard").rglob("events.out.tfevents*")).parent)).Reload()
    assert {"train/loss_classifier", "valid/loss_rpn_box_reg", "valid/AP50"} <= set(events.Tags()["scalars"])


def test_results_are_coco_in_original_coordinates(run):
    params, _, _, _, metrics = run
    gt = json.loads((params.out / "predictions" / "sl_test_gt.json").read_text())
    results = json.loads((params.out / "predictions" / "sl_test.json").read_text())
    source = json.loads((Path(params.data.root) / "annotations" / "sl_test.json").read_text())
    assert sorted((i["id"], i["file_name"]) for i in gt["images"]) == [
        (i["id"], i["file_name"]) for i in source["images"]
    ]
    assert sorted((a["id"], a["bbox"]) for a in gt["annotations"]) == [
        (a["id"], a["bbox"]) for a in source["annotations"]
    ]
    ids = {i["id"] for i in source["images"]}
    for r in results:
        x, y, w, h = r["bbox"]
        assert r["image_id"] in ids and r["category_id"] in (1, 2, 3) and 0 <= r["score"] <= 1
        assert x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= 64.01 and y + h <= 64.01
    test = metrics["sl_test"]
    assert test["n"] == 7 and test["n_objects"] == 6
    assert set(test["overall"]) >= {"AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR1", "AR10", "AR100"}
    assert all(set(v) == {"value", "lo", "hi"} for v in test["overall"].values())
    assert test["bootstrap"]["unit"] == "image"  # the demo has no groups.csv
    per_image = json.loads((params.out / "plots" / "per_image_ap" / "sl_test.json").read_text())
    assert sorted(row["image"] for row in per_image) == sorted(i["file_name"] for i in gt["images"])
    summary = (params.out / "summary.txt").read_text()
    assert "AP@[.50:.95]" in summary and "AP50 melanoma" in summary
    point = json.loads((params.out / "metrics.json").read_text())["sl_test"]
    assert point == {"AP": test["overall"]["AP"]["value"], "AP50": test["overall"]["AP50"]["value"]}


def test_predict_cli_on_raw_images(run, tmp_path):
    params = run[0]
    images = params.out.parent / "demo" / "detection" / "images" / "sl_test"
    out = tmp_path / "new" / "predictions.json"
    assert main(["predict", "--model", str(params.out / "model"), str(images), "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    index = json.loads((out.parent / "predictions_images.json").read_text())
    assert len(index["images"]) == 7 and {r["file_name"] for r in results} <= {i["file_name"] for i in index["images"]}
    assert len(list((out.parent / "overlays" / "predictions").glob("*.png"))) == 7
