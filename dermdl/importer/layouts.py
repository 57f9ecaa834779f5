"""``dermdl import``: writing the layouts (hard links/copies, masks, groups.csv, COCO, import.json)."""

from __future__ import annotations

import csv
import errno
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from dermdl import __version__
from dermdl.images import open_mask
from dermdl.importer.spec import MARKER, ImportSpec, Row
from dermdl.io import atomic_dir, atomic_write_json, atomic_write_text, is_inside
from dermdl.layout.report import Report
from dermdl.layout.schema import LayoutSchema
from dermdl.tasks import get_task

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
    mask = row.mask
    if mask is None:  # never: plan() refuses a mask layout without a mask column
        raise ValueError(f"line {row.line}: no mask path for the segmentation layout")
    if mask.suffix.lower() == ".png":
        _place(mask, target, copy)
        return
    from PIL import Image

    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(open_mask(mask)).save(target, format="PNG")


def _csv_text(header: list[str], rows: list[list[Any]]) -> str:
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _groups_csv(rows: list[Row], path_of, spec: ImportSpec) -> str:
    return _csv_text(
        ["path", "group", "dataset", "label", "line"], [[path_of(r), r.group, r.dataset, r.label, r.line] for r in rows]
    )


def _metadata_csv(rows: list[Row], path_of) -> str | None:
    """``path`` (as in groups.csv) then every carried column as written; None when nothing is carried."""
    columns = list(rows[0].extra) if rows else []
    if not columns:
        return None
    return _csv_text(["path", *columns], [[path_of(r), *(r.extra[c] for c in columns)] for r in rows])


def _int_if_whole(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _coco(rows: list[Row], spec: ImportSpec, categories: list[str]) -> dict[str, Any]:
    cat_id = {name: k + 1 for k, name in enumerate(categories)}
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for row in rows:
        images.append({"id": len(images) + 1, "file_name": row.name, "width": row.size[0], "height": row.size[1]})
        ann: dict[str, Any] | None = None
        if row.box is not None:
            x0, y0, x1, y1 = row.box
            ann = {
                "bbox": [_int_if_whole(v) for v in (x0, y0, x1 - x0, y1 - y0)],
                "area": _int_if_whole((x1 - x0) * (y1 - y0)),
                "iscrowd": 0,
            }
            if row.mask_annotation:
                ann |= {"area": row.mask_annotation["area"], "segmentation": row.mask_annotation["segmentation"]}
        elif row.mask_annotation:
            ann = dict(row.mask_annotation)
        if ann is not None:
            category = spec.single_class or row.label
            annotations.append(
                {"id": len(annotations) + 1, "image_id": len(images), "category_id": cat_id[category]} | ann
            )
    return {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": cat_id[n], "name": n, "supercategory": "lesion"} for n in categories],
    }


def write(spec: ImportSpec, rows: list[Row], layouts: tuple[str, ...]) -> dict[str, Any]:
    """Build every layout in a temporary folder and swap it in as ``spec.out``; returns the summary."""
    names = [n for n in (spec.train_name, spec.test_name, spec.weak_name) if any(r.dataset == n for r in rows)]
    by_dataset = {n: sorted((r for r in rows if r.dataset == n), key=lambda r: (r.label, r.name)) for n in names}
    how: Counter[str] = Counter()
    with atomic_dir(spec.out) as tmp:
        for layout_name in layouts:
            layout = get_task(layout_name).layout
            root = tmp / layout_name
            root.mkdir()
            for name, members in by_dataset.items():
                if layout.annotations:
                    members = sorted(members, key=lambda r: r.name)  # COCO image ids follow file names
                for r in members:
                    how[_place(r.source, root / layout.image_path(name, r.name, r.label), spec.copy)] += 1
                    if layout.mask:
                        _write_mask(r, root / layout.mask_path(name, r.name), spec.copy)
                if layout.annotations:
                    categories = [spec.single_class] if spec.single_class else sorted({r.label for r in rows})
                    atomic_write_json(root / layout.annotation_path(name), _coco(members, spec, categories))

            def path_of(r: Row, layout: LayoutSchema = layout) -> str:
                return layout.image_path(r.dataset, r.name, r.label)

            ordered = [r for n in names for r in by_dataset[n]]
            if spec.group:
                atomic_write_text(root / "groups.csv", _groups_csv(ordered, path_of, spec))
            metadata = _metadata_csv(ordered, path_of)
            if metadata is not None:
                atomic_write_text(root / "metadata.csv", metadata)
        ordered = sorted(rows, key=lambda r: r.line)
        atomic_write_text(
            tmp / "splits.csv",
            _csv_text(
                ["line", "image", "dataset", "label", "group", "name"],
                [[r.line, r.image, r.dataset, r.label, r.group if spec.group else "", r.name] for r in ordered],
            ),
        )
        summary = {
            "dermdl_version": __version__,
            "arguments": spec.arguments(),
            "layouts": list(layouts),
            "rows": len(rows),
            "datasets": {
                n: {
                    "images": len(by_dataset[n]),
                    "groups": len({r.group for r in by_dataset[n]}) if spec.group else None,
                    "labels": dict(sorted(Counter(r.label for r in by_dataset[n]).items())),
                }
                for n in names
            },
            "labels": dict(sorted(Counter(r.label for r in rows).items())),
            "groups": len({r.group for r in rows}) if spec.group else None,
            "metadata": list(rows[0].extra) if rows else [],
            "seed": spec.seed,
        }
        atomic_write_json(tmp / MARKER, summary)
    return summary | {"placed": dict(how)}


def _refuse_unsafe_out(spec: ImportSpec, rows: list[Row], report: Report) -> None:
    """The output folder is replaced as a whole: never let that touch the sources or a foreign folder."""
    out = Path(os.path.realpath(spec.out))
    if spec.out.exists() and not (spec.out / MARKER).is_file():
        if not spec.out.is_dir() or any(spec.out.iterdir()):
            report.add(
                spec.out,
                "output folder exists and was not written by dermdl import (no import.json)",
                "choose a new or empty folder for --out (it is replaced as a whole)",
            )
            return
    for folder in sorted({Path(os.path.realpath(r.source)).parent for r in rows}):
        if is_inside(out, folder):
            report.add(
                spec.out,
                f"output folder is inside the image folder {folder}",
                "choose an --out folder outside the folders of the images (dermdl never writes among them)",
            )
            return
    sources = [spec.csv] + [r.source for r in rows] + [r.mask for r in rows if r.mask is not None]
    for source in sources:
        if is_inside(source, out):
            report.add(
                spec.out,
                f"output folder contains the source {source}",
                "choose an --out folder outside the folder of the table and images",
            )
            return
