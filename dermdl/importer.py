"""``dermdl import``: build the classification, segmentation and detection layouts from a table.

Real data arrives as a folder of images plus a spreadsheet (HAM10000, ISIC, hospital exports), often
with several images of the same lesion or patient. This module turns such a CSV into the pipeline's
layouts, with datasets split by group (no lesion/patient in two datasets) and stratified by label:

    <out>/import.json                               arguments, counts per dataset/label, groups, seed
    <out>/splits.csv                                every CSV row: line, image, dataset, label, group
    <out>/classification/<dataset>/<label>/<image>  (+ groups.csv: path,group,... for the leak check)
    <out>/segmentation/<dataset>/images/<image>     + <dataset>/masks/<stem>.png      (with a mask column)
    <out>/detection/images/<dataset>/<image>        + annotations/<dataset>.json (COCO) (boxes or masks)

Each layout folder is a ``data.root`` for the pipeline. Rules:

* Sources are only read: images are hard-linked into the output (copied when linking is impossible,
  e.g. across file systems, or with ``copy=True``), never moved or modified. Masks that are not PNG
  are converted (new files). Hard links share their bytes with the originals: do not edit imported
  files in place (the pipeline never does).
* Nothing is written unless every row is usable: all bad rows (missing file, unreadable image, empty
  label, missing or extra fields, duplicate image, bad box or mask) are reported together, each with
  its CSV line number (line 1 is the header, line 2 the first data row).
* The output is built in a temporary sibling folder and swapped in when complete; re-running with the
  same arguments gives identical datasets (same files, same order, byte-identical JSON/CSV).
"""

from __future__ import annotations

import csv
import errno
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dermdl import __version__
from dermdl.grouped_split import group_split
from dermdl.images import ImageError, is_image_file, open_mask, open_rgb
from dermdl.io import atomic_dir, atomic_write_json, atomic_write_text
from dermdl.layout.report import Report

LAYOUTS = ("classification", "segmentation", "detection")
BOX_FORMATS = ("xyxy", "xyxy_inclusive", "xywh")
MARKER = "import.json"

PRESETS: dict[str, dict[str, Any]] = {
    # HAM10000 metadata (../shared/data/ham10000/labels.csv): boxes are tight around the mask, x1/y1 exclusive.
    "ham10000": {"image": "image_file", "label": "dx", "group": "lesion_id", "mask": "mask_file",
                 "boxes": ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"), "box_format": "xyxy"},
}


class ImportProblems(ValueError):
    """The import cannot run; ``report`` lists every problem."""

    def __init__(self, report: Report) -> None:
        self.report = report
        super().__init__(f"{len(report.errors)} problem(s), nothing written:\n" + "\n".join(report.lines()))


@dataclass
class ImportSpec:
    """What to import and how (``dermdl import --help`` explains each field)."""

    csv: Path
    out: Path
    image: str | None = None
    label: str | None = None
    group: str | None = None
    mask: str | None = None
    boxes: tuple[str, str, str, str] | None = None
    box_format: str = "xyxy"
    images_root: Path | None = None
    layouts: tuple[str, ...] | None = None          # None: every layout the columns allow
    test_size: float = 0.2
    weak_size: float = 0.0
    seed: int = 0
    train_name: str = "sl_train"
    test_name: str = "sl_test"
    weak_name: str = "wl_train"
    single_class: str | None = None                 # detection category for every box (default: the label)
    copy: bool = False
    workers: int = 2
    preset: str | None = None

    def __post_init__(self) -> None:
        self.csv, self.out = Path(self.csv), Path(self.out)
        if self.images_root is not None:
            self.images_root = Path(self.images_root)
        if self.preset is not None:
            if self.preset not in PRESETS:
                raise ValueError(f"unknown preset {self.preset!r}; available: {', '.join(PRESETS)}")
            for key, value in PRESETS[self.preset].items():
                if getattr(self, key) in (None, "xyxy"):
                    setattr(self, key, value)
        if self.boxes is not None:
            self.boxes = tuple(self.boxes)  # type: ignore[assignment]

    def shares(self) -> dict[str, float]:
        return {self.train_name: 1 - self.test_size - self.weak_size, self.test_name: self.test_size,
                self.weak_name: self.weak_size}

    def arguments(self) -> dict[str, Any]:
        """The arguments as recorded in import.json (paths as given)."""
        return {"csv": str(self.csv), "out": str(self.out), "preset": self.preset,
                "columns": {"image": self.image, "label": self.label, "group": self.group, "mask": self.mask,
                            "boxes": list(self.boxes) if self.boxes else None},
                "box_format": self.box_format,
                "images_root": str(self.images_root) if self.images_root else None,
                "layouts": list(self.layouts) if self.layouts else None, "test_size": self.test_size,
                "weak_size": self.weak_size, "seed": self.seed,
                "names": {"sl_train": self.train_name, "sl_test": self.test_name, "wl_train": self.weak_name},
                "single_class": self.single_class, "copy": self.copy}


@dataclass
class Row:
    """One usable CSV row."""

    line: int
    image: str                      # as written in the CSV
    source: Path
    label: str
    group: str
    mask: Path | None = None
    box: tuple[float, float, float, float] | None = None   # x0, y0, x1, y1 (x1/y1 exclusive)
    name: str = ""                  # output file name
    size: tuple[int, int] = (0, 0)
    mask_annotation: dict[str, Any] | None = None          # COCO bbox/area/segmentation from the mask
    dataset: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


# --- reading and checking the table ---------------------------------------------------------------------


def _where(spec: ImportSpec, line: int) -> str:
    return f"{spec.csv}:{line}"


def _safe_folder_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and not name.startswith(".") and "/" not in name and "\\" not in name


def _dialect(sample: str) -> type[csv.Dialect] | csv.Dialect:
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        return csv.excel


def _line_of(where: str, spec: ImportSpec) -> int:
    """Line number of a problem location ``<csv>:<line>`` (0 for the table as a whole), for sorting."""
    prefix = f"{spec.csv}:"
    return int(where[len(prefix):]) if where.startswith(prefix) and where[len(prefix):].isdigit() else 0


def _resolve(spec: ImportSpec, value: str) -> Path:
    path = Path(value)
    if path.is_absolute():
        return path
    return (spec.images_root if spec.images_root is not None else spec.csv.parent) / path


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if value == value and abs(value) != float("inf") else None


def read_rows(spec: ImportSpec, report: Report) -> list[Row]:
    """Parse the CSV; every header and row problem goes to ``report`` (with its line number)."""
    if not spec.csv.is_file():
        report.add(spec.csv, "table file does not exist", "check the path of the CSV file")
        return []
    text = spec.csv.read_text(encoding="utf-8-sig")
    reader = csv.reader(text.splitlines(keepends=True), _dialect(text[:4096]))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        report.add(_where(spec, 1), "the table is empty", "export the spreadsheet with a header line")
        return []
    wanted = {"image": spec.image, "label": spec.label, "group": spec.group, "mask": spec.mask}
    for k, name in enumerate(spec.boxes or ()):
        wanted[f"box {'x0 y0 x1 y1'.split()[k]}"] = name
    for role in ("image", "label"):
        if not wanted[role]:
            report.add(spec.csv, f"no {role} column given",
                       f"pass --{role}-column NAME (columns: {', '.join(header)}) or a --preset")
    missing = [(role, name) for role, name in wanted.items() if name and name not in header]
    for role, name in missing:
        close = [h for h in header if h.lower() == name.lower()]
        report.add(_where(spec, 1), f"{role} column '{name}' is not in the header (columns: {', '.join(header)})",
                   f"use the column name exactly as written{': ' + close[0] if close else ''}")
    if not report.ok:
        return []
    col = {h: i for i, h in enumerate(header)}
    rows: list[Row] = []
    seen: dict[Path, int] = {}
    for fields in reader:
        line = reader.line_num
        if not any(f.strip() for f in fields):
            continue
        where = _where(spec, line)
        if len(fields) != len(header):
            what = "an unknown extra column" if len(fields) > len(header) else "missing columns"
            report.add(where, f"row has {len(fields)} fields but the header has {len(header)} ({what})",
                       "fix the row (a stray or missing separator, or an unquoted separator inside a value)")
            continue
        value = {role: fields[col[name]].strip() for role, name in wanted.items() if name}
        bad = False
        image = value["image"]
        if not image:
            report.add(where, "image path is empty", "fill in the image path or delete the row")
            bad = True
        else:
            source = _resolve(spec, image)
            if not source.is_file():
                root = spec.images_root or spec.csv.parent
                report.add(where, f"image file '{image}' does not exist ({source})",
                           f"check the path (relative paths are read from {root}; see --images-root)")
                bad = True
            elif not is_image_file(source):
                report.add(where, f"'{image}' is not an image file (suffix {source.suffix or '(none)'})",
                           "point the row at a .jpg/.png/.tif/.bmp/.webp image")
                bad = True
            else:
                key = Path(os.path.realpath(source))
                if key in seen:
                    report.add(where, f"duplicate image '{image}' (also on line {seen[key]})",
                               "keep one row per image (delete or merge the duplicate row)")
                    bad = True
                else:
                    seen[key] = line
        label = value["label"]
        if not label:
            report.add(where, "label is empty", "fill in the label or delete the row")
            bad = True
        elif not _safe_folder_name(label):
            report.add(where, f"label '{label}' cannot be a folder name",
                       "rename the label (no '/' or '\\', no leading '.')")
            bad = True
        group = value.get("group", "")
        if spec.group and not group:
            report.add(where, "group id is empty", "fill in the lesion/patient id (or give the image its own id)")
            bad = True
        mask = None
        if spec.mask:
            if not value["mask"]:
                report.add(where, "mask path is empty", "fill in the mask path or delete the row")
                bad = True
            else:
                mask = _resolve(spec, value["mask"])
                if not mask.is_file():
                    report.add(where, f"mask file '{value['mask']}' does not exist ({mask})", "check the mask path")
                    bad = True
        box = None
        if spec.boxes:
            texts = [value[f"box {c}"] for c in ("x0", "y0", "x1", "y1")]
            if any(texts):
                numbers = [_number(t) for t in texts]
                if None in numbers:
                    report.add(where, f"box values {texts} are not all numbers",
                               "write four numbers (or none, for an image without lesion)")
                    bad = True
                else:
                    a, b, c, d = numbers
                    if spec.box_format == "xywh":
                        c, d = a + c, b + d
                    elif spec.box_format == "xyxy_inclusive":
                        c, d = c + 1, d + 1
                    if not (c > a and d > b):
                        report.add(where, f"box {texts} is empty or inverted ({spec.box_format})",
                                   "the box needs x1 > x0 and y1 > y0 (check --box-format)")
                        bad = True
                    box = (a, b, c, d)
        if not bad:
            rows.append(Row(line, image, source, label, group or f"{line}:{image}", mask, box))
    if not rows and report.ok:
        report.add(spec.csv, "the table has no data rows", "export the spreadsheet with one row per image")
    return rows


def _check_files(source: Path, mask: Path | None, want_annotation: bool) -> dict[str, Any]:
    """Decode one image (and its mask) in a worker: size, mask size, COCO annotation from the mask."""
    from dermdl.demo import coco_annotation

    out: dict[str, Any] = {}
    try:
        with open_rgb(source) as image:
            out["size"] = image.size
    except ImageError as exc:
        out["image_error"] = f"{exc.problem} ({exc.fix})"
        return out
    if mask is not None:
        try:
            values = open_mask(mask)
        except ImageError as exc:
            out["mask_error"] = f"{exc.problem} ({exc.fix})"
            return out
        out["mask_size"] = (int(values.shape[1]), int(values.shape[0]))
        if want_annotation and values.any():
            out["annotation"] = coco_annotation((values > 0).astype("uint8") * 255)
    return out


def check_files(spec: ImportSpec, rows: list[Row], report: Report, want_mask_boxes: bool) -> None:
    """Decode every image and mask (in parallel); unreadable ones and mismatches become row problems."""
    from dermdl.prepare import run_parallel

    results = run_parallel(_check_files, [(r.source, r.mask, want_mask_boxes) for r in rows], spec.workers)
    for row, result in zip(rows, results):
        where = _where(spec, row.line)
        if "image_error" in result:
            report.add(where, f"image '{row.image}' is not usable: {result['image_error']}", "re-export or remove it")
            continue
        row.size = tuple(result["size"])  # type: ignore[assignment]
        if "mask_error" in result:
            report.add(where, f"mask of '{row.image}' is not usable: {result['mask_error']}", "re-export or remove it")
            continue
        if row.mask is not None and tuple(result["mask_size"]) != row.size:
            report.add(where, f"mask is {result['mask_size'][0]} x {result['mask_size'][1]} but the image is "
                       f"{row.size[0]} x {row.size[1]}", "the mask must have the image's size")
        row.mask_annotation = result.get("annotation")
        if row.box is not None:
            x0, y0, x1, y1 = row.box
            w, h = row.size
            if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
                report.add(where, f"box {list(row.box)} (x1/y1 exclusive) is outside the {w} x {h} image",
                           "correct the box (or check --box-format)")


def _output_names(rows: list[Row], spec: ImportSpec) -> None:
    """Output file name per row: the source file name, or its path (``a__b__x.jpg``) where names clash."""
    counts = Counter(r.source.name for r in rows)
    base = spec.images_root or spec.csv.parent
    for row in rows:
        if counts[row.source.name] == 1:
            row.name = row.source.name
        else:
            try:
                rel = row.source.relative_to(base).as_posix()
            except ValueError:
                rel = row.source.as_posix().lstrip("/")
            row.name = rel.replace("/", "__")
    stems = Counter(Path(r.name).stem for r in rows)   # masks are named <stem>.png: a.jpg and a.png would clash
    for row in rows:
        if stems[Path(row.name).stem] > 1:
            path = Path(row.name)
            row.name = f"{path.stem}_{path.suffix.lstrip('.').lower()}{path.suffix}"
    clashes = Counter(r.name for r in rows)
    for row in rows:
        if clashes[row.name] > 1:   # only possible with odd names; make it unique by line number
            row.name = f"line{row.line}__{row.name}"


def plan(spec: ImportSpec) -> tuple[list[Row], tuple[str, ...], Report]:
    """Read, check and split: (rows with their dataset, layouts to build, report). Writes nothing."""
    report = Report()
    if spec.test_size <= 0 or spec.weak_size < 0 or spec.test_size + spec.weak_size >= 1:
        report.add(spec.csv, f"shares test={spec.test_size}, weak={spec.weak_size} leave nothing for training",
                   "use 0 < --test-size, 0 <= --weak-size and --test-size + --weak-size < 1")
    names = [spec.train_name, spec.test_name] + ([spec.weak_name] if spec.weak_size > 0 else [])
    if len(set(names)) != len(names) or not all(_safe_folder_name(n) for n in names):
        report.add(spec.csv, f"dataset names {names} must be distinct folder names", "choose other --*-name values")
    if spec.box_format not in BOX_FORMATS:
        report.add(spec.csv, f"unknown box format {spec.box_format!r}", f"use one of {', '.join(BOX_FORMATS)}")
    possible = ["classification"] + (["segmentation"] if spec.mask else []) + (
        ["detection"] if spec.boxes or spec.mask else [])
    layouts = tuple(spec.layouts) if spec.layouts else tuple(possible)
    for layout in layouts:
        if layout not in LAYOUTS:
            report.add(spec.csv, f"unknown layout {layout!r}", f"use {', '.join(LAYOUTS)}")
        elif layout not in possible:
            need = "a mask column" if layout == "segmentation" else "box columns or a mask column"
            report.add(spec.csv, f"the {layout} layout needs {need}",
                       "pass --mask-column / --box-columns, or leave the layout out")
    if not report.ok:
        return [], layouts, report
    rows = read_rows(spec, report)
    if rows:  # decode the rows that parsed, even when others did not: every problem is reported at once
        check_files(spec, rows, report, want_mask_boxes="detection" in layouts and not spec.boxes)
    if not report.ok:
        report.problems.sort(key=lambda p: _line_of(p.path, spec))
        return [], layouts, report
    _output_names(rows, spec)
    datasets = group_split([r.label for r in rows], [r.group for r in rows], spec.shares(), spec.seed)
    for row, dataset in zip(rows, datasets):
        row.dataset = dataset
    if "classification" in layouts:
        present = Counter((r.dataset, r.label) for r in rows)
        used = [n for n in names if any(r.dataset == n for r in rows)]
        for label in sorted({r.label for r in rows}):
            lacking = [n for n in names if present[(n, label)] == 0]
            if lacking:
                n_groups = len({r.group for r in rows if r.label == label})
                report.add(_where(spec, min(r.line for r in rows if r.label == label)),
                           f"label '{label}' has {n_groups} group(s), too few to appear in every dataset "
                           f"(none in {', '.join(lacking)}); the classification layout needs every label in "
                           f"every dataset ({', '.join(used)})",
                           "add images of this label, merge it with another label, lower the number of datasets "
                           "(--weak-size 0), or build only --layouts segmentation detection")
    return rows, layouts, report


# --- writing ----------------------------------------------------------------------------------------------


def _place(source: Path, target: Path, copy: bool) -> str:
    """Hard-link (or copy) ``source`` to ``target``; the source is never changed. Returns how."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if not copy:
        try:
            os.link(source, target)
            return "link"
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EACCES, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
    shutil.copyfile(source, target)
    return "copy"


def _write_mask(row: Row, target: Path, copy: bool) -> None:
    """PNG masks are linked/copied as they are; other formats are converted to PNG (values kept)."""
    if row.mask.suffix.lower() == ".png":  # type: ignore[union-attr]
        _place(row.mask, target, copy)  # type: ignore[arg-type]
        return
    from PIL import Image

    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(open_mask(row.mask)).save(target, format="PNG")  # type: ignore[arg-type]


def _csv_text(header: list[str], rows: list[list[Any]]) -> str:
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _groups_csv(rows: list[Row], path_of, spec: ImportSpec) -> str:
    return _csv_text(["path", "group", "dataset", "label", "line"],
                     [[path_of(r), r.group, r.dataset, r.label, r.line] for r in rows])


def _int_if_whole(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _coco(rows: list[Row], spec: ImportSpec, categories: list[str]) -> dict[str, Any]:
    cat_id = {name: k + 1 for k, name in enumerate(categories)}
    images, annotations = [], []
    for row in rows:
        images.append({"id": len(images) + 1, "file_name": row.name, "width": row.size[0], "height": row.size[1]})
        ann: dict[str, Any] | None = None
        if row.box is not None:
            x0, y0, x1, y1 = row.box
            ann = {"bbox": [_int_if_whole(v) for v in (x0, y0, x1 - x0, y1 - y0)],
                   "area": _int_if_whole((x1 - x0) * (y1 - y0)), "iscrowd": 0}
            if row.mask_annotation:
                ann |= {"area": row.mask_annotation["area"], "segmentation": row.mask_annotation["segmentation"]}
        elif row.mask_annotation:
            ann = dict(row.mask_annotation)
        if ann is not None:
            category = spec.single_class or row.label
            annotations.append({"id": len(annotations) + 1, "image_id": len(images), "category_id": cat_id[category]}
                               | ann)
    return {"images": images, "annotations": annotations,
            "categories": [{"id": cat_id[n], "name": n, "supercategory": "lesion"} for n in categories]}


def write(spec: ImportSpec, rows: list[Row], layouts: tuple[str, ...]) -> dict[str, Any]:
    """Build every layout in a temporary folder and swap it in as ``spec.out``; returns the summary."""
    names = [n for n in (spec.train_name, spec.test_name, spec.weak_name) if any(r.dataset == n for r in rows)]
    by_dataset = {n: sorted((r for r in rows if r.dataset == n), key=lambda r: (r.label, r.name)) for n in names}
    how: Counter[str] = Counter()
    with atomic_dir(spec.out) as tmp:
        for layout in layouts:
            root = tmp / layout
            root.mkdir()
            for name, members in by_dataset.items():
                if layout == "classification":
                    for r in members:
                        how[_place(r.source, root / name / r.label / r.name, spec.copy)] += 1
                elif layout == "segmentation":
                    for r in members:
                        how[_place(r.source, root / name / "images" / r.name, spec.copy)] += 1
                        _write_mask(r, root / name / "masks" / f"{Path(r.name).stem}.png", spec.copy)
                else:
                    members = sorted(members, key=lambda r: r.name)
                    for r in members:
                        how[_place(r.source, root / "images" / name / r.name, spec.copy)] += 1
                    categories = [spec.single_class] if spec.single_class else sorted({r.label for r in rows})
                    atomic_write_json(root / "annotations" / f"{name}.json", _coco(members, spec, categories))
            if spec.group:
                def path_of(r: Row, layout: str = layout) -> str:
                    return {"classification": f"{r.dataset}/{r.label}/{r.name}",
                            "segmentation": f"{r.dataset}/images/{r.name}",
                            "detection": f"images/{r.dataset}/{r.name}"}[layout]

                ordered = [r for n in names for r in by_dataset[n]]
                atomic_write_text(root / "groups.csv", _groups_csv(ordered, path_of, spec))
        ordered = sorted(rows, key=lambda r: r.line)
        atomic_write_text(tmp / "splits.csv", _csv_text(
            ["line", "image", "dataset", "label", "group", "name"],
            [[r.line, r.image, r.dataset, r.label, r.group if spec.group else "", r.name] for r in ordered]))
        summary = {
            "dermdl_version": __version__,
            "arguments": spec.arguments(),
            "layouts": list(layouts),
            "rows": len(rows),
            "datasets": {n: {"images": len(by_dataset[n]),
                             "groups": len({r.group for r in by_dataset[n]}) if spec.group else None,
                             "labels": dict(sorted(Counter(r.label for r in by_dataset[n]).items()))}
                         for n in names},
            "labels": dict(sorted(Counter(r.label for r in rows).items())),
            "groups": len({r.group for r in rows}) if spec.group else None,
            "seed": spec.seed,
        }
        atomic_write_json(tmp / MARKER, summary)
    return summary | {"placed": dict(how)}


def _refuse_unsafe_out(spec: ImportSpec, rows: list[Row], report: Report) -> None:
    """The output folder is replaced as a whole: never let that touch the sources or a foreign folder."""
    out = Path(os.path.realpath(spec.out))
    if spec.out.exists() and not (spec.out / MARKER).is_file():
        if not spec.out.is_dir() or any(spec.out.iterdir()):
            report.add(spec.out, "output folder exists and was not written by dermdl import (no import.json)",
                       "choose a new or empty folder for --out (it is replaced as a whole)")
            return
    sources = [spec.csv] + [r.source for r in rows] + [r.mask for r in rows if r.mask is not None]
    for source in sources:
        real = Path(os.path.realpath(source))
        if real == out or out in real.parents:
            report.add(spec.out, f"output folder contains the source {source}",
                       "choose an --out folder outside the folder of the table and images")
            return


def run_import(spec: ImportSpec) -> dict[str, Any]:
    """Plan, check, then write; raises :class:`ImportProblems` (with the report) when anything is wrong."""
    rows, layouts, report = plan(spec)
    if report.ok:
        _refuse_unsafe_out(spec, rows, report)
    if not report.ok:
        raise ImportProblems(report)
    return write(spec, rows, layouts)


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"import: {summary['rows']} images -> {summary['arguments']['out']} "
             f"({', '.join(summary['layouts'])}; seed {summary['seed']})"]
    for name, info in summary["datasets"].items():
        groups = f", {info['groups']} groups" if info["groups"] is not None else ""
        labels = ", ".join(f"{k} {v}" for k, v in info["labels"].items())
        lines.append(f"  {name}: {info['images']} images{groups} ({labels})")
    placed = summary.get("placed") or {}
    lines.append(f"  files: {placed.get('link', 0)} hard-linked, {placed.get('copy', 0)} copied "
                 "(sources untouched)")
    return "\n".join(lines)


def main_args(args: Any) -> int:
    """CLI entry (see dermdl/cli.py): prints every problem or the summary; exit 1 on problems."""
    import sys

    spec = ImportSpec(
        csv=args.csv, out=args.out, image=args.image_column, label=args.label_column, group=args.group_column,
        mask=args.mask_column, boxes=tuple(args.box_columns) if args.box_columns else None,
        box_format=args.box_format or "xyxy", images_root=args.images_root,
        layouts=tuple(args.layouts) if args.layouts else None, test_size=args.test_size, weak_size=args.weak_size,
        seed=args.seed, train_name=args.train_name, test_name=args.test_name, weak_name=args.weak_name,
        single_class=args.single_class, copy=args.copy, workers=args.workers, preset=args.preset)
    try:
        summary = run_import(spec)
    except ImportProblems as exc:
        for line in exc.report.lines():
            print(line, file=sys.stderr)
        print(f"import: {len(exc.report.errors)} problem(s); nothing was written", file=sys.stderr)
        return 1
    print(format_summary(summary))
    trains = " ".join(n for n in (spec.weak_name, spec.train_name) if n in summary["datasets"])
    print(f"import: next, e.g.: dermdl check-leaks --root {Path(spec.out) / summary['layouts'][0]} "
          f"--train {trains} --test {spec.test_name}")
    return 0
