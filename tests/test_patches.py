"""Patch training data (preprocess.patch_size): the grid covers every image, patch names round-trip,
masks and COCO objects are cut with the pixels, and one image's patches stay on one side of a split."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dermdl import pipeline
from dermdl.arrays import PreparedImages
from dermdl.demo import generate_demo
from dermdl.images import open_mask
from dermdl.params import params_from_dict
from dermdl.patches import ID_STRIDE, clip_box, cut_coco, parse_patch_name, patch_name, windows
from dermdl.prepare import resize
from dermdl.splits import folds, stratified_split


@pytest.mark.parametrize(
    ("height", "width", "size", "overlap"),
    [(64, 64, 40, 0.0), (100, 37, 32, 0.25), (30, 20, 32, 0.0), (513, 1025, 128, 0.5), (64, 64, 64, 0.0)],
)
def test_windows_cover_the_image_within_its_bounds(height, width, size, overlap):
    covered = np.zeros((height, width), int)
    for row, col, h, w in windows(height, width, size, overlap):
        assert 0 <= row and row + h <= height and 0 <= col and col + w <= width
        assert (h, w) == (min(size, height), min(size, width))  # full patches unless the image is smaller
        covered[row : row + h, col : col + w] += 1
    assert covered.min() >= 1
    # the fewest patches: with one fewer along a side, neighbours would be further apart than the overlap allows
    n_rows = len({r for r, *_ in windows(height, width, size, overlap)})
    if n_rows > 2:
        assert (height - size) / (n_rows - 2) > int(size * (1 - overlap))
    assert n_rows == 1 or height > size


def test_a_patch_size_below_8_is_refused():
    with pytest.raises(ValueError, match="preprocess.patch_size"):
        windows(64, 64, 4)


@pytest.mark.parametrize(("stem", "row", "col"), [("ISIC_1", 512, 1024), ("a__b", 0, 7), ("x", 12345, 0)])
def test_patch_names_round_trip(stem, row, col):
    assert parse_patch_name(patch_name(stem, row, col)) == (stem, row, col)


@pytest.mark.parametrize(
    ("bbox", "window", "expected"),
    [
        ([10, 10, 20, 20], (0, 16, 32, 32), [0, 10, 14, 20]),  # 14 of 20 px wide inside: kept, clipped
        ([0, 0, 20, 20], (0, 16, 32, 32), None),  # 4 of 20 px inside (0.2 < 0.25): dropped
        ([20, 40, 8, 8], (32, 16, 32, 32), [4, 8, 8, 8]),  # wholly inside: shifted only
    ],
)
def test_coco_boxes_are_clipped_or_dropped(bbox, window, expected):
    info = {
        "image": {"id": 3, "file_name": "big.png", "width": 64, "height": 64},
        "annotations": [{"id": 9, "image_id": 3, "bbox": bbox, "category": "a", "iscrowd": 0, "segmentation": []}],
        "category_ids": [1],
    }
    cut = cut_coco(info, window, 2, "big__r0000_c0016.png", 0.25)
    assert cut["image"]["id"] == 3 * ID_STRIDE + 2 and cut["image"]["source_id"] == 3
    assert (cut["image"]["width"], cut["image"]["height"]) == (32, 32)
    if expected is None:
        assert cut["annotations"] == []
        return
    (ann,) = cut["annotations"]
    assert ann["bbox"] == pytest.approx(expected)
    assert ann["image_id"] == cut["image"]["id"] and ann["id"] == 9 * ID_STRIDE + 2


def test_coco_polygons_are_clipped_into_patch_pixels():
    square = [10, 10, 30, 10, 30, 30, 10, 30]
    info = {
        "image": {"id": 1, "file_name": "big.png", "width": 64, "height": 64},
        "annotations": [{"id": 1, "bbox": [10, 10, 20, 20], "category": "a", "iscrowd": 0, "segmentation": [square]}],
        "category_ids": [1],
    }
    (ann,) = cut_coco(info, (0, 20, 32, 32), 0, "p.png", 0.25)["annotations"]
    (poly,) = ann["segmentation"]
    xs, ys = poly[0::2], poly[1::2]
    assert (min(xs), max(xs), min(ys), max(ys)) == pytest.approx((0, 10, 10, 30))  # x 20..30 -> 0..10
    assert clip_box((10, 10, 30, 30), 0, 20, 32) == pytest.approx((0, 10, 10, 30))


def _params(task: str, root: Path, out: Path, **preprocess) -> object:
    return params_from_dict(
        {
            "task": task,
            "out_dir": str(out),
            "data": {"root": str(root), "wl_train": [], "sl_train": ["sl_train"], "sl_tests": ["sl_test"]},
            "preprocess": {"size": 32, "workers": 1, "patch_size": 40} | preprocess,
            "train": {"input_size": 32, "bs": 16, "fepochs": 0, "epochs": 1, "deterministic": True},
            "analyze": {"n_boot": 100, "explain": 0},
            "infer": {"tta": "none"},
        }
    )


def _check_patch_records(records: list, root: Path, size: int) -> None:
    """Every patch names its window, and the windows of each image are exactly its grid."""
    by_source = defaultdict(list)
    for record in records:
        patch = record["patch"]
        stem, row, col = parse_patch_name(Path(record["path"]).stem)
        assert (stem, row, col) == (Path(patch["source"]).stem, patch["row"], patch["col"])
        assert Path(record["source"]).stem == Path(record["path"]).stem
        by_source[patch["source"]].append((patch["row"], patch["col"], patch["height"], patch["width"]))
    for source, found in by_source.items():
        width, height = Image.open(root / source).size
        assert sorted(found) == sorted(windows(height, width, size))


@pytest.mark.slow
def test_segmentation_patches_cut_image_and_mask_with_one_window(tmp_path):
    generate_demo(tmp_path / "demo", n_train=1, n_test=1, n_weak=0, size=64)
    root = tmp_path / "demo" / "segmentation"
    params = _params("segmentation", root, tmp_path / "out")
    manifest = pipeline.preprocess(params)
    records = pipeline.load_manifest(params)["datasets"]["sl_test"]
    assert records and len(records) == len(manifest["datasets"]["sl_test"]) and len(records) % 4 == 0  # 2 x 2 each
    _check_patch_records(records, root, 40)
    pixels = PreparedImages(records)
    prepared = params.out / "prepared"
    for i, record in enumerate(records):
        p = record["patch"]
        window = np.s_[p["row"] : p["row"] + p["height"], p["col"] : p["col"] + p["width"]]
        source_mask = open_mask(root / record["mask_source"])
        assert np.array_equal(open_mask(prepared / record["mask_full"]), source_mask[window])
        small = np.asarray(resize(Image.fromarray(source_mask[window]), 32, "squish", kind="mask"))
        assert np.array_equal(open_mask(prepared / record["target"]), small)
        image = np.asarray(Image.open(root / p["source"]).convert("RGB"))[window]
        expected = np.asarray(resize(Image.fromarray(image), 32, "squish"))
        assert np.array_equal(np.asarray(pixels[i]), expected)


@pytest.mark.slow
def test_classification_patches_train_infer_analyze_and_split_by_image(tmp_path):
    generate_demo(tmp_path / "demo", n_train=4, n_test=1, n_weak=0, size=64)
    root = tmp_path / "demo" / "classification"
    params = _params("classification", root, tmp_path / "out")
    pipeline.preprocess(params)
    pipeline.train(params)
    written = pipeline.infer(params)
    pipeline.analyze(params)
    manifest = pipeline.load_manifest(params)
    sl_train = manifest["datasets"]["sl_train"]
    _check_patch_records(sl_train, root, 40)
    for record in sl_train:  # each patch keeps its image's label (the class folder)
        assert record["target"] == Path(record["patch"]["source"]).parent.name
    train, valid = pipeline._split(params, sl_train)
    sides = defaultdict(set)
    for side, records in (("train", train), ("valid", valid)):
        for record in records:
            sides[record["patch"]["source"]].add(side)
    assert valid and all(len(s) == 1 for s in sides.values())  # no image on both sides
    # predictions map back: one row per test patch, named by its window
    text = Path(written["sl_test"]).read_text()
    for record in manifest["datasets"]["sl_test"]:
        assert Path(record["source"]).name in text


def _patch_records(n_images: int, per_image: int, lesion_of=lambda i: None) -> list:
    return [
        {
            "path": f"sl_train/{'ab'[i % 2]}/img{i}__r{j:04d}_c0000.png",
            "source": f"sl_train/{'ab'[i % 2]}/img{i}__r{j:04d}_c0000.png",
            "target": "ab"[i % 2],
            "stratum": "ab"[i % 2],
            "group": lesion_of(i),
            "patch": {"source": f"sl_train/{'ab'[i % 2]}/img{i}.png", "row": j, "col": 0, "height": 8, "width": 8},
        }
        for i in range(n_images)
        for j in range(per_image)
    ]


@pytest.mark.parametrize("lesion_of", [lambda i: None, lambda i: f"lesion{i // 2}"])  # no ids / 2 images a lesion
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_patches_of_one_image_and_one_lesion_stay_on_one_side(seed, lesion_of):
    records = _patch_records(12, 3, lesion_of)
    key = [lesion_of(i) or f"img{i}" for i in range(12) for _ in range(3)]
    train, valid = stratified_split(records, 0.25, seed)
    side = {id(r): "train" for r in train} | {id(r): "valid" for r in valid}
    sides: dict[str, set] = defaultdict(set)
    for k, record in zip(key, records):
        sides[k].add(side[id(record)])
    assert valid and all(len(v) == 1 for v in sides.values())
    for _, held in folds(records, 3, seed):
        held_keys = {k for k, r in zip(key, records) if any(r is h for h in held)}
        assert len(held) == 3 * len(held_keys) * (2 if lesion_of(0) else 1)  # each key held whole


@pytest.mark.slow
def test_detection_patches_clip_boxes_like_a_naive_intersection(tmp_path):
    generate_demo(tmp_path / "demo", n_train=1, n_test=1, n_weak=0, size=64)
    root = tmp_path / "demo" / "detection"
    params = _params("detection", root, tmp_path / "out", patch_min_visible=0.5)
    records = pipeline.preprocess(params)["datasets"]["sl_test"]
    _check_patch_records(records, root, 40)
    coco = json.loads((root / "annotations" / "sl_test.json").read_text())
    image_id = {Path(i["file_name"]).name: i["id"] for i in coco["images"]}
    negatives = 0
    for record in records:
        p = record["patch"]
        expected = []
        for ann in coco["annotations"]:
            if ann["image_id"] != image_id[Path(p["source"]).name]:
                continue
            x, y, w, h = ann["bbox"]  # naive: intersect the box with the window by hand
            x0, y0 = max(x, p["col"]), max(y, p["row"])
            x1, y1 = min(x + w, p["col"] + p["width"]), min(y + h, p["row"] + p["height"])
            if x1 > x0 and y1 > y0 and (x1 - x0) * (y1 - y0) >= 0.5 * w * h:
                expected.append([x0 - p["col"], y0 - p["row"], x1 - x0, y1 - y0])
        found = sorted(a["bbox"] for a in record["annotations"])
        assert np.allclose(np.reshape(found, (-1, 4)), np.reshape(sorted(expected), (-1, 4)))
        assert len(record["target"]) == len(expected)  # prepared boxes: the same objects, none lost
        negatives += not expected
    assert negatives and negatives < len(records)  # patches without objects stay, as negatives
