"""masks <-> COCO conversion: per-object round trips and the `dermdl convert` commands."""

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from dermdl.cli import main
from dermdl.convert import mask_to_objects, objects_to_mask
from dermdl.demo import generate_demo
from dermdl.params import params_from_dict
from dermdl.tasks.detection.layout import scan_coco


def multi_class_mask() -> np.ndarray:
    """Class ids 0..3: blobs, a thin diagonal shape, a one-pixel object and touching classes."""
    mask = np.zeros((90, 120), np.uint8)
    cv2.ellipse(mask, (30, 30), (20, 12), 30, 0, 360, 1, -1)
    cv2.circle(mask, (90, 25), 14, 2, -1)
    cv2.rectangle(mask, (60, 55), (110, 80), 3, -1)
    cv2.circle(mask, (75, 67), 6, 1, -1)  # class 1 inside class 3: a hole in the class-3 object
    pts = np.array([[5, 85], [40, 50], [45, 55], [12, 88]])
    cv2.fillPoly(mask, [pts], 2)
    mask[2, 117] = 3  # single pixel
    return mask


def components(mask: np.ndarray, cls: int) -> list[np.ndarray]:
    count, labels = cv2.connectedComponents((mask == cls).astype(np.uint8), connectivity=8)
    return [labels == k for k in range(1, count)]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_polygon_round_trip_keeps_every_object():
    mask = multi_class_mask()
    objects = mask_to_objects(mask, 4, "polygon")
    assert sorted(o["category_id"] for o in objects) == [1, 1, 2, 2, 3, 3]
    for obj in objects:
        single = objects_to_mask([obj | {"id": 1}], *mask.shape, {1: 1, 2: 1, 3: 1}).astype(bool)
        matches = [c for c in components(mask, obj["category_id"]) if (c & single).any()]
        assert len(matches) == 1
        truth = matches[0]
        if obj["category_id"] == 3 and truth.sum() > 1:
            truth = truth | (mask == 1) & (np.arange(120)[None] >= 60) & (np.arange(90)[:, None] >= 55)  # hole filled
        assert iou(single, truth) >= 0.95, (obj["category_id"], iou(single, truth))
        ys, xs = np.nonzero(matches[0])
        assert obj["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert obj["area"] == matches[0].sum()


def test_rle_round_trip_is_exact_with_holes():
    mask = multi_class_mask()
    objects = mask_to_objects(mask, 4, "rle")
    back = objects_to_mask(objects, *mask.shape, {1: 1, 2: 2, 3: 3})
    assert np.array_equal(back, mask)


def test_small_objects_can_be_dropped():
    objects = mask_to_objects(multi_class_mask(), 4, "polygon", min_area=2)
    assert len(objects) == 5


@pytest.fixture(scope="module")
def seg_root(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    generate_demo(out, seed=0, size=64, n_train=2, n_test=1, n_weak=1, n_negative=0)
    return out / "segmentation"


@pytest.mark.parametrize("fmt", ["polygon", "rle"])
def test_convert_cli_round_trip(seg_root, tmp_path, fmt):
    coco, back = tmp_path / "coco", tmp_path / "masks"
    assert (
        main(
            [
                "convert",
                "masks-to-coco",
                "--root",
                str(seg_root),
                "--out",
                str(coco),
                "--format",
                fmt,
                "--datasets",
                "sl_train",
                "sl_test",
            ]
        )
        == 0
    )
    items, classes, report = scan_coco(coco, ["sl_train", "sl_test"])
    assert report.problems == [] and classes == ["lesion"] and len(items) == 9
    data = json.loads((coco / "annotations" / "sl_train.json").read_text())
    assert data["categories"] == [{"id": 1, "name": "lesion", "supercategory": "lesion"}]
    assert main(["convert", "coco-to-masks", "--root", str(coco), "--out", str(back)]) == 0
    for original in sorted((seg_root / "sl_train" / "masks").glob("*.png")):
        a = np.asarray(Image.open(original))
        b = np.asarray(Image.open(back / "sl_train" / "masks" / original.name))
        assert set(np.unique(b)) <= {0, 255}  # written with the stored values of the input convention
        if fmt == "rle":
            assert np.array_equal(a, b)
        else:
            assert iou(a > 0, b > 0) >= 0.95
        assert (back / "sl_train" / "images" / original.name).is_file()


@pytest.mark.parametrize("kind", ["masks-to-coco", "coco-to-masks"])
def test_convert_help(kind, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", kind, "--help"])
    assert exit_info.value.code == 0 and "--root" in capsys.readouterr().out


def test_convert_refuses_existing_output_and_unknown_categories(seg_root, tmp_path, capsys):
    coco = tmp_path / "coco"
    assert main(["convert", "masks-to-coco", "--root", str(seg_root), "--out", str(coco)]) == 0
    assert main(["convert", "masks-to-coco", "--root", str(seg_root), "--out", str(coco)]) == 1
    assert "already exists" in capsys.readouterr().err
    from dermdl.convert import coco_to_masks

    params = params_from_dict({"segmentation": {"codes": ["skin", "naevus"]}})
    with pytest.raises(ValueError, match="segmentation.codes"):
        coco_to_masks(coco, tmp_path / "masks", params)
