"""Class-activation heatmaps (dermdl.tasks.classification.explain): range and determinism on a real dermdl
classifier, the map of a hand-built net whose class evidence lies in one quadrant peaks there and equals
CAM (the faithfulness property of HiResCAM for a pooling + linear head), gallery selection vs a plain loop,
``dermdl predict --explain`` end to end, its one-line errors, and analyze's gallery on the tiny demo."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from dermdl.cli import main
from dermdl.models import ModelConfig, save_model
from dermdl.prepare import open_source
from dermdl.tasks.classification.explain import (
    ERRORS,
    UNSURE,
    explanations,
    heatmaps,
    model_view,
    select_cases,
    unique_names,
)
from dermdl.tasks.classification.model import build_classifier

SIZE = 32  # input of the hand-built net: 8 x 8 feature map (stride 4)
QUADRANTS = {"top-left": (0, 0), "top-right": (0, 1), "bottom-left": (1, 0), "bottom-right": (1, 1)}


def _colour_net() -> nn.Sequential:
    """(body, head) like dermdl's classifiers. Body: a 4x4 stride-4 conv whose channel 0 measures redness
    (R - G) and channel 1 greenness (G - R) of each patch, then ReLU. Head: average pooling + identity
    linear layer, so logit 0 = mean redness, logit 1 = mean greenness."""
    body = nn.Sequential(nn.Conv2d(3, 2, kernel_size=4, stride=4, bias=False), nn.ReLU())
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2))
    with torch.no_grad():
        body[0].weight.zero_()
        body[0].weight[0, 0], body[0].weight[0, 1] = 1 / 16, -1 / 16
        body[0].weight[1, 1], body[0].weight[1, 0] = 1 / 16, -1 / 16
        head[2].weight.copy_(torch.eye(2))
        head[2].bias.zero_()
    return nn.Sequential(body, head).eval()


def _patch_image(red: tuple[int, int], green: tuple[int, int]) -> torch.Tensor:
    """Grey 32 x 32 image with an 8 x 8 red patch in one quadrant and a green one in another."""
    image = torch.full((3, SIZE, SIZE), 0.5)
    half = SIZE // 2
    for (row, col), colour in ((red, (1.0, 0.0, 0.0)), (green, (0.0, 1.0, 0.0))):
        y, x = row * half + 4, col * half + 4
        image[:, y : y + 8, x : x + 8] = torch.tensor(colour).view(3, 1, 1)
    return image


def _quadrant_share(heat: np.ndarray, quadrant: tuple[int, int]) -> float:
    half = heat.shape[0] // 2
    row, col = quadrant
    return float(heat[row * half : (row + 1) * half, col * half : (col + 1) * half].sum() / heat.sum())


@pytest.mark.parametrize("method", ["occlusion", "hirescam"])
@pytest.mark.parametrize("red_at", list(QUADRANTS))
def test_heatmap_peaks_in_the_quadrant_that_decides_the_class(red_at, method):
    red = QUADRANTS[red_at]
    green = (1 - red[0], 1 - red[1])  # the opposite quadrant holds the other class's evidence
    model = _colour_net()
    batch = torch.stack([_patch_image(red, green)] * 2)
    maps = heatmaps(model, batch, [0, 1], method)
    for heat, quadrant in zip(maps, (red, green)):
        peak = np.unravel_index(heat.argmax(), heat.shape)
        assert (peak[0] // (SIZE // 2), peak[1] // (SIZE // 2)) == quadrant
        assert _quadrant_share(heat, quadrant) > 0.95


def test_heatmap_equals_cam_for_a_pooling_linear_head():
    """Reference: CAM = sum_c w[target, c] * A_c computed by hand from the body's output."""
    model = _colour_net()
    with torch.no_grad():
        model[1][2].weight.copy_(torch.tensor([[0.7, -0.2], [0.1, 1.3]]))
    batch = torch.stack([_patch_image((0, 1), (1, 0)), _patch_image((1, 1), (0, 0))])
    targets = [0, 1]
    with torch.no_grad():
        features = model[0](batch)
        weights = model[1][2].weight[targets]
        cam = torch.einsum("nc,nchw->nhw", weights, features).clamp(min=0)[:, None]
        cam = F.interpolate(cam, size=(SIZE, SIZE), mode="bilinear")[:, 0]
        cam = cam / cam.flatten(1).amax(1).view(-1, 1, 1)
    np.testing.assert_allclose(heatmaps(model, batch, targets, "hirescam"), cam.numpy(), atol=1e-6)


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    model, (mean, std) = build_classifier("efficientnet_lite0", 3, pretrained=False)
    config = ModelConfig(
        task="classification",
        arch="efficientnet_lite0",
        classes=["bcc", "mel", "nv"],
        input_size=64,
        mean=mean,
        std=std,
        preprocess_size=80,
        resize="pad",
    )
    return model.eval(), config


@pytest.mark.parametrize("method", ["occlusion", "hirescam"])
def test_heatmaps_of_a_dermdl_classifier_shape_range_determinism(classifier, method):
    model, config = classifier
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)) for _ in range(3)]
    batch = torch.stack([model_view(image, config)[0] for image in images])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    first = heatmaps(model, batch, [0, 1, 2], method)
    second = heatmaps(model, batch, [0, 1, 2], method)
    assert first.shape == (3, 64, 64) and first.dtype == np.float32
    assert first.min() >= 0 and first.max() <= 1
    assert all(m.max() in (0.0, 1.0) for m in first)
    np.testing.assert_array_equal(first, second)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())  # no gradients left behind


def test_unknown_method_is_one_clear_error(classifier):
    model, _ = classifier
    with pytest.raises(ValueError, match="unknown explanation method 'gradcam'; choose one of occlusion, hirescam"):
        heatmaps(model, torch.zeros(1, 3, 64, 64), [0], "gradcam")


def _naive_rows(y, probs, classes, per_row):
    rows = {ERRORS: [], UNSURE: [], **{f"{c}: most confident correct": [] for c in classes}}
    for i in range(len(y)):
        pred = max(range(len(classes)), key=lambda c: (probs[i][c], -c))  # argmax: first of the ties
        conf = probs[i][pred]
        if pred != y[i]:
            rows[ERRORS].append((-conf, i))
        else:
            rows[UNSURE].append((conf, i))
            rows[f"{classes[pred]}: most confident correct"].append((-conf, i))
    return [(label, [i for _, i in sorted(cases)[:per_row]]) for label, cases in rows.items()]


@pytest.mark.parametrize("seed, n, k, per_row", [(0, 40, 3, 4), (1, 25, 5, 2), (2, 12, 2, 10), (3, 60, 7, 1)])
def test_gallery_selection_matches_a_plain_loop(seed, n, k, per_row):
    rng = np.random.default_rng(seed)
    probs = np.round(rng.dirichlet(np.ones(k) * 0.7, size=n), 1)  # rounding makes ties
    y = rng.integers(0, k, n)
    classes = [f"c{i}" for i in range(k)]
    assert select_cases(y, probs, classes, per_row) == _naive_rows(y, probs.tolist(), classes, per_row)


@pytest.mark.parametrize(
    "paths, expected",
    [
        (["a/x.jpg", "b/y.png"], ["x.png", "y.png"]),
        (["a/x.jpg", "b/x.jpg", "x.png"], ["x.png", "x-2.png", "x-3.png"]),
        (["X.jpg", "x.png"], ["X.png", "x-2.png"]),  # one name on case-insensitive disks
        (["x.jpg", "x-2.jpg", "b/x.jpg"], ["00000_x.png", "00001_x-2.png", "00002_x.png"]),
    ],
)
def test_heatmap_file_names_are_unique(paths, expected):
    assert unique_names([Path(p) for p in paths]) == expected


def test_predict_explain_writes_one_heatmap_per_image(tmp_path, classifier, capsys):
    model, config = classifier
    save_model(model, config, tmp_path / "model")
    images = tmp_path / "photos"
    (images / "sub").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in ("a.png", "sub/a.jpg", "b.png"):
        Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(images / name)
    out = tmp_path / "results" / "preds.csv"
    argv = ["predict", "--model", str(tmp_path / "model"), "--explain", str(images), "--out", str(out), "--tta", "none"]
    assert main(argv) == 0
    assert "3 heatmaps" in capsys.readouterr().out
    rows = list(csv.DictReader(out.open()))
    folder = tmp_path / "results" / "preds" / "explanations"
    assert sorted(p.name for p in folder.iterdir()) == ["a-2.png", "a.png", "b.png"]
    for row, name in zip(rows, unique_names([Path(r["path"]) for r in rows])):
        panel = np.asarray(Image.open(folder / name))
        assert panel.shape == (64, 2 * 64 + 2, 3)
        pixels = model_view(open_source(row["path"]), config)[1]
        np.testing.assert_array_equal(panel[:, :64], pixels)  # left: what the model saw
        assert (panel[:, 66:] != pixels).any()  # right: the heatmap over it


def test_predict_explain_needs_out(tmp_path, classifier, capsys):
    model, config = classifier
    save_model(model, config, tmp_path / "model")
    Image.new("RGB", (64, 64), (120, 80, 60)).save(tmp_path / "x.png")
    assert main(["predict", "--model", str(tmp_path / "model"), "--explain", str(tmp_path / "x.png")]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "pass --out" in captured.err


@pytest.mark.parametrize("task, reason", [("segmentation", "mask"), ("detection", "boxes")])
def test_predict_explain_unsupported_task_is_one_line(tmp_path, task, reason, capsys):
    config = ModelConfig(task=task, arch="x", classes=["a", "b"], input_size=64, mean=[0.5] * 3, std=[0.2] * 3,
                         preprocess_size=64, resize="pad")  # fmt: skip
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.json").write_text(json.dumps(asdict(config)))
    Image.new("RGB", (64, 64), (120, 80, 60)).save(tmp_path / "x.png")
    out = tmp_path / "p.csv"
    argv = ["predict", "--model", str(tmp_path / "model"), "--explain", str(tmp_path / "x.png"), "--out", str(out)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"not available for {task} models" in err and reason in err
    assert not out.exists()


def test_explanations_are_off_outside_the_analyze_stage(tmp_path):
    """explain 0, or a cross-validation fold's predictions: no gallery and no model needed."""
    from dermdl.params import params_from_dict

    y, probs = np.array([0, 1]), np.array([[0.9, 0.1], [0.3, 0.7]])
    for explain, predictions in (
        (0, tmp_path / "out" / "predictions"),
        (4, tmp_path / "cv" / "fold_1" / "predictions"),
    ):
        params = params_from_dict({"out_dir": str(tmp_path / "out"), "analyze": {"explain": explain}})
        assert explanations("t", ["a", "b"], y, probs, ["a", "b"], predictions, params, tmp_path / "figs") is None
    assert not (tmp_path / "figs").exists()


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory):
    """The tiny classification demo, preprocessed, an untrained saved model, infer and analyze (explain: 2)."""
    from dermdl import pipeline
    from dermdl.demo import generate_demo
    from dermdl.params import params_from_dict

    base = tmp_path_factory.mktemp("explain")
    generate_demo(base / "demo", n_train=2, n_test=3, n_weak=0, size=48)
    raw = {
        "task": "classification",
        "out_dir": str(base / "out"),
        "data": {"root": str(base / "demo" / "classification"), "sl_tests": ["sl_test"]},
        "preprocess": {"size": 48, "workers": 1},
        "train": {"input_size": 48},
        "infer": {"tta": "flips"},
        "analyze": {"n_boot": 100, "explain": 2},
    }
    params = params_from_dict(raw)
    pipeline.preprocess(params)
    classes = json.loads((params.out / "prepared" / "manifest.json").read_text())["classes"]
    torch.manual_seed(0)
    model, (mean, std) = build_classifier("efficientnet_lite0", len(classes), pretrained=False)
    config = ModelConfig("classification", "efficientnet_lite0", classes, 48, mean, std, 48, "squish")
    save_model(model, config, params.out / "model")
    pipeline.infer(params)
    return params, raw, pipeline.analyze(params)["sl_test"], classes


def test_analyze_gallery_rows_follow_the_predictions(analyzed):
    params, _, report, classes = analyzed
    frame = list(csv.DictReader((params.out / "predictions" / "sl_test.csv").open()))
    probs = np.array([[float(r[f"prob_{c}"]) for c in classes] for r in frame])
    y = np.array([classes.index(r["true_label"]) for r in frame])
    expected = [
        {"path": frame[i]["path"], "true": classes[y[i]], "predicted": classes[probs[i].argmax()], "row": label}
        for label, cases in select_cases(y, probs, classes, 2)
        for i in cases
    ]
    cases = report["explanations"]["cases"]
    assert [{k: v for k, v in c.items() if k != "probability"} for c in cases] == expected
    row_of = {r["path"]: i for i, r in enumerate(frame)}
    assert [c["probability"] for c in cases] == pytest.approx([probs[row_of[c["path"]]].max() for c in cases], abs=1e-6)
    assert report["explanations"]["method"].startswith("occlusion")  # the default analyze.explain_method
    figure = params.out / "plots" / "figures" / "sl_test_explanations.png"
    assert Image.open(figure).size[0] > 200


def test_analyze_without_explanations_needs_no_weights(analyzed):
    from dermdl import pipeline
    from dermdl.params import params_from_dict

    params, raw, _, _ = analyzed
    (params.out / "model" / "model.pt").rename(params.out / "model.pt.away")
    try:
        report = pipeline.analyze(params_from_dict({**raw, "analyze": {"n_boot": 100, "explain": 0}}))["sl_test"]
    finally:
        (params.out / "model.pt.away").rename(params.out / "model" / "model.pt")
    assert report.get("explanations") is None
    assert not (params.out / "plots" / "figures" / "sl_test_explanations.png").exists()
