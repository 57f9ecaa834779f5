"""dermdl.demo: deterministic synthetic dataset, correct layout/masks/COCO, no trivial shortcut."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dermdl.demo import CLASSES, DATASETS, generate_demo, main

DEFAULT_COUNTS = {"sl_train": 80, "wl_train": 40, "sl_test": 40}
SMALL = {"n_train": 2, "n_test": 1, "n_weak": 1, "n_negative": 1}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, dict]:
    """One generation with the default counts, shared by all tests (it is the slow part)."""
    out = tmp_path_factory.mktemp("demo") / "demo"
    return out, generate_demo(out, seed=0)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_summary_and_classification_layout(demo):
    out, summary = demo
    assert summary["classes"] == CLASSES and len(CLASSES) >= 3 and summary["seed"] == 0
    for ds in DATASETS:
        assert sorted(p.name for p in (out / "classification" / ds).iterdir()) == CLASSES
        for cls in CLASSES:
            names = sorted(p.name for p in (out / "classification" / ds / cls).iterdir())
            assert len(names) == DEFAULT_COUNTS[ds] == summary["classification"][ds][cls]
            assert all(n.startswith(f"{cls}_{ds}_") and n.endswith(".png") for n in names)
    assert not list(out.rglob(".*")), "no hidden/temporary files may be left behind"


def test_segmentation_masks_match_images(demo):
    out, summary = demo
    for ds in DATASETS:
        images = sorted((out / "segmentation" / ds / "images").iterdir())
        masks = sorted((out / "segmentation" / ds / "masks").iterdir())
        assert [p.name for p in images] == [p.name for p in masks]
        assert len(images) == summary["segmentation"][ds] == DEFAULT_COUNTS[ds] * len(CLASSES)
        for img_path in images[:: max(1, len(images) // 30)]:
            img, mask = Image.open(img_path), Image.open(out / "segmentation" / ds / "masks" / img_path.name)
            assert img.mode == "RGB" and mask.mode == "L" and img.size == mask.size == (128, 128)
            m = np.asarray(mask)
            assert set(np.unique(m)) == {0, 255}
            assert 0.10 <= (m > 0).mean() <= 0.65
            cls = img_path.name.rsplit(f"_{ds}_", 1)[0]
            assert img_path.read_bytes() == (out / "classification" / ds / cls / img_path.name).read_bytes()


@pytest.mark.parametrize("ds", ["sl_train", "sl_test"])
def test_detection_coco(demo, ds):
    out, summary = demo
    coco = json.loads((out / "detection" / "annotations" / f"{ds}.json").read_text())
    assert [c["id"] for c in coco["categories"]] == list(range(1, len(CLASSES) + 1))
    assert [c["name"] for c in coco["categories"]] == CLASSES
    images = {im["id"]: im for im in coco["images"]}
    assert len(images) == len(coco["images"]) == summary["detection"][ds]["images"]
    assert len(coco["annotations"]) == DEFAULT_COUNTS[ds] * len(CLASSES)
    assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])
    for im in images.values():
        assert (out / "detection" / "images" / ds / im["file_name"]).is_file()
        assert Image.open(out / "detection" / "images" / ds / im["file_name"]).size == (im["width"], im["height"])
    annotated = {a["image_id"] for a in coco["annotations"]}
    negatives = [im for i, im in images.items() if i not in annotated]
    assert len(negatives) == summary["detection"][ds]["negatives"]
    assert all(im["file_name"].startswith("negative_") for im in negatives)
    for a in coco["annotations"]:
        im = images[a["image_id"]]
        cls = CLASSES[a["category_id"] - 1]
        assert im["file_name"].startswith(f"{cls}_{ds}_") and a["iscrowd"] == 0
        x, y, w, h = a["bbox"]
        assert x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= im["width"] and y + h <= im["height"]
        mask = np.asarray(Image.open(out / "segmentation" / ds / "masks" / im["file_name"])) > 0
        ys, xs = np.nonzero(mask)
        expected = [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert np.abs(np.array(a["bbox"]) - np.array(expected)).max() <= 1
        assert abs(a["area"] - mask.sum()) <= 0.02 * mask.sum()
        assert a["segmentation"] and all(len(p) >= 6 and len(p) % 2 == 0 for p in a["segmentation"])
        poly = np.array(a["segmentation"][0]).reshape(-1, 2)
        assert poly.min() >= 0 and poly[:, 0].max() < im["width"] and poly[:, 1].max() < im["height"]


def test_deterministic_and_seed_dependent(demo, tmp_path):
    out, _ = demo

    def run(name: str, seed: int) -> dict[str, bytes]:
        generate_demo(tmp_path / name, seed=seed, **SMALL)
        return _files(tmp_path / name)

    a, b, c = run("a", 0), run("b", 0), run("c", 1)
    assert a == b and a.keys() == c.keys()
    pngs = [k for k in a if k.endswith(".png")]
    assert all(a[k] != c[k] for k in pngs if "/masks/" not in k)
    # Each image has its own RNG stream: a smaller run reproduces the default run's first images.
    full = _files(out)
    assert all(full[k] == v for k, v in a.items() if k.startswith(("classification", "segmentation")))


def test_regenerating_replaces_old_output(tmp_path):
    out = tmp_path / "demo"
    generate_demo(out, seed=0, **SMALL)
    (out / "stale.txt").write_text("old")
    summary = generate_demo(out, seed=0, **SMALL)
    assert not (out / "stale.txt").exists() and summary["segmentation"]["sl_train"] == 2 * len(CLASSES)


def test_global_colour_and_area_do_not_separate_classes(demo):
    """A linear model on mean R, G, B and lesion area must stay near chance: no shortcut."""
    out, _ = demo

    def features(ds: str) -> tuple[np.ndarray, np.ndarray]:
        rows, labels = [], []
        for k, cls in enumerate(CLASSES):
            for p in sorted((out / "classification" / ds / cls).glob("*.png")):
                rgb = np.asarray(Image.open(p), np.float32).reshape(-1, 3).mean(0)
                area = (np.asarray(Image.open(out / "segmentation" / ds / "masks" / p.name)) > 0).mean()
                rows.append([*rgb, area])
                labels.append(k)
        return np.array(rows), np.array(labels)

    (xa, ya), (xb, yb), (xt, yt) = features("sl_train"), features("wl_train"), features("sl_test")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(np.concatenate([xa, xb]), np.concatenate([ya, yb]))
    accuracy = model.score(xt, yt)
    assert accuracy < 0.70, f"global colour/area features separate the classes too well: {accuracy:.2f}"


def test_cli(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0 and "--seed" in capsys.readouterr().out
    out = tmp_path / "cli"
    assert main(["--out", str(out), "--seed", "3", "--n-train", "1", "--n-test", "1", "--n-weak", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["seed"] == 3
    assert len(list((out / "classification" / "sl_test").rglob("*.png"))) == len(CLASSES)
