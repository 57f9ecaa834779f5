"""dermdl.tasks.classification.layout: one case table of broken trees, one of good trees.

Every case starts from the same small good tree (2 datasets x 2 classes x 2 images) and applies
one change; a bad case must yield exactly the expected problems (path, what, fix), a good case an
``ok`` report. Separate tests check that ALL problems are collected and the tree is never modified.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tree_edits import png_bomb_bytes, remove, steps, truncate, write

from dermdl.layout import Item, Problem, Report
from dermdl.tasks.classification.layout import scan_classification

DATASETS = ["sl_train", "sl_test"]
CLASSES = ["melanoma", "nevus"]
N_GOOD = 8
PIXELS = np.random.default_rng(1).integers(0, 256, (24, 32, 3), dtype=np.uint8)


def img(path: Path, mode: str = "RGB", fmt: str | None = None, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(PIXELS).convert(mode).save(path, fmt, **kw)


def good_tree(root: Path) -> None:
    for ds in DATASETS:
        for cls in CLASSES:
            for i in range(2):
                img(root / ds / cls / f"{cls}_{i}.png")


BOMB = png_bomb_bytes()


def truncated(rel: str, fmt: str):
    return steps(lambda root: img(root / rel, fmt=fmt), truncate(rel))


def empty_class(root: Path) -> None:
    for f in (root / "sl_test/nevus").iterdir():
        f.unlink()
    (root / "sl_test/nevus/.DS_Store").write_bytes(b"\0\0\0\1Bud1")


M = "sl_train/melanoma"
# (id, change, datasets, [(path relative to root, in problem, in fix)], number of items)
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
        [("wl_train", "dataset folder 'wl_train' does not exist", "create the folder")],
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
    (
        "dataset_name_is_path",
        None,
        DATASETS + ["../x"],
        [("../x", "not a single folder name", "use the name of a folder")],
        N_GOOD,
    ),
    (
        "class_missing_in_one_dataset",
        remove("sl_test/nevus"),
        DATASETS,
        [
            (
                "sl_test/nevus",
                "class 'nevus' is missing from dataset 'sl_test' (present in: sl_train)",
                "create the folder {root}/sl_test/nevus and add images, or remove the class from all datasets",
            )
        ],
        6,
    ),
    (
        "class_case_mismatch",
        lambda r: (r / "sl_test/nevus").rename(r / "sl_test/Nevus"),
        DATASETS,
        [
            ("sl_train/Nevus", "class 'Nevus' is missing", "rename the folder {root}/sl_train/nevus"),
            ("sl_test/nevus", "class 'nevus' is missing", "rename the folder {root}/sl_test/Nevus"),
        ],
        N_GOOD,
    ),
    ("empty_class_folder", empty_class, DATASETS, [("sl_test/nevus", "contains no images", "add images")], 6),
    ("zero_byte", write(f"{M}/zero.jpg", b""), DATASETS, [(f"{M}/zero.jpg", "empty (0 bytes)", "re-export")], N_GOOD),
    (
        "truncated_jpeg",
        truncated(f"{M}/cut.jpg", "JPEG"),
        DATASETS,
        [(f"{M}/cut.jpg", "truncated", "re-export")],
        N_GOOD,
    ),
    ("truncated_png", truncated(f"{M}/cut.png", "PNG"), DATASETS, [(f"{M}/cut.png", "truncated", "re-export")], N_GOOD),
    (
        "corrupt_bytes",
        write(f"{M}/bad.png", bytes(range(256)) * 3),
        DATASETS,
        [(f"{M}/bad.png", "not a readable image", "delete it or move it out of the dataset folder")],
        N_GOOD,
    ),
    (
        "text_named_jpg",
        write(f"{M}/fake.jpg", "just text"),
        DATASETS,
        [(f"{M}/fake.jpg", "not a .jpg file", "re-export")],
        N_GOOD,
    ),
    (
        "non_image_file",
        write(f"{M}/notes.txt", "notes"),
        DATASETS,
        [(f"{M}/notes.txt", "not an image file (suffix '.txt'", "remove it or move it")],
        N_GOOD,
    ),
    (
        "decompression_bomb",
        write(f"{M}/bomb.png", BOMB),
        DATASETS,
        [(f"{M}/bomb.png", "900.0 megapixels", "downscale it below 64 megapixels")],
        N_GOOD,
    ),
    (
        "stray_file_in_dataset",
        write("sl_test/readme.md", "hi"),
        DATASETS,
        [("sl_test/readme.md", "directly in the dataset folder", "move it into the class folder")],
        N_GOOD,
    ),
    (
        "stray_image_in_dataset",
        lambda r: img(r / "sl_test/loose.png"),
        DATASETS,
        [("sl_test/loose.png", "not inside a class folder", "or remove it")],
        N_GOOD,
    ),
    (
        "nested_sub_folder",
        lambda r: img(r / M / "extra/deep.png"),
        DATASETS,
        [(f"{M}/extra", "sub-folder inside a class folder", "move its images up")],
        N_GOOD,
    ),
]


def _run(tmp_path: Path, change, datasets):
    root = tmp_path / "data root ä"
    good_tree(root)
    if change is not None:
        change(root)
    return root, scan_classification(root, datasets)


@pytest.mark.parametrize(
    "change, datasets, expected, n_items", [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES]
)
def test_bad_layouts_are_reported(tmp_path, change, datasets, expected, n_items):
    root, (items, classes, report) = _run(tmp_path, change, datasets)
    assert not report.ok
    got = sorted(report.errors, key=lambda p: p.path)
    want = sorted(expected, key=lambda e: str(root / e[0]) if e[0] else str(root))
    assert len(got) == len(want), report.lines()
    for problem, (rel, what, fix) in zip(got, want):
        assert problem.path == (str(root / rel) if rel else str(root))
        assert what in problem.problem, problem.line()
        assert fix.replace("{root}", str(root)) in problem.fix, problem.line()
        assert problem.line().startswith(f"ERROR {problem.path}: ")
    assert len(items) == n_items
    bad_paths = {p.path for p in got}
    assert not any(str(it.path) in bad_paths for it in items)


def _make(rel: str, mode: str = "RGB", fmt: str | None = None, **kw):
    def change(root: Path) -> None:
        img(root / rel, mode, fmt, **kw)

    return change


def _exif_rotated(root: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    img(root / M / "rotated.jpg", exif=exif.tobytes())


def _ignored_files(root: Path) -> None:
    for rel in [
        "sl_train/.DS_Store",
        f"{M}/.DS_Store",
        f"{M}/Thumbs.db",
        f"{M}/desktop.ini",
        f"{M}/._melanoma_0.png",
        "sl_test/__MACOSX/nevus/x.txt",
        f"{M}/__MACOSX/y.png",
        "sl_test/.git/config",
        f"{M}/.hidden.txt",
    ]:
        write(rel, b"junk")(root)


SUFFIXES = [".jpg", ".jpeg", ".JPG", ".JPEG", ".png", ".PNG", ".tif", ".tiff", ".TIF", ".bmp", ".webp"]

# (id, change, number of items)
GOOD_CASES = [
    ("baseline", None, N_GOOD),
    ("ignored_system_files", _ignored_files, N_GOOD),
    ("every_suffix", steps(*[_make(f"{M}/s{i}{s}") for i, s in enumerate(SUFFIXES)]), N_GOOD + len(SUFFIXES)),
    ("grayscale", _make(f"{M}/g.png", "L"), N_GOOD + 1),
    ("one_bit", _make(f"{M}/b.png", "1"), N_GOOD + 1),
    ("rgba", _make(f"{M}/a.png", "RGBA"), N_GOOD + 1),
    ("palette", _make(f"{M}/p.png", "P"), N_GOOD + 1),
    ("cmyk_jpeg", _make(f"{M}/c.jpg", "CMYK"), N_GOOD + 1),
    ("png_16bit", lambda r: Image.fromarray(np.full((9, 7), 40000, np.uint16)).save(r / M / "d.png"), N_GOOD + 1),
    ("exif_orientation", _exif_rotated, N_GOOD + 1),
    ("non_ascii_names", steps(_make(f"{M}/naevus ä 1.jpg"), _make(f"{M}/痣 2.png")), N_GOOD + 2),
    ("non_ascii_class", steps(_make("sl_train/naevus ä/x 1.png"), _make("sl_test/naevus ä/y.png")), N_GOOD + 2),
]


@pytest.mark.parametrize("change, n_items", [c[1:] for c in GOOD_CASES], ids=[c[0] for c in GOOD_CASES])
def test_good_layouts_scan_clean(tmp_path, change, n_items):
    root, (items, classes, report) = _run(tmp_path, change, DATASETS)
    assert report.ok and report.problems == [], report.lines()
    assert len(items) == n_items
    assert set(CLASSES) <= set(classes) and classes == sorted(classes)
    assert all(isinstance(it, Item) and it.group is None for it in items)
    assert all(it.path.parent.name == it.target and it.path.parent.parent.name == it.dataset for it in items)
    assert items == sorted(items, key=lambda it: (it.dataset, it.target, it.path.name))


def test_empty_dataset_list_is_fine(tmp_path):
    good_tree(tmp_path)
    assert scan_classification(tmp_path, []) == ([], [], Report())


def _messy_tree(root: Path) -> None:
    good_tree(root)
    for case_id in (
        "class_missing_in_one_dataset",
        "zero_byte",
        "truncated_jpeg",
        "non_image_file",
        "decompression_bomb",
        "stray_file_in_dataset",
        "text_named_jpg",
    ):
        change = next(c[1] for c in BAD_CASES if c[0] == case_id)
        change(root)
    _ignored_files(root)


def test_all_problems_are_collected(tmp_path):
    _messy_tree(tmp_path)
    items, classes, report = scan_classification(tmp_path, DATASETS + ["wl_train", "sl_train"])
    whats = [p.problem for p in report.errors]
    for needle in (
        "listed 2 times",
        "'wl_train' does not exist",
        "class 'nevus' is missing",
        "empty (0 bytes)",
        "truncated",
        "not an image file",
        "megapixels",
        "directly in the dataset folder",
        "not a .jpg file",
    ):
        assert sum(needle in w for w in whats) == 1, (needle, report.lines())
    assert len(report.errors) == 9 and len(items) == 6 and classes == CLASSES
    summary = json.loads(json.dumps(report.to_dict()))
    assert summary["ok"] is False and summary["n_errors"] == 9 and summary["n_warnings"] == 0
    assert len(report.lines()) == 9


def _snapshot(root: Path) -> dict[str, tuple]:
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, p.is_dir() or p.read_bytes()) for p in sorted(root.rglob("*"))
    }


@pytest.mark.parametrize("check_images", [True, False], ids=["decode", "suffix_only"])
def test_scan_never_modifies_the_tree_and_is_deterministic(tmp_path, check_images):
    _messy_tree(tmp_path)
    before = _snapshot(tmp_path)
    first = scan_classification(tmp_path, DATASETS, check_images=check_images)
    second = scan_classification(tmp_path, DATASETS, check_images=check_images)
    assert _snapshot(tmp_path) == before
    assert first == second


def test_check_images_false_skips_decoding_but_not_empty_files(tmp_path):
    _messy_tree(tmp_path)
    items, _, report = scan_classification(tmp_path, DATASETS, check_images=False)
    names = {it.path.name for it in items}
    assert {"cut.jpg", "bomb.png", "fake.jpg"} <= names and "zero.jpg" not in names
    assert any("0 bytes" in p.problem for p in report.errors)


def test_problem_and_report_api():
    report = Report()
    report.add(Path("/d/a.jpg"), "file is empty (0 bytes).", "re-export the file")
    report.add("/d", "odd", "look", severity="warning")
    assert report.problems[0].line() == "ERROR /d/a.jpg: file is empty (0 bytes). Fix: re-export the file"
    assert report.problems[1].line() == "WARNING /d: odd. Fix: look"
    assert [p.severity for p in report.errors] == ["error"] and len(report.warnings) == 1
    assert not report.ok and Report(report.warnings).ok
    assert report.to_dict()["n_errors"] == 1
    with pytest.raises(ValueError):
        Problem("/d", "x", "y", severity="fatal")
    assert Item(Path("/d/a.jpg"), "nevus", "sl_train").to_dict()["path"] == "/d/a.jpg"
