"""Image + metadata classification: the encoding against hand-computed values, then a tiny seeded run on demo
data where one metadata column carries the label (the fused model must beat image-only by a wide margin),
predict with and without a table, model.json round trip, and the bad inputs."""

from __future__ import annotations

import csv
import json
import random
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from dermdl import pipeline
from dermdl.cli import main
from dermdl.demo import generate_demo
from dermdl.models import ModelConfig, load_model
from dermdl.params import params_from_dict
from dermdl.tasks.classification.model import build_classifier, build_model
from dermdl.tasks.classification.tabular import Column, TabularEncoder

TRAIN = {
    "age": ["40", "60", None, "unknown", "50.0"],
    "sex": ["male", "female", None, "male", "female"],
    "site": ["1", "back", "2", None, "back"],  # one value that is no number: categorical
    "const": ["7", "7", "7", None, "7"],
}

ENCODED = [  # (column values at predict time, expected cells of that column)
    ("sex", ["female", "male", None, "other"], [[1], [2], [0], [0]]),  # 0 = missing or never seen in training
    ("site", ["1", "2", "back", "3"], [[1], [2], [3], [0]]),  # vocabulary sorted as strings
    # numeric: (x - mean) / std with mean 50, population std sqrt(200/3); missing -> 0 and indicator 1
    ("age", ["40", "65", None, "n/a"], [[-10 / np.sqrt(200 / 3), 0], [15 / np.sqrt(200 / 3), 0], [0, 1], [0, 1]]),
    ("const", ["7", "8", "", None], [[0, 0], [1, 0], [0, 1], [0, 1]]),  # constant in training: std 1
]


@pytest.mark.parametrize("column, values, expected", ENCODED, ids=[e[0] for e in ENCODED])
def test_encoding_by_hand(column, values, expected):
    encoder = TabularEncoder.fit(TRAIN, [column])
    rows = encoder.encode({column: values}, len(values))
    assert rows.dtype == np.float32 and rows.shape == (len(values), len(expected[0]))
    np.testing.assert_allclose(rows, np.asarray(expected, dtype=np.float32), rtol=1e-6)


def test_fit_kinds_and_layout():
    encoder = TabularEncoder.fit(TRAIN, ["age", "sex", "site", "const"])
    assert [(c.name, c.kind) for c in encoder.columns] == [
        ("age", "numeric"),
        ("sex", "categorical"),
        ("site", "categorical"),
        ("const", "numeric"),
    ]
    assert encoder.columns[1].vocab == ["female", "male"]
    assert encoder.columns[0].mean == pytest.approx(50.0) and encoder.columns[0].std == pytest.approx(np.sqrt(200 / 3))
    # layout: categorical indices first (sex, site), then normalised numbers (age, const), then indicators
    row = encoder.encode({"age": ["60"], "sex": ["male"], "site": ["back"], "const": [None]}, 1)[0]
    np.testing.assert_allclose(row, [2, 3, 10 / np.sqrt(200 / 3), 0, 0, 1], rtol=1e-6)
    assert TabularEncoder.from_json(json.loads(json.dumps(encoder.to_json()))) == encoder


def test_image_only_model_unchanged():
    """classification.metadata: [] builds exactly the image-only network (same modules, same weights names)."""
    config = ModelConfig(
        task="classification",
        arch="resnet18",
        classes=["a", "b"],
        input_size=32,
        mean=[],
        std=[],
        preprocess_size=32,
        resize="squish",
    )
    model, _ = build_model(config, False)
    reference, _ = build_classifier("resnet18", 2, False)
    assert type(model) is type(reference)
    assert {k: v.shape for k, v in model.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }
    fused = replace(config, extra={"tabular": TabularEncoder([Column("s", "categorical", ["x"])]).to_json()})
    assert type(build_model(fused, False)[0]) is not type(reference)


# --- a tiny end-to-end run ---------------------------------------------------------------------------


def _params(base, out, metadata):
    return params_from_dict(
        {
            "out_dir": str(base / out),
            "data": {"root": str(base / "demo" / "classification"), "wl_train": [], "sl_tests": ["sl_test"]},
            "preprocess": {"size": 32, "workers": 1},
            "train": {"input_size": 32, "bs": 16, "fepochs": 1, "epochs": 2, "deterministic": True},
            "classification": {"metadata": metadata},
            "analyze": {"n_boot": 100, "explain": 0},
        }
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Demo images with a metadata.csv whose `site` is the class 90% of the time; one image-only and one
    image + metadata model, same seed and schedule."""
    base = tmp_path_factory.mktemp("tabular")
    generate_demo(base / "demo", n_train=20, n_test=10, n_weak=0, size=32)
    root = base / "demo" / "classification"
    rng = random.Random(0)
    with open(root / "metadata.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "site", "age"])
        for image in sorted(root.rglob("*.png")):
            site = image.parent.name if rng.random() < 0.9 else rng.choice(["a", "b", "c"])
            writer.writerow(
                [image.relative_to(root).as_posix(), site, rng.randint(20, 80) if rng.random() < 0.8 else ""]
            )
    out = {}
    for name, metadata in (("meta", ["site", "age"]), ("image", [])):
        params = _params(base, name, metadata)
        pipeline.preprocess(params)
        pipeline.train(params)
        pipeline.infer(params)
        out[name] = params
    return base, out


def _macro_auc(csv_path):
    frame = pd.read_csv(csv_path)
    classes = sorted(frame["true_label"].unique())
    probs = frame[[f"prob_{c}" for c in classes]].to_numpy()
    return roc_auc_score(
        frame["true_label"], probs / probs.sum(axis=1, keepdims=True), multi_class="ovr", average="macro"
    )


def test_metadata_beats_image_only(runs):
    _, out = runs
    meta = _macro_auc(out["meta"].out / "predictions" / "sl_test.csv")
    image = _macro_auc(out["image"].out / "predictions" / "sl_test.csv")
    assert meta > 0.9 and meta > image + 0.2, (meta, image)


def test_model_json_round_trip(runs):
    base, out = runs
    saved = json.loads((out["meta"].out / "model" / "model.json").read_text())["extra"]["tabular"]
    encoder = TabularEncoder.from_json(saved)
    assert [(c.name, c.kind) for c in encoder.columns] == [("site", "categorical"), ("age", "numeric")]
    # the vocabulary comes from the training images only, and holds every value they have
    table = pd.read_csv(base / "demo" / "classification" / "metadata.csv", dtype=str)
    train_sites = set(table[table["path"].str.startswith("sl_train/")]["site"])
    assert set(encoder.columns[0].vocab) == train_sites
    assert "tabular" not in json.loads((out["image"].out / "model" / "model.json").read_text())["extra"]
    _, config = load_model(out["meta"].out / "model")
    assert TabularEncoder.from_json(config.extra["tabular"]) == encoder


def test_predict_with_and_without_table(runs, tmp_path, capsys):
    base, out = runs
    model = str(out["meta"].out / "model")
    root = base / "demo" / "classification"
    images = root / "sl_test"
    table = root / "metadata.csv"
    assert (
        main(["predict", "--model", model, "--metadata", str(table), str(images), "--out", str(tmp_path / "p.csv")])
        == 0
    )
    frame = pd.read_csv(tmp_path / "p.csv")
    frame["true_label"] = [p.split("/")[-2] for p in frame["path"]]
    frame.to_csv(tmp_path / "labelled.csv", index=False)
    assert _macro_auc(tmp_path / "labelled.csv") > 0.9  # the table's signal reaches new-image predictions
    # bare file names match too; an image without a row counts as missing, with one warning
    names = pd.read_csv(table, dtype=str)
    names["path"] = [p.split("/")[-1] for p in names["path"]]
    names.iloc[1:].to_csv(tmp_path / "names.csv", index=False)
    capsys.readouterr()
    assert (
        main(
            [
                "predict",
                "--model",
                model,
                "--metadata",
                str(tmp_path / "names.csv"),
                str(images),
                "--out",
                str(tmp_path / "q.csv"),
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "warning: 1 of" in err and "no row" in err
    # without the table: one clear line, no traceback
    assert main(["predict", "--model", model, str(images)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--metadata" in err[0] and "site" in err[0]


def test_unknown_column_names_table_and_columns(runs):
    base, _ = runs
    params = _params(base, "meta", ["site", "diagnosis"])
    with pytest.raises(ValueError, match=r"metadata\.csv: classification\.metadata column 'diagnosis'.*site, age"):
        pipeline.train(params)


BAD = [  # (extra params, error type, message)
    ({"train": {"mixup": 0.4}}, ValueError, r"train\.mixup mixes images only"),
    ({}, FileNotFoundError, r"metadata\.csv: no metadata table for classification\.metadata \['sex'\]"),
]


@pytest.mark.parametrize("extra, error, message", BAD, ids=["mixup", "no-table"])
def test_bad_settings_are_one_line(tmp_path, extra, error, message):
    from dermdl.tasks.classification.tabular import fit_extra

    raw = {
        "out_dir": str(tmp_path / "out"),
        "data": {"root": str(tmp_path / "data")},
        "classification": {"metadata": ["sex"]},
    }
    with pytest.raises(error, match=message):
        fit_extra(params_from_dict({**raw, **extra}))


def test_no_heatmap_gallery_for_metadata_models(tmp_path):
    """Heatmaps explain the image alone: analyze skips the gallery of a metadata model (no model is loaded)."""
    from dermdl.tasks.classification.explain import explanations

    params = params_from_dict({"out_dir": str(tmp_path), "classification": {"metadata": ["sex"]}})
    y, probs = np.array([0, 1]), np.array([[0.9, 0.1], [0.3, 0.7]])
    assert explanations("t", ["a", "b"], y, probs, ["a", "b"], tmp_path / "predictions", params, tmp_path) is None
