"""COCO detection layout checker: every bad input of issue 4, each reported with its JSON path or file."""

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from dermdl.tasks.detection.layout import decode_target, scan_coco

W, H = 40, 30


def _coco(prefix: str = "") -> dict:
    return {
        "images": [
            {"id": 1, "file_name": "a.png", "width": W, "height": H},
            {"id": 2, "file_name": "b.png", "width": W, "height": H},
            {"id": 3, "file_name": "neg.png", "width": W, "height": H},  # a negative: no annotations
        ],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [5, 5, 10, 8],
                "area": 80,
                "iscrowd": 0,
                "segmentation": [[5, 5, 15, 5, 15, 13, 5, 13]],
            },
            {"id": 2, "image_id": 2, "category_id": 2, "bbox": [0, 0, W, H], "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "melanoma"}, {"id": 2, "name": "nevus"}],
    }


def make_root(tmp_path: Path, datasets=("sl_train", "sl_test")) -> Path:
    root = tmp_path / "det root"
    for ds in datasets:
        folder = root / "images" / ds
        folder.mkdir(parents=True)
        for name in ("a.png", "b.png", "neg.png"):
            Image.new("RGB", (W, H), (120, 80, 60)).save(folder / name)
        write(root, ds, _coco())
    return root


def write(root: Path, ds: str, data) -> None:
    path = root / "annotations" / f"{ds}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))


def ann_path(root: Path, ds: str = "sl_train") -> str:
    return str(root / "annotations" / f"{ds}.json")


def _set(key, index, field, value):
    def mutate(data, root):
        data[key][index][field] = value

    return mutate


def _delete_field(key, index, field):
    def mutate(data, root):
        del data[key][index][field]

    return mutate


def _raw(text):
    def mutate(data, root):
        return text

    return mutate


def _drop(key):
    def mutate(data, root):
        del data[key]

    return mutate


def _file(action):
    def mutate(data, root):
        target = root / "images" / "sl_train" / "a.png"
        if action == "delete":
            target.unlink()
        elif action == "truncate":
            target.write_bytes(target.read_bytes()[:60])
        elif action == "empty":
            target.write_bytes(b"")
        elif action == "rmdir":
            for path in target.parent.iterdir():
                path.unlink()
            target.parent.rmdir()

    return mutate


def _categories_differ(data, root):
    other = _coco()
    other["categories"][1]["name"] = "Nevus"
    write(root, "sl_test", other)


def _category_id_differs(data, root):
    other = _coco()
    other["categories"][1]["id"] = 3
    other["annotations"][1]["category_id"] = 3
    write(root, "sl_test", other)


def _append(key, value):
    def mutate(data, root):
        data[key].append(value)

    return mutate


# (case id, mutation of sl_train's JSON dict / files, where (JSON path or file, relative), message part)
BAD = [
    ("invalid-json", _raw('{"images": [}'), "", "invalid JSON"),
    ("top-level-list", _raw("[]"), "", "top level is a JSON list"),
    ("missing-images", _drop("images"), "", "missing top-level key 'images'"),
    ("missing-annotations", _drop("annotations"), "", "missing top-level key 'annotations'"),
    ("missing-categories", _drop("categories"), "", "missing top-level key 'categories'"),
    ("annotations-not-list", lambda d, r: d.update(annotations={}), ": annotations", "must be a list"),
    ("image-not-object", _append("images", 5), ": images[3]", "not an object"),
    ("image-missing-width", _delete_field("images", 0, "width"), ": images[0].width", "'width' missing"),
    ("image-bool-id", _set("images", 0, "id", True), ": images[0].id", "is not valid"),
    ("duplicate-image-id", _set("images", 1, "id", 1), ": images[1].id", "duplicate image id 1"),
    ("duplicate-file-name", _set("images", 1, "file_name", "a.png"), ": images[1].file_name", "duplicate file_name"),
    ("duplicate-annotation-id", _set("annotations", 1, "id", 1), ": annotations[1].id", "duplicate annotation id 1"),
    ("duplicate-category-id", _set("categories", 1, "id", 1), ": categories[1].id", "duplicate category id 1"),
    (
        "duplicate-category-name",
        _set("categories", 1, "name", "melanoma"),
        ": categories[1].name",
        "duplicate category name",
    ),
    ("no-categories", lambda d, r: d.update(categories=[]), ": categories", "no categories"),
    ("no-images", lambda d, r: d.update(images=[], annotations=[]), ": images", "lists no images"),
    (
        "unknown-image",
        _set("annotations", 0, "image_id", 99),
        ": annotations[0].image_id",
        "image id 99 is not in 'images'",
    ),
    (
        "unknown-category",
        _set("annotations", 0, "category_id", 7),
        ": annotations[0].category_id",
        "category id 7 is not in 'categories'",
    ),
    ("bad-iscrowd", _set("annotations", 0, "iscrowd", 2), ": annotations[0].iscrowd", "iscrowd is 2"),
    ("image-file-missing", _file("delete"), "images/sl_train/a.png", "does not exist"),
    ("image-folder-missing", _file("rmdir"), "images/sl_train", "image folder of dataset 'sl_train' does not exist"),
    ("image-truncated", _file("truncate"), "images/sl_train/a.png", "truncated"),
    ("image-empty", _file("empty"), "images/sl_train/a.png", "empty"),
    ("file-name-outside", _set("images", 0, "file_name", "../a.png"), ": images[0].file_name", "points outside"),
    ("file-name-not-image", _set("images", 0, "file_name", "a.txt"), ": images[0].file_name", "not an image file"),
    ("size-differs", _set("images", 0, "width", 41), ": images[0]", "41 x 30 but the file a.png is 40 x 30"),
    (
        "bbox-zero-width",
        _set("annotations", 0, "bbox", [5, 5, 0, 8]),
        ": annotations[0].bbox",
        "zero or negative width",
    ),
    (
        "bbox-negative-height",
        _set("annotations", 0, "bbox", [5, 5, 10, -2]),
        ": annotations[0].bbox",
        "zero or negative height",
    ),
    (
        "bbox-outside-right",
        _set("annotations", 0, "bbox", [35, 5, 10, 8]),
        ": annotations[0].bbox",
        "reaches outside the 40 x 30 image",
    ),
    ("bbox-outside-top", _set("annotations", 0, "bbox", [5, -3, 10, 8]), ": annotations[0].bbox", "reaches outside"),
    ("bbox-three-numbers", _set("annotations", 0, "bbox", [1, 2, 3]), ": annotations[0].bbox", "not 4 finite numbers"),
    ("bbox-missing", _delete_field("annotations", 0, "bbox"), ": annotations[0].bbox", "not 4 finite numbers"),
    (
        "polygon-self-intersecting",
        _set("annotations", 0, "segmentation", [[5, 5, 15, 13, 15, 5, 5, 13]]),
        ": annotations[0].segmentation[0]",
        "invalid polygon (Self-intersection",
    ),
    (
        "polygon-two-points",
        _set("annotations", 0, "segmentation", [[5, 5, 15, 13]]),
        ": annotations[0].segmentation[0]",
        "at least 6",
    ),
    (
        "polygon-odd-coordinates",
        _set("annotations", 0, "segmentation", [[5, 5, 15, 13, 15]]),
        ": annotations[0].segmentation[0]",
        "even number",
    ),
    (
        "polygon-zero-area",
        _set("annotations", 0, "segmentation", [[5, 5, 10, 5, 15, 5]]),
        ": annotations[0].segmentation[0]",
        "invalid polygon",
    ),
    (
        "polygon-not-numbers",
        _set("annotations", 0, "segmentation", [["a", 1, 2, 3, 4, 5]]),
        ": annotations[0].segmentation[0]",
        "not a flat list",
    ),
    (
        "rle-wrong-size",
        _set("annotations", 0, "segmentation", {"size": [10, 10], "counts": "abc"}),
        ": annotations[0].segmentation",
        "RLE size [10, 10] differs",
    ),
    (
        "categories-differ",
        _categories_differ,
        "annotations/sl_test.json: categories",
        "categories differ from sl_train.json: missing nevus; extra Nevus",
    ),
    (
        "category-id-differs",
        _category_id_differs,
        "annotations/sl_test.json: categories",
        "'nevus' has id 3 here but 2 there",
    ),
]


@pytest.mark.parametrize("case, mutate, where, text", BAD, ids=[c[0] for c in BAD])
def test_bad_input_is_reported_with_its_location(tmp_path, case, mutate, where, text):
    root = make_root(tmp_path)
    data = _coco()
    replaced = mutate(data, root)
    write(root, "sl_train", replaced if replaced is not None else data)
    items, classes, report = scan_coco(root, ["sl_train", "sl_test"])
    if where.startswith(":") or where == "":
        expected = ann_path(root) + where
    else:
        expected = (
            str(root) + os.sep + where.replace("/", os.sep, 1)
            if where.startswith("annotations/")
            else str(root / where)
        )
    hits = [p for p in report.errors if p.path == expected and text in p.problem]
    assert hits, f"{case}: no error at {expected!r} containing {text!r}; got:\n" + "\n".join(report.lines())
    assert not report.ok
    line = hits[0].line()
    assert line.startswith("ERROR ") and "Fix: " in line


def test_valid_dataset_has_no_problems_and_keeps_negatives(tmp_path):
    root = make_root(tmp_path)
    items, classes, report = scan_coco(root, ["sl_train", "sl_test"])
    assert report.problems == []
    assert classes == ["melanoma", "nevus"]
    assert len(items) == 6
    targets = {(i.dataset, i.path.name): decode_target(i.target) for i in items}
    assert targets[("sl_train", "neg.png")]["annotations"] == []
    assert targets[("sl_train", "a.png")]["annotations"][0]["category"] == "melanoma"
    assert targets[("sl_train", "a.png")]["category_ids"] == [1, 2]
    # the annotation without area gets the box area
    assert targets[("sl_train", "b.png")]["annotations"][0]["area"] == W * H


def test_classes_follow_category_ids_and_names_work_with_json_suffix(tmp_path):
    root = make_root(tmp_path, datasets=("sl_train",))
    data = _coco()
    data["categories"] = [{"id": 2, "name": "a_second"}, {"id": 1, "name": "z_first"}]
    write(root, "sl_train", data)
    items, classes, report = scan_coco(root, ["sl_train.json"])
    assert report.ok and classes == ["z_first", "a_second"]
    assert {i.dataset for i in items} == {"sl_train.json"}


def test_same_dataset_listed_with_and_without_suffix(tmp_path):
    root = make_root(tmp_path)
    _, _, report = scan_coco(root, ["sl_train", "sl_train.json"])
    assert any("listed twice" in p.problem for p in report.errors)


def test_missing_annotation_file_and_root(tmp_path):
    root = make_root(tmp_path)
    _, _, report = scan_coco(root, ["sl_train", "sl_val"])
    assert [p.path for p in report.errors] == [str(root / "annotations" / "sl_val.json")]
    assert "does not exist" in report.errors[0].problem
    _, _, report = scan_coco(tmp_path / "nowhere", ["sl_train"])
    assert "does not exist" in report.errors[0].problem


def test_every_problem_is_collected(tmp_path):
    root = make_root(tmp_path)
    data = _coco()
    data["annotations"][0]["bbox"] = [5, 5, 0, 8]
    data["annotations"][1]["category_id"] = 9
    data["images"][2]["width"] = 99
    write(root, "sl_train", data)
    (root / "images" / "sl_test" / "b.png").unlink()
    _, _, report = scan_coco(root, ["sl_train", "sl_test"])
    assert len(report.errors) == 4, report.lines()


@pytest.mark.parametrize("box, clipped", [([35, 5, 10, 8], [35, 5, 5, 8]), ([-2, -1, 10, 8], [0, 0, 8, 7])])
def test_clip_boxes_warns_and_clips(tmp_path, box, clipped):
    root = make_root(tmp_path)
    data = _coco()
    data["annotations"][0]["bbox"] = box
    write(root, "sl_train", data)
    items, _, report = scan_coco(root, ["sl_train"], clip_boxes=True)
    assert report.ok and len(report.warnings) == 1 and "clipped" in report.warnings[0].problem
    target = decode_target(next(i for i in items if i.path.name == "a.png").target)
    assert target["annotations"][0]["bbox"] == clipped
    _, _, strict = scan_coco(root, ["sl_train"], clip_boxes=False)
    assert not strict.ok and "clip_boxes" in strict.errors[0].fix


def test_box_entirely_outside_is_an_error_even_when_clipping(tmp_path):
    root = make_root(tmp_path)
    data = _coco()
    data["annotations"][0]["bbox"] = [50, 5, 10, 8]
    write(root, "sl_train", data)
    _, _, report = scan_coco(root, ["sl_train"], clip_boxes=True)
    assert any("entirely outside" in p.problem for p in report.errors)


def test_unlisted_image_is_a_warning(tmp_path):
    root = make_root(tmp_path)
    Image.new("RGB", (W, H)).save(root / "images" / "sl_train" / "extra.png")
    (root / "images" / "sl_train" / ".DS_Store").write_bytes(b"x")
    _, _, report = scan_coco(root, ["sl_train"])
    assert report.ok
    assert [p.path for p in report.warnings] == [str(root / "images" / "sl_train" / "extra.png")]


def test_decompression_bomb_guard_applies(tmp_path):
    root = make_root(tmp_path)
    _, _, report = scan_coco(root, ["sl_train"], max_pixels=100)
    assert any("megapixels" in p.problem for p in report.errors)


def test_fast_rescan_still_checks_files_and_sizes(tmp_path):
    root = make_root(tmp_path)
    data = _coco()
    data["images"][1]["height"] = 31
    write(root, "sl_train", data)
    (root / "images" / "sl_train" / "a.png").unlink()
    _, _, report = scan_coco(root, ["sl_train"], check_images=False)
    assert len(report.errors) == 2


def test_exif_rotated_image_size_is_the_displayed_size(tmp_path):
    root = make_root(tmp_path)
    image = Image.new("RGB", (H, W))  # stored 30 x 40, displayed 40 x 30 after the EXIF rotation
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(root / "images" / "sl_train" / "a.jpg", exif=exif.tobytes())
    data = _coco()
    data["images"][0]["file_name"] = "a.jpg"
    write(root, "sl_train", data)
    (root / "images" / "sl_train" / "a.png").unlink()
    _, _, report = scan_coco(root, ["sl_train"])
    assert report.ok, report.lines()
