"""dermdl import: table -> three layouts, grouped stratified split, every bad row at once, sources untouched.

All data is generated here: noise images (distinct, so the leak check has nothing to find), rectangle
masks and their boxes, and a CSV in the HAM10000 metadata format (../shared is never read).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dermdl import pipeline
from dermdl.cli import main
from dermdl.grouped_split import group_split
from dermdl.importer import ImportProblems, ImportSpec, run_import
from dermdl.params import params_from_dict
from dermdl.tasks import get_task
from dermdl.tasks.classification.layout import scan_classification

HAM_HEADER = [
    "image_id",
    "lesion_id",
    "dx",
    "dx_type",
    "age",
    "sex",
    "localization",
    "image_file",
    "mask_file",
    "width",
    "height",
    "mask_area_frac",
    "bbox_x0",
    "bbox_y0",
    "bbox_x1",
    "bbox_y1",
]
W, H = 40, 30


def _label(g: int) -> str:
    return "mel" if g % 6 == 0 else "bkl" if g % 6 == 1 else "nv"  # imbalanced, like HAM10000


def make_source(root: Path, n_groups: int = 24, seed: int = 0) -> list[dict]:
    """Noise images + rectangle masks; lesion g has 1-3 images. Returns the rows (HAM10000 columns)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = []
    for g in range(n_groups):
        for k in range(1 + g % 3):
            image_id = f"ISIC_{g:03d}{k}"
            Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(root / "images" / f"{image_id}.png")
            x0, y0 = 3 + g % 7, 2 + k
            x1, y1 = x0 + 14, y0 + 11
            mask = np.zeros((H, W), np.uint8)
            mask[y0:y1, x0:x1] = 255
            Image.fromarray(mask).save(root / "masks" / f"{image_id}_segmentation.png")
            rows.append(
                {
                    "image_id": image_id,
                    "lesion_id": f"HAM_{g:04d}",
                    "dx": _label(g),
                    "dx_type": "histo",
                    "age": "50.0",
                    "sex": "female",
                    "localization": "back",
                    "image_file": f"images/{image_id}.png",
                    "mask_file": f"masks/{image_id}_segmentation.png",
                    "width": str(W),
                    "height": str(H),
                    "mask_area_frac": "0.1",
                    "bbox_x0": str(x0),
                    "bbox_y0": str(y0),
                    "bbox_x1": str(x1),
                    "bbox_y1": str(y1),
                }
            )
    return rows


def write_csv(path: Path, rows: list, header: list[str] = HAM_HEADER) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            writer.writerow([row.get(h, "") for h in header] if isinstance(row, dict) else row)
    return path


@pytest.fixture()
def source(tmp_path) -> tuple[Path, list[dict]]:
    rows = make_source(tmp_path / "src")
    return write_csv(tmp_path / "src" / "labels.csv", rows), rows


def snapshot(folder: Path) -> dict[str, tuple[str, int, int]]:
    """relative path -> (sha256, size, mtime_ns) of every file."""
    return {
        p.relative_to(folder).as_posix(): (
            hashlib.sha256(p.read_bytes()).hexdigest(),
            p.stat().st_size,
            p.stat().st_mtime_ns,
        )
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _spec(csv_path: Path, out: Path, **kw) -> ImportSpec:
    return ImportSpec(csv=csv_path, out=out, preset="ham10000", workers=1, **kw)


# --- bad rows: one case table, each case alone, then all together ------------------------------------------


def _set(index: int, **values):
    def change(rows: list, src: Path) -> None:
        rows[index] = {**rows[index], **values}

    return change


def _corrupt(index: int):
    def change(rows: list, src: Path) -> None:
        (src / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
        rows[index] = {**rows[index], "image_file": "images/corrupt.png"}

    return change


def _small_mask(index: int):
    def change(rows: list, src: Path) -> None:
        Image.fromarray(np.zeros((10, 10), np.uint8)).save(src / "masks" / "small.png")
        rows[index] = {**rows[index], "mask_file": "masks/small.png"}

    return change


def _raw(index: int, extra: int):
    """Row as a plain list with one field more (extra=1) or fewer (extra=-1) than the header."""

    def change(rows: list, src: Path) -> None:
        fields = [rows[index][h] for h in HAM_HEADER]
        rows[index] = fields + ["surprise"] if extra > 0 else fields[:-1]

    return change


def _duplicate(index: int, of: int):
    def change(rows: list, src: Path) -> None:
        rows[index] = {**rows[index], "image_file": rows[of]["image_file"]}

    return change


# (case id, change, CSV line of the bad row, words in the problem); line = row index + 2
BAD_ROWS = [
    ("missing_file", _set(3, image_file="images/nope.png"), 5, "does not exist"),
    ("empty_label", _set(4, dx=""), 6, "label is empty"),
    ("empty_image_path", _set(2, image_file=""), 4, "image path is empty"),
    ("duplicate_image", _duplicate(7, of=1), 9, "duplicate image 'images/ISIC_0010.png' (also on line 3)"),
    ("unknown_extra_column", _raw(5, +1), 7, "unknown extra column"),
    ("missing_column", _raw(6, -1), 8, "missing columns"),
    ("box_not_numbers", _set(8, bbox_x0="abc"), 10, "not all numbers"),
    ("box_inverted", _set(9, bbox_x1="1"), 11, "empty or inverted"),
    ("box_outside_image", _set(10, bbox_x1="400"), 12, "outside the 40 x 30 image"),
    ("missing_mask", _set(11, mask_file="masks/nope.png"), 13, "mask file 'masks/nope.png' does not exist"),
    ("unreadable_image", _corrupt(12), 14, "is not usable"),
    ("mask_size_mismatch", _small_mask(13), 15, "mask is 10 x 10 but the image is 40 x 30"),
    ("empty_group", _set(14, lesion_id=""), 16, "group id is empty"),
    ("bad_label_name", _set(15, dx="a/b"), 17, "cannot be a folder name"),
]


@pytest.mark.parametrize("case, change, line, words", BAD_ROWS, ids=[c[0] for c in BAD_ROWS])
def test_each_bad_row_is_reported_with_its_line_and_nothing_is_written(tmp_path, source, case, change, line, words):
    csv_path, rows = source
    change(rows, csv_path.parent)
    write_csv(csv_path, rows)
    out = tmp_path / "out"
    with pytest.raises(ImportProblems) as info:
        run_import(_spec(csv_path, out))
    problems = [p for p in info.value.report.errors]
    assert [p.path for p in problems] == [f"{csv_path}:{line}"], info.value.report.lines()
    assert words in problems[0].problem and problems[0].fix
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_all_bad_rows_are_reported_together(tmp_path, source, capsys):
    csv_path, rows = source
    for _case, change, _line, _words in BAD_ROWS:
        change(rows, csv_path.parent)
    write_csv(csv_path, rows)
    out = tmp_path / "out"
    assert main(["import", str(csv_path), "--preset", "ham10000", "--out", str(out), "--workers", "1"]) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("ERROR ")]
    assert len(lines) == len(BAD_ROWS)
    for (case, _change, line, words), text in zip(sorted(BAD_ROWS, key=lambda c: c[2]), lines):
        assert text.startswith(f"ERROR {csv_path}:{line}: ") and words in text, (case, text)
    assert "nothing was written" in err and not out.exists()


@pytest.mark.parametrize(
    "flag, value, words",
    [
        ("--label-column", "diagnosis", "label column 'diagnosis' is not in the header"),
        ("--group-column", "Lesion_ID", "group column 'Lesion_ID' is not in the header"),
        ("--box-columns", ["x0", "y0", "x1", "y1"], "box x0 column 'x0' is not in the header"),
    ],
)
def test_unknown_column_names_are_reported_on_line_1(tmp_path, source, flag, value, words):
    csv_path, _rows = source
    argv = ["import", str(csv_path), "--preset", "ham10000", "--out", str(tmp_path / "out"), flag]
    argv += value if isinstance(value, list) else [value]
    assert main(argv) == 1
    with pytest.raises(ImportProblems) as info:
        run_import(
            _spec(
                csv_path,
                tmp_path / "out",
                **{
                    {"--label-column": "label", "--group-column": "group", "--box-columns": "boxes"}[flag]: tuple(value)
                    if isinstance(value, list)
                    else value
                },
            )
        )
    assert any(p.path == f"{csv_path}:1" and words in p.problem for p in info.value.report.errors)


# --- the split ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize(
    "shares", [{"sl_train": 0.8, "sl_test": 0.2}, {"sl_train": 0.6, "sl_test": 0.25, "wl_train": 0.15}]
)
def test_group_split_keeps_groups_together_and_label_shares(seed, shares):
    rng = np.random.default_rng(seed)
    labels, groups = [], []
    for g in range(400):  # 400 lesions, 1-4 images each, 4 labels 55/25/15/5 %
        label = rng.choice(["nv", "mel", "bkl", "df"], p=[0.55, 0.25, 0.15, 0.05])
        for _ in range(int(rng.integers(1, 5))):
            labels.append(label)
            groups.append(f"L{g}")
    datasets = group_split(labels, groups, shares, seed)
    where = defaultdict(set)
    for d, g in zip(datasets, groups):
        where[g].add(d)
    assert all(len(ds) == 1 for ds in where.values())  # no group in two datasets
    total = Counter(labels)
    for name, share in shares.items():
        got = Counter(label for label, d in zip(labels, datasets) if d == name)
        for label, n in total.items():
            assert abs(got[label] / n - share) < 0.06, (name, label, got[label], n)
    assert group_split(labels, groups, shares, seed) == datasets  # deterministic
    order = rng.permutation(len(labels))  # and independent of the row order
    shuffled = group_split([labels[i] for i in order], [groups[i] for i in order], shares, seed)
    assert [shuffled[list(order).index(i)] for i in range(len(labels))] == datasets


def test_import_splits_by_lesion_and_stratifies(tmp_path, source):
    csv_path, rows = source
    summary = run_import(_spec(csv_path, tmp_path / "out", test_size=0.25, weak_size=0.2))
    splits = list(csv.DictReader((tmp_path / "out" / "splits.csv").open()))
    assert len(splits) == len(rows) == summary["rows"]
    where = defaultdict(set)
    for row in splits:
        where[row["group"]].add(row["dataset"])
    assert all(len(d) == 1 for d in where.values())
    for name in ("sl_train", "sl_test", "wl_train"):
        assert set(summary["datasets"][name]["labels"]) == {"mel", "nv", "bkl"}  # every label everywhere
    counts = {n: d["images"] for n, d in summary["datasets"].items()}
    assert counts["sl_train"] > counts["sl_test"] > 0 and counts["wl_train"] > 0
    assert summary["datasets"]["sl_test"]["groups"] == len({r["group"] for r in splits if r["dataset"] == "sl_test"})


def test_a_label_with_too_few_groups_is_refused_for_classification(tmp_path, source):
    csv_path, rows = source
    Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(csv_path.parent / "images" / "RARE.png")
    rows.append({**rows[0], "image_id": "RARE", "image_file": "images/RARE.png", "dx": "rare", "lesion_id": "HAM_9999"})
    write_csv(csv_path, rows)
    with pytest.raises(ImportProblems, match=r"label 'rare' has 1 group\(s\), too few to appear in every dataset"):
        run_import(_spec(csv_path, tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    assert run_import(_spec(csv_path, tmp_path / "out", layouts=("segmentation",)))["rows"] == len(rows)


# --- outputs ------------------------------------------------------------------------------------------------


def test_ham10000_preset_builds_three_valid_layouts(tmp_path, source):
    csv_path, rows = source
    out = tmp_path / "out"
    summary = run_import(_spec(csv_path, out))
    assert summary["layouts"] == ["classification", "segmentation", "detection"]
    assert sum(d["images"] for d in summary["datasets"].values()) == len(rows)
    names = {"sl_train", "sl_test"}
    # classification: the project's scanner accepts it
    items, classes, report = scan_classification(out / "classification", sorted(names))
    assert report.ok, report.lines()
    assert classes == ["bkl", "mel", "nv"] and len(items) == len(rows)
    # segmentation: every image has its mask, named <stem>.png
    for ds in names:
        images = sorted(p.stem for p in (out / "segmentation" / ds / "images").iterdir())
        assert images == sorted(p.stem for p in (out / "segmentation" / ds / "masks").iterdir())
    # detection: COCO boxes are the CSV boxes (x1/y1 exclusive -> width = x1 - x0), category = dx
    by_name = {Path(r["image_file"]).name: r for r in rows}
    for ds in names:
        coco = json.loads((out / "detection" / "annotations" / f"{ds}.json").read_text())
        assert [c["name"] for c in coco["categories"]] == ["bkl", "mel", "nv"]
        assert sorted(i["file_name"] for i in coco["images"]) == sorted(
            p.name for p in (out / "detection" / "images" / ds).iterdir()
        )
        for ann in coco["annotations"]:
            image = coco["images"][ann["image_id"] - 1]
            row = by_name[image["file_name"]]
            x0, y0, x1, y1 = (float(row[k]) for k in ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"))
            assert ann["bbox"] == [x0, y0, x1 - x0, y1 - y0]
            assert coco["categories"][ann["category_id"] - 1]["name"] == row["dx"]
            assert (image["width"], image["height"]) == (W, H)
    # the tasks' own scanners (through the Task interface) accept all three layouts, and validate passes
    for task in ("classification", "segmentation", "detection"):
        params = params_from_dict(
            {
                "task": task,
                "out_dir": str(tmp_path / f"run_{task}"),
                "data": {"root": str(out / task), "wl_train": [], "sl_train": ["sl_train"], "sl_tests": ["sl_test"]},
            }
        )
        _items, _classes, report = get_task(task).scan(params, ["sl_train", "sl_test"])
        assert report.ok, (task, report.lines())
        assert pipeline.validate(params).ok
        leaks = json.loads((tmp_path / f"run_{task}" / "validate" / "report.json").read_text())["leaks"]
        assert leaks["groups_file"] == str(out / task / "groups.csv") and leaks["counts"]["group"] == 0
    assert json.loads((out / "import.json").read_text())["datasets"]["sl_test"]["groups"] > 0


def test_single_class_detection_and_boxes_from_masks(tmp_path, source):
    csv_path, rows = source
    out = tmp_path / "out"
    run_import(
        ImportSpec(
            csv=csv_path, out=out, image="image_file", label="dx", mask="mask_file", single_class="lesion", workers=1
        )
    )
    coco = json.loads((out / "detection" / "annotations" / "sl_test.json").read_text())
    assert coco["categories"] == [{"id": 1, "name": "lesion", "supercategory": "lesion"}]
    by_name = {Path(r["image_file"]).name: r for r in rows}
    for ann in coco["annotations"]:
        row = by_name[coco["images"][ann["image_id"] - 1]["file_name"]]
        x0, y0, x1, y1 = (int(row[k]) for k in ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"))
        assert ann["bbox"] == [x0, y0, x1 - x0, y1 - y0] and ann["area"] == (x1 - x0) * (y1 - y0)
    assert not (out / "classification" / "groups.csv").exists()  # no group column: every image is its own group


def test_rerun_gives_identical_datasets(tmp_path, source):
    csv_path, _rows = source
    out = tmp_path / "out"
    run_import(_spec(csv_path, out, seed=3))
    first = tree(out)
    run_import(_spec(csv_path, out, seed=3))
    assert tree(out) == first
    run_import(_spec(csv_path, out, seed=4))
    assert tree(out) != first  # the seed matters
    assert not list(tmp_path.glob(".out*"))


@pytest.mark.parametrize("copy", [False, True], ids=["hardlink", "copy"])
def test_sources_are_never_modified(tmp_path, source, copy):
    csv_path, _rows = source
    before = snapshot(csv_path.parent)
    out = tmp_path / "out"
    run_import(_spec(csv_path, out, copy=copy))
    run_import(_spec(csv_path, out, copy=copy))  # replacing an earlier import leaves the sources alone too
    assert snapshot(csv_path.parent) == before
    imported = out / "classification" / "sl_train"
    some = next(p for p in imported.rglob("*.png"))
    original = csv_path.parent / "images" / some.name
    assert some.read_bytes() == original.read_bytes()
    assert os.path.samefile(some, original) is (not copy)


def test_paths_relative_to_images_root_and_name_clashes(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    table = [["file", "diagnosis", "patient"]]
    for p in range(12):
        for folder in ("visit1", "visit2"):  # the same file names in two folders
            (root / f"patient{p}" / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(
                root / f"patient{p}" / folder / "img.jpg"
            )
            table.append([f"patient{p}/{folder}/img.jpg", "a" if p % 2 else "b", f"P{p}"])
    for suffix in ("jpg", "png"):  # same stem, two formats: the masks (<stem>.png) would clash
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(root / f"scan.{suffix}")
        table.append([f"scan.{suffix}", "a", f"S{suffix}"])
    csv_path = tmp_path / "export.csv"
    with csv_path.open("w", newline="") as handle:
        csv.writer(handle, delimiter=";").writerows(table)  # a European export: ';' separated
    out = tmp_path / "out"
    assert (
        main(
            [
                "import",
                str(csv_path),
                "--out",
                str(out),
                "--images-root",
                str(root),
                "--image-column",
                "file",
                "--label-column",
                "diagnosis",
                "--group-column",
                "patient",
                "--workers",
                "1",
            ]
        )
        == 0
    )
    names = sorted(p.name for p in (out / "classification").rglob("*.jpg"))
    assert len(names) == 25 and names[0] == "patient0__visit1__img.jpg" and "scan_jpg.jpg" in names
    assert len(list((out / "classification").rglob("scan_png.png"))) == 1
    groups = list(csv.DictReader((out / "classification" / "groups.csv").open()))
    assert len(groups) == 26
    for g in {g["group"] for g in groups}:
        assert len({r["dataset"] for r in groups if r["group"] == g}) == 1


def test_output_folder_that_is_not_an_import_is_refused(tmp_path, source):
    csv_path, _rows = source
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.docx").write_text("do not delete")
    with pytest.raises(ImportProblems, match="was not written by dermdl import"):
        run_import(_spec(csv_path, precious))
    assert (precious / "thesis.docx").read_text() == "do not delete"
    (csv_path.parent / "import.json").write_text("{}")  # even an earlier import's folder, if it holds the sources
    with pytest.raises(ImportProblems, match="contains the source"):
        run_import(_spec(csv_path, csv_path.parent))
    assert csv_path.is_file() and len(list((csv_path.parent / "images").iterdir())) == 48


def test_import_help_explains_arguments(capsys):
    with pytest.raises(SystemExit):
        main(["import", "--help"])
    text = capsys.readouterr().out
    for words in (
        "--preset",
        "--group-column",
        "--images-root",
        "--box-columns",
        "--test-size",
        "--weak-size",
        "--seed",
        "--single-class",
        "hard-linked",
        "line numbers",
    ):
        assert words in text


# --- metadata.csv: every other column, per layout, keyed like groups.csv -------------------------------------

CARRIED = ["image_id", "dx_type", "age", "sex", "localization", "width", "height", "mask_area_frac"]


def _varied(rows: list[dict]) -> list[dict]:
    """Per-row metadata (a comma and quotes inside a value, an 'unknown') so nothing can match by accident."""
    for i, row in enumerate(rows):
        row |= {"age": str(20 + 5 * i), "sex": ["male", "female", "unknown"][i % 3], "localization": f'back, "{i}"'}
    return rows


def test_extra_columns_go_to_metadata_csv_of_every_layout(tmp_path):
    rows = _varied(make_source(tmp_path / "src"))
    csv_path = write_csv(tmp_path / "src" / "labels.csv", rows)
    out = tmp_path / "out"
    summary = run_import(_spec(csv_path, out))
    assert summary["metadata"] == CARRIED
    by_id = {r["image_id"]: r for r in rows}
    for layout in ("classification", "segmentation", "detection"):
        with (out / layout / "metadata.csv").open(newline="") as handle:
            table = list(csv.reader(handle))
        assert table[0] == ["path", *CARRIED]
        with (out / layout / "groups.csv").open(newline="") as handle:
            groups = [r[0] for r in list(csv.reader(handle))[1:]]
        assert [r[0] for r in table[1:]] == groups  # same paths, same order as groups.csv
        for path, *values in table[1:]:
            assert (out / layout / path).is_file()
            source = by_id[values[0]]
            assert values == [source[c] for c in CARRIED]  # as written, 'unknown' and quotes included
            assert Path(path).stem == source["image_id"]


@pytest.mark.parametrize(
    "flags, columns",
    [
        ([], CARRIED),
        (["--metadata-exclude", "width", "height"], [c for c in CARRIED if c not in ("width", "height")]),
        (["--no-metadata"], None),
    ],
    ids=["all", "exclude", "none"],
)
def test_metadata_flags(tmp_path, source, flags, columns, capsys):
    csv_path, _rows = source
    out = tmp_path / "out"
    argv = ["import", str(csv_path), "--preset", "ham10000", "--out", str(out), "--workers", "1"]
    assert main([*argv, "--layouts", "classification", *flags]) == 0
    path = out / "classification" / "metadata.csv"
    if columns is None:
        assert not path.exists()
        assert "metadata.csv" not in capsys.readouterr().out
    else:
        assert path.read_text().splitlines()[0] == ",".join(["path", *columns])
        assert f"metadata.csv (for analyze.subgroups): {', '.join(columns)}" in capsys.readouterr().out
    assert json.loads((out / "import.json").read_text())["arguments"]["metadata"] is (columns is not None)


def test_unknown_metadata_exclude_column_is_a_line_1_problem(tmp_path, source):
    csv_path, _rows = source
    with pytest.raises(ImportProblems) as caught:
        run_import(_spec(csv_path, tmp_path / "out", metadata_exclude=("Age",)))
    assert caught.value.report.lines()[0].startswith(f"ERROR {csv_path}:1: --metadata-exclude column 'Age'")
    assert "use the column name exactly as written: age" in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_a_source_column_named_path_is_not_carried(tmp_path):
    rows = make_source(tmp_path / "src")
    for row in rows:
        row["path"] = "somewhere/else.png"
    csv_path = write_csv(tmp_path / "src" / "labels.csv", rows, HAM_HEADER + ["path"])
    run_import(_spec(csv_path, tmp_path / "out", layouts=("classification",)))
    header = (tmp_path / "out" / "classification" / "metadata.csv").read_text().splitlines()[0]
    assert header == ",".join(["path", *CARRIED])
