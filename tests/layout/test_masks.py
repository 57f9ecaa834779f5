"""dermdl.tasks.segmentation.layout: one case table of broken segmentation trees, one of good trees.

Every case starts from the same small good tree (2 datasets x 2 image/mask pairs) and applies one
change; a bad case must yield exactly the expected problems (path, what, fix), a good case a clean
report. Separate tests check that ALL problems are collected and that the tree is never modified.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tree_edits import png_bomb_bytes, remove, steps, truncate, write

from dermdl.layout import Item
from dermdl.tasks.segmentation.layout import scan_segmentation

DATASETS = ["sl_train", "sl_test"]
VALUES = {0: 0, 255: 1, 1: 1}  # the default two-class map
N_GOOD = 4
H, W = 24, 32
PIXELS = np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8)
MASK = np.zeros((H, W), np.uint8)
MASK[6:18, 8:20] = 255


def img(path: Path, mode: str = "RGB", fmt: str | None = None, array: np.ndarray = PIXELS, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).convert(mode).save(path, fmt, **kw)


def mask(path: Path, array: np.ndarray = MASK, mode: str | None = None, fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(path, fmt)


def good_tree(root: Path) -> None:
    for ds in DATASETS:
        for i in range(2):
            img(root / ds / "images" / f"a{i}.png")
            mask(root / ds / "masks" / f"a{i}.png")


def new_image(rel: str, **kw):
    return lambda root: img(root / rel, **kw)


def new_mask(rel: str, array: np.ndarray = MASK, **kw):
    return lambda root: mask(root / rel, array, **kw)


def with_values(*values: int) -> np.ndarray:
    out = MASK.copy()
    for i, v in enumerate(values):
        out[0, i * 2 : (i + 1) * 2] = v  # two pixels per extra value
    return out


def empty_images(root: Path) -> None:
    for f in (root / "sl_test/images").iterdir():
        f.unlink()
    (root / "sl_test/images/.DS_Store").write_bytes(b"\0\0\0\1Bud1")


def palette_mask(indices: np.ndarray) -> Image.Image:
    """A "P" PNG whose pixels are ``indices`` and whose palette paints them in colour."""
    image = Image.frombytes("P", (indices.shape[1], indices.shape[0]), indices.astype(np.uint8).tobytes())
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [128] * (768 - 12))
    return image


GRADIENT = np.tile(np.arange(W, dtype=np.uint8) * 8, (H, 1))
PALETTE_3 = palette_mask(np.where(MASK > 0, 3, 0))
TI, TM = "sl_train/images", "sl_train/masks"
OUTSIDE = "pixel values outside segmentation.mask_values (0, 1, 255)"

# (id, change, datasets, [(path relative to root, in problem, in fix)], number of usable pairs)
BAD_CASES = [
    ("missing_root", lambda r: shutil.rmtree(r), DATASETS, [("", "root folder does not exist", "check the path")], 0),
    (
        "root_is_file",
        lambda r: (shutil.rmtree(r), r.write_text("x")),
        DATASETS,
        [("", "is a file", "pass the folder")],
        0,
    ),
    (
        "missing_dataset",
        None,
        DATASETS + ["wl_train"],
        [("wl_train", "dataset folder 'wl_train' does not exist", "create {root}/wl_train/ with images/ and masks/")],
        N_GOOD,
    ),
    (
        "dataset_is_file",
        write("wl_train", "x"),
        DATASETS + ["wl_train"],
        [("wl_train", "is a file", "remove 'wl_train' from the dataset list")],
        N_GOOD,
    ),
    ("duplicate_dataset", None, DATASETS + ["sl_train"], [("sl_train", "listed 2 times", "only once")], N_GOOD),
    ("dataset_name_is_path", None, DATASETS + ["../x"], [("../x", "not a single folder name", "use the name")], N_GOOD),
    (
        "images_folder_missing",
        remove("sl_test/images"),
        DATASETS,
        [("sl_test/images", "folder 'images' is missing from dataset 'sl_test'", "create {root}/sl_test/images")],
        2,
    ),
    (
        "images_folder_wrong_case",
        lambda r: (r / "sl_test/images").rename(r / "sl_test/Images"),
        DATASETS,
        [("sl_test/images", "folder 'images' is missing", "rename the folder {root}/sl_test/Images to 'images'")],
        2,
    ),
    (
        "masks_folder_missing",
        remove("sl_test/masks"),
        DATASETS,
        [("sl_test/masks", "folder 'masks' is missing", "put the PNG masks in it")],
        2,
    ),
    (
        "empty_images_folder",
        empty_images,
        DATASETS,
        [
            ("sl_test/images", "folder images/ of dataset 'sl_test' contains no images", "add images"),
            ("sl_test/masks/a0.png", "mask has no image", "add its image, or remove the mask"),
            ("sl_test/masks/a1.png", "mask has no image", "add its image, or remove the mask"),
        ],
        2,
    ),
    (
        "image_without_mask",
        remove(f"{TM}/a0.png"),
        DATASETS,
        [(f"{TI}/a0.png", "image has no mask (expected {root}/sl_train/masks/a0.png)", "add its mask")],
        3,
    ),
    (
        "mask_without_image",
        new_mask(f"{TM}/extra.png"),
        DATASETS,
        [(f"{TM}/extra.png", "mask has no image (expected {root}/sl_train/images/extra.<ext>", "add its image")],
        N_GOOD,
    ),
    (
        "mask_is_jpeg",
        steps(remove(f"{TM}/a0.png"), new_mask(f"{TM}/a0.jpg")),
        DATASETS,
        [(f"{TM}/a0.jpg", "mask is not a .png file", "save it losslessly as {root}/sl_train/masks/a0.png")],
        3,
    ),
    (
        "mask_is_tiff",
        steps(remove(f"{TM}/a0.png"), new_mask(f"{TM}/a0.tif")),
        DATASETS,
        [(f"{TM}/a0.tif", "mask is not a .png file", "save it losslessly")],
        3,
    ),
    (
        "non_mask_file",
        write(f"{TM}/notes.txt", "notes"),
        DATASETS,
        [(f"{TM}/notes.txt", "not a mask file", "remove it")],
        N_GOOD,
    ),
    (
        "mask_smaller_than_image",
        new_mask(f"{TM}/a0.png", np.zeros((16, 16), np.uint8)),
        DATASETS,
        [(f"{TM}/a0.png", "mask is 16 x 16 pixels but its image a0.png is 32 x 24", "export the mask at the size")],
        3,
    ),
    (
        "mask_transposed",
        new_mask(f"{TM}/a0.png", np.zeros((W, H), np.uint8)),
        DATASETS,
        [(f"{TM}/a0.png", "mask is 24 x 32 pixels but its image a0.png is 32 x 24", "align pixel for pixel")],
        3,
    ),
    (
        "value_outside_mask_values",
        new_mask(f"{TM}/a0.png", with_values(128)),
        DATASETS,
        [(f"{TM}/a0.png", f"{OUTSIDE}: 128 (2 pixels)", "map the extra values to class ids")],
        3,
    ),
    (
        "several_values_outside",
        new_mask(f"{TM}/a0.png", with_values(7, 128, 128)),
        DATASETS,
        [(f"{TM}/a0.png", f"{OUTSIDE}: 128 (4 pixels), 7 (2 pixels)", "re-export the mask with only those values")],
        3,
    ),
    (
        "anti_aliased_gradient",
        new_mask(f"{TM}/a0.png", GRADIENT),
        DATASETS,
        [
            (
                f"{TM}/a0.png",
                "8 (24 pixels), 16 (24 pixels), 24 (24 pixels), 32 (24 pixels), 40 (24 pixels), 48 (24 pixels), 56 (24 pixels), 64 (24 pixels), and 23 more values",  # noqa: E501
                "no anti-aliasing",
            )
        ],
        3,
    ),
    (
        "palette_index_outside",
        lambda r: PALETTE_3.save(r / TM / "a0.png"),
        DATASETS,
        [(f"{TM}/a0.png", f"{OUTSIDE}: 3 (144 pixels)", "mask_values")],
        3,
    ),
    (
        "rgb_colour_mask",
        new_mask(f"{TM}/a0.png", np.stack([MASK, MASK // 2, MASK * 0], axis=-1)),
        DATASETS,
        [(f"{TM}/a0.png", "mask is a colour (RGB) image", "single-channel")],
        3,
    ),
    ("zero_byte_mask", write(f"{TM}/a0.png", b""), DATASETS, [(f"{TM}/a0.png", "empty (0 bytes)", "re-export")], 3),
    ("truncated_mask", truncate(f"{TM}/a0.png"), DATASETS, [(f"{TM}/a0.png", "truncated", "re-export")], 3),
    (
        "mask_subfolder",
        new_mask(f"{TM}/old/a0.png"),
        DATASETS,
        [(f"{TM}/old", "unexpected sub-folder inside masks/", "move its masks up")],
        N_GOOD,
    ),
    ("zero_byte_image", write(f"{TI}/a0.png", b""), DATASETS, [(f"{TI}/a0.png", "empty (0 bytes)", "re-export")], 3),
    (
        "truncated_jpeg_image",
        steps(remove(f"{TI}/a0.png"), new_image(f"{TI}/a0.jpg", fmt="JPEG"), truncate(f"{TI}/a0.jpg")),
        DATASETS,
        [(f"{TI}/a0.jpg", "truncated", "re-export")],
        3,
    ),
    (
        "corrupt_image",
        write(f"{TI}/a0.png", bytes(range(256)) * 3),
        DATASETS,
        [(f"{TI}/a0.png", "not a readable image", "delete it or move it out")],
        3,
    ),
    (
        "text_named_jpg",
        steps(remove(f"{TI}/a0.png"), write(f"{TI}/a0.jpg", "just text")),
        DATASETS,
        [(f"{TI}/a0.jpg", "not a .jpg file", "re-export")],
        3,
    ),
    (
        "decompression_bomb",
        write(f"{TI}/a0.png", png_bomb_bytes()),
        DATASETS,
        [(f"{TI}/a0.png", "900.0 megapixels", "downscale it below 64 megapixels")],
        3,
    ),
    (
        "non_image_in_images",
        write(f"{TI}/notes.txt", "notes"),
        DATASETS,
        [(f"{TI}/notes.txt", "not an image file (suffix '.txt'", "remove it or move it")],
        N_GOOD,
    ),
    (
        "image_subfolder",
        new_image(f"{TI}/extra/a9.png"),
        DATASETS,
        [(f"{TI}/extra", "unexpected sub-folder inside images/", "move its images up")],
        N_GOOD,
    ),
    (
        "two_images_one_stem",
        new_image(f"{TI}/a0.jpg"),
        DATASETS,
        [
            (f"{TI}/a0.jpg", "2 images share the name 'a0' (a0.jpg, a0.png)", "rename or remove all but one"),
            (f"{TI}/a0.png", "2 images share the name 'a0'", "rename or remove"),
        ],
        3,
    ),
    (
        "stray_file_in_dataset",
        write("sl_test/readme.md", "hi"),
        DATASETS,
        [("sl_test/readme.md", "directly in the dataset folder, not inside images/ or masks/", "move it into")],
        N_GOOD,
    ),
    (
        "stray_folder_in_dataset",
        new_image("sl_test/labels/a0.png"),
        DATASETS,
        [("sl_test/labels", "unexpected folder in a segmentation dataset", "move its files into images/")],
        N_GOOD,
    ),
]


def _run(tmp_path: Path, change, datasets, **kw):
    root = tmp_path / "data root ä"
    good_tree(root)
    if change is not None:
        change(root)
    return root, scan_segmentation(root, datasets, VALUES, **kw)


@pytest.mark.parametrize(
    "change, datasets, expected, n_items", [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES]
)
def test_bad_layouts_are_reported(tmp_path, change, datasets, expected, n_items):
    root, (items, report) = _run(tmp_path, change, datasets)
    assert not report.ok
    got = sorted(report.errors, key=lambda p: p.path)
    want = sorted(expected, key=lambda e: str(root / e[0]) if e[0] else str(root))
    assert len(got) == len(want), report.lines()
    for problem, (rel, what, fix) in zip(got, want):
        assert problem.path == (str(root / rel) if rel else str(root))
        assert what.replace("{root}", str(root)) in problem.problem, problem.line()
        assert fix.replace("{root}", str(root)) in problem.fix, problem.line()
        assert problem.line().startswith(f"ERROR {problem.path}: ") and "\n" not in problem.line()
    assert len(items) == n_items
    bad = {p.path for p in got}
    assert not any(str(it.path) in bad or it.target in bad for it in items)


def _exif_rotated(root: Path) -> None:
    """A JPEG stored 32 x 24 with EXIF 'rotate 90': displayed 24 x 32, so its mask is 24 wide."""
    exif = Image.Exif()
    exif[0x0112] = 6
    img(root / TI / "rot.jpg", exif=exif.tobytes())
    mask(root / TM / "rot.png", np.zeros((W, H), np.uint8))


def _ignored_files(root: Path) -> None:
    for rel in [
        "sl_train/.DS_Store",
        f"{TI}/.DS_Store",
        f"{TM}/Thumbs.db",
        f"{TM}/._a0.png",
        "sl_test/__MACOSX/x.txt",
        f"{TI}/desktop.ini",
        "sl_test/.git/config",
    ]:
        write(rel, b"junk")(root)


PALETTE_01 = palette_mask(MASK > 0)
SUFFIXES = [".jpg", ".jpeg", ".JPG", ".tif", ".tiff", ".bmp", ".webp", ".PNG"]

# (id, change, number of usable pairs)
GOOD_CASES = [
    ("baseline", None, N_GOOD),
    ("mask_stored_as_0_1", new_mask(f"{TM}/a0.png", (MASK > 0).astype(np.uint8)), N_GOOD),
    ("palette_mask_indices", lambda r: PALETTE_01.save(r / TM / "a0.png"), N_GOOD),
    ("one_bit_mask", new_mask(f"{TM}/a0.png", mode="1"), N_GOOD),
    ("sixteen_bit_mask", new_mask(f"{TM}/a0.png", (MASK > 0).astype(np.uint16)), N_GOOD),
    ("all_background_mask", new_mask(f"{TM}/a0.png", np.zeros((H, W), np.uint8)), N_GOOD),
    (
        "every_image_suffix",
        steps(*[steps(new_image(f"{TI}/s{i}{s}"), new_mask(f"{TM}/s{i}.png")) for i, s in enumerate(SUFFIXES)]),
        N_GOOD + len(SUFFIXES),
    ),
    ("uppercase_png_mask", steps(remove(f"{TM}/a0.png"), new_mask(f"{TM}/a0.PNG")), N_GOOD),
    (
        "grayscale_and_rgba_images",
        steps(
            new_image(f"{TI}/g.png", mode="L"),
            new_mask(f"{TM}/g.png"),
            new_image(f"{TI}/t.png", mode="RGBA"),
            new_mask(f"{TM}/t.png"),
        ),
        N_GOOD + 2,
    ),
    ("exif_rotated_image", _exif_rotated, N_GOOD + 1),
    ("ignored_system_files", _ignored_files, N_GOOD),
    (
        "non_ascii_names",
        steps(
            new_image(f"{TI}/naevus ä 1.jpg"),
            new_mask(f"{TM}/naevus ä 1.png"),
            new_image(f"{TI}/痣.png"),
            new_mask(f"{TM}/痣.png"),
        ),
        N_GOOD + 2,
    ),
]


@pytest.mark.parametrize("change, n_items", [c[1:] for c in GOOD_CASES], ids=[c[0] for c in GOOD_CASES])
def test_good_layouts_scan_clean(tmp_path, change, n_items):
    root, (items, report) = _run(tmp_path, change, DATASETS)
    assert report.ok and report.problems == [], report.lines()
    assert len(items) == n_items and all(isinstance(it, Item) for it in items)
    for it in items:
        assert it.path.parent.name == "images" and it.path.parent.parent.name == it.dataset
        assert Path(it.target).parent == it.path.parent.parent / "masks" and Path(it.target).stem == it.path.stem
    assert items == sorted(items, key=lambda it: (it.dataset, it.path.name))


def test_grey_rgb_mask_is_a_warning_not_an_error(tmp_path):
    root, (items, report) = _run(tmp_path, new_mask(f"{TM}/a0.png", mode="RGB"), DATASETS)
    assert report.ok and len(items) == N_GOOD
    [warning] = report.warnings
    assert warning.path == str(root / TM / "a0.png") and "stored as an RGB image" in warning.problem
    assert warning.line().startswith("WARNING ")


def test_custom_mask_values(tmp_path):
    """Values are checked against the map given: 0/128 masks pass with {0: 0, 128: 1}, 255 does not."""
    root = tmp_path / "d"
    good_tree(root)
    for ds in DATASETS:
        for i in range(2):
            mask(root / ds / "masks" / f"a{i}.png", np.where(MASK > 0, 128, 0).astype(np.uint8))
    items, report = scan_segmentation(root, DATASETS, {0: 0, 128: 1})
    assert report.ok and len(items) == N_GOOD
    items, report = scan_segmentation(root, DATASETS, VALUES)
    assert len(report.errors) == N_GOOD and all("128 (144 pixels)" in p.problem for p in report.errors)
    items, report = scan_segmentation(root, DATASETS, None)  # no map: values are not checked
    assert report.ok


def _messy_tree(root: Path) -> None:
    """Every pair of the good tree broken in a different way, plus stray files."""
    good_tree(root)
    steps(
        new_image(f"{TI}/a0.jpg"),  # a0.jpg + a0.png: one stem, two images
        new_mask(f"{TM}/a1.png", with_values(128)),
        write(f"{TI}/z.png", b""),
        new_mask(f"{TM}/z.png"),
        new_mask(f"{TM}/extra.png"),
        write(f"{TM}/notes.txt", "notes"),
        remove("sl_test/masks/a0.png"),
        new_mask("sl_test/masks/a1.png", np.zeros((16, 16), np.uint8)),
        new_image("sl_test/images/c.png"),
        new_mask("sl_test/masks/c.png", np.stack([MASK, MASK // 2, MASK * 0], axis=-1)),
        write("sl_test/readme.md", "hi"),
        _ignored_files,
    )(root)


def test_all_problems_are_collected(tmp_path):
    _messy_tree(tmp_path)
    items, report = scan_segmentation(tmp_path, DATASETS + ["wl_train", "sl_train"], VALUES)
    whats = [p.problem for p in report.errors]
    for needle, count in (
        ("listed 2 times", 1),
        ("'wl_train' does not exist", 1),
        ("image has no mask", 1),
        ("mask has no image", 1),
        ("mask is 16 x 16", 1),
        ("colour (RGB)", 1),
        ("not a mask file", 1),
        ("directly in the dataset folder", 1),
        ("2 images share the name", 2),
        ("empty (0 bytes)", 1),
        ("outside segmentation", 1),
    ):
        assert sum(needle in w for w in whats) == count, (needle, report.lines())
    assert len(report.errors) == 12 and items == []
    summary = json.loads(json.dumps(report.to_dict()))
    assert summary["ok"] is False and summary["n_errors"] == 12 and len(report.lines()) == 12


def _snapshot(root: Path) -> dict[str, tuple]:
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, p.is_dir() or p.read_bytes()) for p in sorted(root.rglob("*"))
    }


@pytest.mark.parametrize("check_images", [True, False], ids=["decode", "names_only"])
def test_scan_never_modifies_the_tree_and_is_deterministic(tmp_path, check_images):
    _messy_tree(tmp_path)
    before = _snapshot(tmp_path)
    first = scan_segmentation(tmp_path, DATASETS, VALUES, check_images=check_images)
    second = scan_segmentation(tmp_path, DATASETS, VALUES, check_images=check_images)
    assert _snapshot(tmp_path) == before
    assert first == second


def test_check_images_false_pairs_names_and_catches_empty_files_only(tmp_path):
    root, (items, report) = _run(
        tmp_path,
        steps(
            write(f"{TI}/a0.png", b"not a png"),
            new_mask(f"{TM}/a1.png", with_values(128)),
            write(f"{TM}/a9.png", b""),
            new_image(f"{TI}/a9.png"),
        ),
        DATASETS,
        check_images=False,
    )
    assert {it.path.name for it in items if it.dataset == "sl_train"} == {"a0.png", "a1.png"}
    assert [p.path for p in report.errors] == [str(root / TM / "a9.png")]
