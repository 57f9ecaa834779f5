"""``dermdl import``: reading and validating the table rows and their files, and the import plan."""

from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path
from typing import Any

from dermdl.grouped_split import group_split
from dermdl.images import ImageError, is_image_file, open_mask, open_rgb
from dermdl.importer.spec import (
    ImportSpec,
    Row,
    _dialect,
    _line_of,
    _number,
    _resolve,
    _safe_folder_name,
    _where,
    is_missing,
)
from dermdl.io import CSV_ENCODING_FIX, NotUtf8Error, read_utf8
from dermdl.layout.report import Report
from dermdl.layout.schema import LayoutSchema
from dermdl.options import BOX_FORMATS
from dermdl.tasks import get_task, task_names


def read_rows(spec: ImportSpec, report: Report) -> list[Row]:
    """Parse the CSV; every header and row problem goes to ``report`` (with its line number)."""
    if not spec.csv.is_file():
        report.add(spec.csv, "table file does not exist", "check the path of the CSV file")
        return []
    try:
        text = read_utf8(spec.csv)
    except NotUtf8Error as exc:
        report.add(_where(spec, exc.line), str(exc), CSV_ENCODING_FIX)
        return []
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
            report.add(
                spec.csv,
                f"no {role} column given",
                f"pass --{role}-column NAME (columns: {', '.join(header)}) or a --preset",
            )
    missing = [(role, name) for role, name in wanted.items() if name and name not in header]
    for role, name in missing:
        close = [h for h in header if h.lower() == name.lower()]
        report.add(
            _where(spec, 1),
            f"{role} column '{name}' is not in the header (columns: {', '.join(header)})",
            f"use the column name exactly as written{': ' + close[0] if close else ''}",
        )
    for name in spec.metadata_exclude:
        if name not in header:
            close = [h for h in header if h.lower() == name.lower()]
            report.add(
                _where(spec, 1),
                f"--metadata-exclude column '{name}' is not in the header (columns: {', '.join(header)})",
                f"use the column name exactly as written{': ' + close[0] if close else ''}",
            )
    if not report.ok:
        return []
    col = {h: i for i, h in enumerate(header)}
    carried = metadata_columns(spec, header, [name for name in wanted.values() if name])
    rows: list[Row] = []
    seen: dict[Path, int] = {}
    for fields in reader:
        line = reader.line_num
        if not any(f.strip() for f in fields):
            continue
        where = _where(spec, line)
        if len(fields) != len(header):
            what = "an unknown extra column" if len(fields) > len(header) else "missing columns"
            report.add(
                where,
                f"row has {len(fields)} fields but the header has {len(header)} ({what})",
                "fix the row (a stray or missing separator, or an unquoted separator inside a value)",
            )
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
                report.add(
                    where,
                    f"image file '{image}' does not exist ({source})",
                    f"check the path (relative paths are read from {root}; see --images-root)",
                )
                bad = True
            elif not is_image_file(source):
                report.add(
                    where,
                    f"'{image}' is not an image file (suffix {source.suffix or '(none)'})",
                    "point the row at a .jpg/.png/.tif/.bmp/.webp image",
                )
                bad = True
            else:
                key = Path(os.path.realpath(source))
                if key in seen:
                    report.add(
                        where,
                        f"duplicate image '{image}' (also on line {seen[key]})",
                        "keep one row per image (delete or merge the duplicate row)",
                    )
                    bad = True
                else:
                    seen[key] = line
        label = value["label"]
        if not label:
            report.add(where, "label is empty", "fill in the label or delete the row")
            bad = True
        elif not _safe_folder_name(label):
            report.add(
                where,
                f"label {label!r} cannot be a folder name",
                "rename the label (no '/' or '\\', no leading '.', no line breaks or control characters)",
            )
            bad = True
        group = value.get("group", "")
        if spec.group and is_missing(group):
            if spec.missing_group_alone:
                group = ""  # the row becomes its own group below
            else:
                report.add(
                    where,
                    f"group id is missing ({group!r})" if group else "group id is empty",
                    "fill in the lesion/patient id, or pass --missing-group-alone to make each such row its own "
                    "group (a shared 'NaN' would merge unrelated patients into one)",
                )
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
                numbers = [n for n in (_number(t) for t in texts) if n is not None]
                if len(numbers) != len(texts):
                    report.add(
                        where,
                        f"box values {texts} are not all numbers",
                        "write four numbers (or none, for an image without lesion)",
                    )
                    bad = True
                else:
                    a, b, c, d = numbers
                    if spec.box_format == "xywh":
                        c, d = a + c, b + d
                    elif spec.box_format == "xyxy_inclusive":
                        c, d = c + 1, d + 1
                    if not (c > a and d > b):
                        report.add(
                            where,
                            f"box {texts} is empty or inverted ({spec.box_format})",
                            "the box needs x1 > x0 and y1 > y0 (check --box-format)",
                        )
                        bad = True
                    box = (a, b, c, d)
        if not bad:
            extra = {name: fields[col[name]] for name in carried}
            rows.append(Row(line, image, source, label, group or f"{line}:{image}", mask, box, extra=extra))
    if not rows and report.ok:
        report.add(spec.csv, "the table has no data rows", "export the spreadsheet with one row per image")
    return rows


def metadata_columns(spec: ImportSpec, header: list[str], used: list[str]) -> list[str]:
    """The columns carried into ``metadata.csv``: all that are not image/label/group/mask/box columns, in
    table order, less ``--metadata-exclude`` (none with ``--no-metadata``). A column named ``path`` is
    never carried: that name is the metadata table's image column."""
    if not spec.metadata:
        return []
    skip = set(used) | set(spec.metadata_exclude)
    return [h for h in dict.fromkeys(header) if h and h not in skip and h.lower() != "path"]


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
        row.size = tuple(result["size"])
        if "mask_error" in result:
            report.add(where, f"mask of '{row.image}' is not usable: {result['mask_error']}", "re-export or remove it")
            continue
        if row.mask is not None and tuple(result["mask_size"]) != row.size:
            report.add(
                where,
                f"mask is {result['mask_size'][0]} x {result['mask_size'][1]} but the image is "
                f"{row.size[0]} x {row.size[1]}",
                "the mask must have the image's size",
            )
        row.mask_annotation = result.get("annotation")
        if row.box is not None:
            x0, y0, x1, y1 = row.box
            w, h = row.size
            if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
                report.add(
                    where,
                    f"box {list(row.box)} (x1/y1 exclusive) is outside the {w} x {h} image",
                    "correct the box (or check --box-format)",
                )


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
    stems = Counter(Path(r.name).stem for r in rows)  # masks are named <stem>.png: a.jpg and a.png would clash
    for row in rows:
        if stems[Path(row.name).stem] > 1:
            path = Path(row.name)
            row.name = f"{path.stem}_{path.suffix.lstrip('.').lower()}{path.suffix}"
    clashes = Counter(r.name for r in rows)
    for row in rows:
        if clashes[row.name] > 1:  # only possible with odd names; make it unique by line number
            row.name = f"line{row.line}__{row.name}"


def _needs(layout: LayoutSchema, spec: ImportSpec) -> str | None:
    """What the table lacks for a layout (None: it can be built): masks need a mask column, annotation
    files need box columns or a mask to derive boxes from."""
    if layout.mask and not spec.mask:
        return "a mask column"
    if layout.annotations and not (spec.boxes or spec.mask):
        return "box columns or a mask column"
    return None


def plan(spec: ImportSpec) -> tuple[list[Row], tuple[str, ...], Report]:
    """Read, check and split: (rows with their dataset, layouts to build, report). Writes nothing."""
    report = Report()
    if spec.test_size <= 0 or spec.weak_size < 0 or spec.test_size + spec.weak_size >= 1:
        report.add(
            spec.csv,
            f"shares test={spec.test_size}, weak={spec.weak_size} leave nothing for training",
            "use 0 < --test-size, 0 <= --weak-size and --test-size + --weak-size < 1",
        )
    names = [spec.train_name, spec.test_name] + ([spec.weak_name] if spec.weak_size > 0 else [])
    if len(set(names)) != len(names) or not all(_safe_folder_name(n) for n in names):
        report.add(spec.csv, f"dataset names {names} must be distinct folder names", "choose other --*-name values")
    if spec.box_format not in BOX_FORMATS:
        report.add(spec.csv, f"unknown box format {spec.box_format!r}", f"use one of {', '.join(BOX_FORMATS)}")
    known = task_names()
    possible = [name for name in known if _needs(get_task(name).layout, spec) is None]
    # per-image files first, then masks beside the images, then layouts with shared annotation files
    possible.sort(key=lambda name: (bool(get_task(name).layout.annotations), bool(get_task(name).layout.mask)))
    layouts = tuple(spec.layouts) if spec.layouts else tuple(possible)
    for layout in layouts:
        if layout not in known:
            report.add(spec.csv, f"unknown layout {layout!r}", f"use {', '.join(known)}")
        elif layout not in possible:
            report.add(
                spec.csv,
                f"the {layout} layout needs {_needs(get_task(layout).layout, spec)}",
                "pass --mask-column / --box-columns, or leave the layout out",
            )
    if not report.ok:
        return [], layouts, report
    rows = read_rows(spec, report)
    if rows:  # decode the rows that parsed, even when others did not: every problem is reported at once
        annotated = any(get_task(layout).layout.annotations for layout in layouts)
        check_files(spec, rows, report, want_mask_boxes=annotated and not spec.boxes)
    if not report.ok:
        report.problems.sort(key=lambda p: _line_of(p.path, spec))
        return [], layouts, report
    _output_names(rows, spec)
    datasets = group_split([r.label for r in rows], [r.group for r in rows], spec.shares(), spec.seed)
    for row, dataset in zip(rows, datasets):
        row.dataset = dataset
    for layout in [name for name in layouts if get_task(name).layout.class_folders]:
        present = Counter((r.dataset, r.label) for r in rows)
        used = [n for n in names if any(r.dataset == n for r in rows)]
        for label in sorted({r.label for r in rows}):
            lacking = [n for n in names if present[(n, label)] == 0]
            if lacking:
                n_groups = len({r.group for r in rows if r.label == label})
                report.add(
                    _where(spec, min(r.line for r in rows if r.label == label)),
                    f"label '{label}' has {n_groups} group(s), too few to appear in every dataset "
                    f"(none in {', '.join(lacking)}); the {layout} layout needs every label in "
                    f"every dataset ({', '.join(used)})",
                    "add images of this label, merge it with another label, lower the number of datasets "
                    "(--weak-size 0), or build only --layouts segmentation detection",
                )
    return rows, layouts, report
