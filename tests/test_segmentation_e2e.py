"""Segmentation end to end through the shared core (dermdl.pipeline): validate -> analyze, then predict.

Small on purpose (64 px demo images, 18 training pairs, 2 short epochs): it proves the wiring and the
outputs, not the accuracy (the demo benchmark in docs/segmentation.md does that).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.spatial.distance import cdist

from dermdl import pipeline
from dermdl.cli import main
from dermdl.demo import generate_demo
from dermdl.images import open_mask
from dermdl.params import params_from_dict

pytestmark = pytest.mark.xdist_group("segmentation_e2e")  # one worker trains the module's model once


def _params(root: Path, out: Path, **train):
    return params_from_dict(
        {
            "task": "segmentation",
            "out_dir": str(out),
            "data": {"root": str(root), "wl_train": [], "sl_train": ["sl_train"], "sl_tests": ["sl_test"]},
            "preprocess": {"size": 64, "workers": 1},
            "train": {"input_size": 64, "bs": 8, "fepochs": 1, "epochs": 1} | train,
            "analyze": {"n_boot": 200},
            "infer": {"tta": "none"},  # plain predictions: the TTA test compares against them
        }
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("seg")
    generate_demo(base / "demo", n_train=6, n_test=3, n_weak=0, size=64)
    root = base / "demo" / "segmentation"
    # one non-square test pair, to prove masks come back at the ORIGINAL resolution
    image = Image.open(root / "sl_test/images/nevus_sl_test_0000.png").resize((90, 60), Image.Resampling.BICUBIC)
    mask = Image.open(root / "sl_test/masks/nevus_sl_test_0000.png").resize((90, 60), Image.Resampling.NEAREST)
    image.convert("RGB").save(root / "sl_test/images/wide.jpg", quality=95)
    mask.save(root / "sl_test/masks/wide.png")
    params = _params(root, base / "out")
    assert pipeline.validate(params).ok
    for stage in ("preprocess", "train", "infer", "analyze"):
        getattr(pipeline, stage)(params)
    return base, params


@pytest.mark.slow
def test_every_stage_writes_its_outputs(run):
    base, params = run
    out = params.out
    for rel in [
        "validate/report.json",
        "prepared/manifest.json",
        "model/model.pt",
        "model/model.json",
        "model/train.json",
        "predictions/sl_test.csv",
        "predictions/sl_test/histograms.npy",
        "predictions/sl_test/calibration.npz",
        "metrics.json",
        "report.json",
        "summary.txt",
        "plots/confusion/sl_test.json",
        "plots/roc/sl_test--lesion.json",
        "plots/figures/sl_test_metrics.png",
        "plots/figures/sl_test_confusion.png",
        "plots/figures/sl_test_gallery_best.png",
        "plots/figures/sl_test_gallery_worst.png",
        "plots/figures/sl_test_gallery_worst_probability.png",
        "plots/figures/sl_test_reliability.png",
        "plots/calibration/sl_test--lesion.json",
        "dvclive/metrics.json",
    ]:
        assert (out / rel).is_file(), rel
    manifest = json.loads((out / "prepared/manifest.json").read_text())
    assert manifest["classes"] == ["skin", "lesion"] and len(manifest["datasets"]["sl_test"]) == 10
    config = json.loads((out / "model/model.json").read_text())
    assert config["task"] == "segmentation" and config["extra"]["mask_values"] == [[0, 0], [255, 1], [1, 1]]
    assert json.loads((out / "model/train.json").read_text())["images_per_second"] > 0
    assert "foreground_dice" in json.loads((out / "dvclive/metrics.json").read_text())["valid"]
    report = json.loads((out / "report.json").read_text())["sl_test"]
    assert report["n"] == 10 and set(report["per_class"]["lesion"]) >= {"dice", "iou", "thresholded_jaccard", "auc"}
    assert json.loads((out / "metrics.json").read_text())["sl_test"] == {
        "dice_foreground": report["overall"]["dice_foreground"]["value"],
        "iou_foreground": report["overall"]["iou_foreground"]["value"],
        "hd95": report["boundary"]["lesion"]["hd95"]["value"],
    }
    assert len(json.loads((out / "plots/confusion/sl_test.json").read_text())) == 1000
    assert "Dice lesion:" in (out / "summary.txt").read_text()
    # clinical sections: boundary distances, pixel calibration, resampling unit (no groups known: images)
    assert set(report["boundary"]["lesion"]) == {"hd95", "asd", "n_images", "n_one_empty"}
    assert report["calibration"]["bins"] == 15 and report["calibration"]["lesion"]["ece"]["value"] is not None
    assert report["bootstrap"]["unit"] == "image"
    reliability = json.loads((out / "plots/calibration/sl_test--lesion.json").read_text())
    assert sum(r["count"] for r in reliability) == report["pixels"]
    assert all(0 <= r["confidence"] <= 1 and 0 <= r["accuracy"] <= 1 for r in reliability)
    for label in ("HD95 (px) lesion:", "ECE lesion:", "Pixel calibration (15 equal-width probability bins)"):
        assert label in (out / "summary.txt").read_text()


def _surface_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Both directed distance sets between the 4-neighbour surfaces of two masks, by brute force."""

    def surface(m: np.ndarray) -> np.ndarray:
        padded = np.pad(m, 1)
        inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
        return np.argwhere(m & ~inner)

    d = cdist(surface(a), surface(b))
    return np.concatenate([d.min(axis=0), d.min(axis=1)])


@pytest.mark.slow
def test_predicted_masks_are_at_original_size_in_the_input_convention(run):
    base, params = run
    out, root = params.out, Path(params.data.root)
    frame = pd.read_csv(out / "predictions/sl_test.csv")
    assert len(frame) == 10 and set(frame["mask"]) == {f"sl_test/masks/{Path(s).stem}.png" for s in frame["image"]}
    for row in frame.itertuples():
        predicted = open_mask(out / "predictions" / row.mask)
        truth = open_mask(root / Path(row.image).parent.parent / "masks" / f"{Path(row.image).stem}.png")
        assert predicted.shape == truth.shape and set(np.unique(predicted)) <= {0, 255}
        p, t = predicted == 255, truth == 255
        # the per-image numbers in the CSV agree with the written mask file and the source mask
        assert row.cm_1_1 == (p & t).sum() and row.cm_0_1 == (p & ~t).sum() and row.cm_1_0 == (~p & t).sum()
        assert row.dice_lesion == pytest.approx(2 * (p & t).sum() / (p.sum() + t.sum()), abs=1e-6)
        if p.any() and t.any():  # boundary distances at the ORIGINAL resolution
            both = _surface_distances(t, p)
            assert row.hd95_lesion == pytest.approx(np.percentile(both, 95), abs=1e-5)
            assert row.asd_lesion == pytest.approx(both.mean(), abs=1e-5)
        else:
            assert np.isnan(row.hd95_lesion) and np.isnan(row.asd_lesion)
        probability = open_mask(out / "predictions" / row.probability)
        assert probability.shape == (64, 64) and probability.dtype == np.uint8
        assert Image.open(out / "predictions" / row.overlay).size == (64 * 3 + 4, 64)
    assert open_mask(out / "predictions/sl_test/masks/wide.png").shape == (60, 90)


@pytest.mark.slow
@pytest.mark.parametrize("resample, explain", [("group", 0), ("auto", 2)])
def test_analyze_resamples_lesions_from_groups_csv_and_explains_the_worst(run, tmp_path, resample, explain):
    from dermdl.models import ModelConfig
    from dermdl.tasks.segmentation.analyze import analyze

    base, params = run
    root = Path(params.data.root)
    frame = pd.read_csv(params.out / "predictions/sl_test.csv")
    groups = root.parent / f"groups-{resample}.csv"  # not <root>/groups.csv: other tests share the root
    groups.write_text("path,group\n" + "".join(f"{image},L{i // 2}\n" for i, image in enumerate(frame["image"])))
    run_params = params.override({"data.groups": str(groups), "analyze.resample": resample, "analyze.explain": explain})
    config = ModelConfig.from_json(params.out / "model/model.json")
    metrics = analyze(params.out / "predictions", "sl_test", config, run_params, tmp_path / "plots")
    assert metrics["bootstrap"]["unit"] == "group" and metrics["bootstrap"]["n_groups"] == 5
    gallery = tmp_path / "plots/figures/sl_test_gallery_worst_probability.png"
    assert gallery.is_file() == (explain > 0)


@pytest.mark.slow
def test_analyze_reports_dice_per_metadata_subgroup(run, tmp_path):
    """Each subgroup's foreground Dice/IoU are segmentation_metrics of its images alone."""
    from dermdl.models import ModelConfig
    from dermdl.tasks.segmentation.analyze import analyze
    from dermdl.tasks.segmentation.metrics import segmentation_metrics

    base, params = run
    frame = pd.read_csv(params.out / "predictions/sl_test.csv")
    table = tmp_path / "metadata.csv"
    sex = ["female" if i % 3 else "male" for i in range(len(frame))]
    table.write_text("path,sex\n" + "".join(f"{image},{s}\n" for image, s in zip(frame["image"], sex)))
    run_params = params.override(
        {"data.metadata": str(table), "analyze.subgroups": ["sex"], "analyze.explain": 0, "analyze.resample": "image"}
    )
    config = ModelConfig.from_json(params.out / "model/model.json")
    metrics = analyze(params.out / "predictions", "sl_test", config, run_params, tmp_path / "plots")
    k = len(config.classes)
    cm = frame[[f"cm_{i}_{j}" for i in range(k) for j in range(k)]].to_numpy().reshape(-1, k, k)
    for value in ("female", "male"):
        index = np.flatnonzero(np.array(sex) == value)
        row = metrics["subgroups"]["columns"]["sex"][value]
        assert row["n"] == len(index)
        if len(index) >= metrics["subgroups"]["min_n"]:
            expected = segmentation_metrics(cm[index], None, config.classes, n_boot=params.analyze.n_boot)["overall"]
            assert row["dice_foreground"] == expected["dice_foreground"]
    assert (tmp_path / "plots/subgroups/sl_test--sex.json").is_file()


@pytest.mark.slow
def test_predict_cli_writes_masks_for_new_images(run, tmp_path, capsys):
    base, params = run
    new = tmp_path / "new photos"
    new.mkdir()
    Image.open(Path(params.data.root) / "sl_test/images/wide.jpg").save(new / "a.png")
    Image.open(Path(params.data.root) / "sl_test/images/melanoma_sl_test_0001.png").save(new / "b.jpg")
    assert main(["predict", "--model", str(params.out / "model"), str(new), "--out", str(tmp_path / "p.csv")]) == 0
    assert "+ " in capsys.readouterr().out
    frame = pd.read_csv(tmp_path / "p.csv")
    assert frame["image"].tolist() == [str(new / "a.png"), str(new / "b.jpg")]
    assert open_mask(tmp_path / frame["mask"][0]).shape == (60, 90)
    assert open_mask(tmp_path / frame["mask"][1]).shape == (64, 64)
    assert (
        main(
            [
                "predict",
                "--model",
                str(params.out / "model"),
                str(new),
                "--tta",
                "flips",
                "--out",
                str(tmp_path / "tta" / "p.csv"),
            ]
        )
        == 0
    )
    assert open_mask(tmp_path / "tta" / pd.read_csv(tmp_path / "tta" / "p.csv")["mask"][0]).shape == (60, 90)
    capsys.readouterr()
    assert main(["predict", "--model", str(params.out / "model"), str(new / "a.png")]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("image,mask,overlay") and "--out FILE.csv" in captured.err


@pytest.mark.slow
def test_infer_with_tta_writes_the_same_outputs_from_averaged_views(run, tmp_path):
    base, params = run
    copy = tmp_path / "out"
    shutil.copytree(params.out, copy, ignore=shutil.ignore_patterns("checkpoint", "predictions"))
    pipeline.infer(params.override({"out_dir": str(copy), "infer.tta": "dihedral"}))
    plain, averaged = pd.read_csv(params.out / "predictions/sl_test.csv"), pd.read_csv(copy / "predictions/sl_test.csv")
    assert averaged.columns.tolist() == plain.columns.tolist() and averaged["mask"].tolist() == plain["mask"].tolist()
    # 8 views of an untrained-for-orientation model: the probability histograms move
    assert not np.array_equal(
        np.load(copy / "predictions/sl_test/histograms.npy"), np.load(params.out / "predictions/sl_test/histograms.npy")
    )
    assert open_mask(copy / "predictions/sl_test/masks/wide.png").shape == (60, 90)


def test_a_broken_layout_stops_before_preprocessing(tmp_path, capsys):
    generate_demo(tmp_path / "demo", n_train=1, n_test=1, n_weak=0, size=32)
    root = tmp_path / "demo" / "segmentation"
    (root / "sl_test/masks/nevus_sl_test_0000.png").unlink()
    Image.fromarray(np.full((32, 32), 128, np.uint8)).save(root / "sl_train/masks/nevus_sl_train_0000.png")
    params = _params(root, tmp_path / "out")
    report = pipeline.validate(params)
    err = capsys.readouterr().err
    assert not report.ok and len(report.errors) == 2
    assert "image has no mask" in err and "128 (1,024 pixels)" in err
    assert json.loads((tmp_path / "out/validate/report.json").read_text())["n_errors"] == 2
    with pytest.raises(pipeline.StageError, match="image has no mask"):
        pipeline.preprocess(params)
