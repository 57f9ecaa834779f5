"""``dermdl import``: build the classification, segmentation and detection layouts from a table.

Real data arrives as a folder of images plus a spreadsheet (HAM10000, ISIC, hospital exports), often
with several images of the same lesion or patient. This module turns such a CSV into the pipeline's
layouts, with datasets split by group (no lesion/patient in two datasets) and stratified by label:

    <out>/import.json                               arguments, counts per dataset/label, groups, seed
    <out>/splits.csv                                every CSV row: line, image, dataset, label, group
    <out>/classification/<dataset>/<label>/<image>  (+ groups.csv: path,group,... for the leak check)
    <out>/<layout>/metadata.csv                     path + every other CSV column (age, sex, ...: subgroups)
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

from pathlib import Path
from typing import Any

from dermdl.importer.layouts import _refuse_unsafe_out, write
from dermdl.importer.spec import MARKER, PRESETS, ImportProblems, ImportSpec, Row
from dermdl.importer.table import check_files, plan, read_rows
from dermdl.options import BOX_FORMATS


def run_import(spec: ImportSpec) -> dict[str, Any]:
    """Plan, check, then write; raises :class:`ImportProblems` (with the report) when anything is wrong."""
    rows, layouts, report = plan(spec)
    if report.ok:
        _refuse_unsafe_out(spec, rows, report)
    if not report.ok:
        raise ImportProblems(report)
    return write(spec, rows, layouts)


def format_summary(summary: dict[str, Any]) -> str:
    lines = [
        f"import: {summary['rows']} images -> {summary['arguments']['out']} "
        f"({', '.join(summary['layouts'])}; seed {summary['seed']})"
    ]
    for name, info in summary["datasets"].items():
        groups = f", {info['groups']} groups" if info["groups"] is not None else ""
        labels = ", ".join(f"{k} {v}" for k, v in info["labels"].items())
        lines.append(f"  {name}: {info['images']} images{groups} ({labels})")
    placed = summary.get("placed") or {}
    lines.append(f"  files: {placed.get('link', 0)} hard-linked, {placed.get('copy', 0)} copied (sources untouched)")
    if summary.get("metadata"):
        lines.append(f"  metadata.csv (for analyze.subgroups): {', '.join(summary['metadata'])}")
    return "\n".join(lines)


def main_args(args: Any) -> int:
    """CLI entry (see dermdl/cli.py): prints every problem or the summary; exit 1 on problems."""
    import sys

    spec = ImportSpec(
        csv=args.csv,
        out=args.out,
        image=args.image_column,
        label=args.label_column,
        group=args.group_column,
        missing_group_alone=args.missing_group_alone,
        mask=args.mask_column,
        boxes=tuple(args.box_columns) if args.box_columns else None,
        box_format=args.box_format or "xyxy",
        images_root=args.images_root,
        layouts=tuple(args.layouts) if args.layouts else None,
        test_size=args.test_size,
        weak_size=args.weak_size,
        seed=args.seed,
        train_name=args.train_name,
        test_name=args.test_name,
        weak_name=args.weak_name,
        single_class=args.single_class,
        copy=args.copy,
        workers=args.workers,
        preset=args.preset,
        metadata=not args.no_metadata,
        metadata_exclude=tuple(args.metadata_exclude or ()),
    )
    try:
        summary = run_import(spec)
    except ImportProblems as exc:
        for line in exc.report.lines():
            print(line, file=sys.stderr)
        print(f"import: {len(exc.report.errors)} problem(s); nothing was written", file=sys.stderr)
        return 1
    print(format_summary(summary))
    trains = " ".join(n for n in (spec.weak_name, spec.train_name) if n in summary["datasets"])
    print(
        f"import: next, e.g.: dermdl check-leaks --root {Path(spec.out) / summary['layouts'][0]} "
        f"--train {trains} --test {spec.test_name}"
    )
    return 0
