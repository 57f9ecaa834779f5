"""Scan the classification layout ``<root>/<dataset>/<class>/<image>``.

Why this is strict and exhaustive: the class list is the set of class folders, so a class folder
missing in one dataset (or spelled ``Melanoma`` in one and ``melanoma`` in another) would silently
change the label space between training and test data. The scan therefore checks every dataset
against the union of classes and collects ALL problems (it never stops at the first one), each
naming the exact path, what is wrong and how to fix it. It only reads: the source tree is never
modified (no renames, no caches written next to the data).

Conventions:
* Hidden/system entries (``.DS_Store``, ``Thumbs.db``, ``desktop.ini``, dot-files, ``__MACOSX``)
  are skipped silently; any other non-image file is an error, because a stray file usually means a
  mis-copied dataset.
* Images must sit directly in their class folder; sub-folders and files directly in a dataset
  folder are reported.
* With ``check_images=True`` every image is fully decoded (see :mod:`dermdl.images`); with False
  only the suffix and a zero size are checked (fast re-scans of a tree already checked).
* Items are sorted by (dataset, class, file name) using plain code-point order, so the result is
  identical on every machine and locale.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dermdl.images import IMAGE_SUFFIXES, MAX_PIXELS, check_image, is_image_file
from dermdl.layout.datasets import dataset_dirs, list_entries
from dermdl.layout.items import Item
from dermdl.layout.report import Report
from dermdl.layout.schema import LayoutSchema

#: where this layout keeps its files (the one definition: checker, leak check, importer, demo, convert)
LAYOUT = LayoutSchema(image="{dataset}/{label}/{name}")

_REMOVE = "remove it or move it out of the dataset folder"
_SUFFIX_TEXT = ", ".join(sorted(IMAGE_SUFFIXES))


def _scan_dataset(ds_dir: Path, report: Report) -> dict[str, Path] | None:
    """Class folders of one dataset; stray files directly in it are reported."""
    entries = list_entries(ds_dir, report)
    if entries is None:
        return None
    classes: dict[str, Path] = {}
    for entry in entries:
        if entry.is_dir():
            classes[entry.name] = entry
        else:
            report.add(
                entry,
                "file is directly in the dataset folder, not inside a class folder",
                f"move it into the class folder it belongs to ({ds_dir}{os.sep}<class>{os.sep}), or remove it",
            )
    return classes


def _scan_class(name: str, cls: str, cls_dir: Path, check_images: bool, max_pixels: int, report: Report) -> list[Item]:
    entries = list_entries(cls_dir, report)
    if entries is None:
        return []
    items: list[Item] = []
    n_image_files = 0
    for entry in entries:
        if entry.is_dir():
            report.add(
                entry,
                "unexpected sub-folder inside a class folder (images must sit directly in the class folder)",
                f"move its images up into {cls_dir}, or {_REMOVE}",
            )
            continue
        if not is_image_file(entry):
            report.add(
                entry, f"not an image file (suffix {entry.suffix or '(none)'!r} is not one of {_SUFFIX_TEXT})", _REMOVE
            )
            continue
        n_image_files += 1
        if check_images:
            error = check_image(entry, max_pixels)
            if error is not None:
                report.add_image_error(error)
                continue
        else:
            try:
                empty = entry.stat().st_size == 0
            except OSError:
                empty = True
            if empty:
                report.add(entry, "file is empty (0 bytes) or unreadable", f"re-export the file, or {_REMOVE}")
                continue
        items.append(Item(path=entry, target=cls, dataset=name))
    if n_image_files == 0:
        report.add(
            cls_dir,
            f"class folder '{cls}' of dataset '{name}' contains no images",
            "add images to it, or remove the class folder from all datasets",
        )
    return items


def _report_missing_classes(root: Path, found: dict[str, dict[str, Path]], report: Report) -> None:
    """Every dataset must have every class of the union; suggest renames for case mismatches."""
    union = sorted({cls for classes in found.values() for cls in classes})
    for name, classes in found.items():
        for cls in union:
            if cls in classes:
                continue
            present = sorted(n for n, c in found.items() if cls in c)
            target = root / name / cls
            same_but_case = [c for c in classes if c.lower() == cls.lower()]
            if same_but_case:
                fix = (
                    f"rename the folder {root / name / same_but_case[0]} to '{cls}' (class "
                    "names are case-sensitive: use one spelling in every dataset), or create "
                    f"the folder {target} and add images"
                )
            else:
                fix = f"create the folder {target} and add images, or remove the class from all datasets"
            report.add(
                target, f"class '{cls}' is missing from dataset '{name}' (present in: {', '.join(present)})", fix
            )


def scan_classification(
    root: str | os.PathLike, datasets: list[str], check_images: bool = True, max_pixels: int = MAX_PIXELS
) -> tuple[list[Item], list[str], Report]:
    """Scan ``<root>/<dataset>/<class>/<image>`` for the given datasets.

    Returns ``(items, classes, report)``: items for readable images only (sorted), the sorted union
    of class names, and a report with every problem found. Callers should refuse to run when
    ``not report.ok`` and print ``report.lines()``.
    """
    root = Path(root)
    report = Report()
    usable = dataset_dirs(root, datasets, report, "create the folder {dir} with one sub-folder per class")
    if usable is None:
        return [], [], report

    found: dict[str, dict[str, Path]] = {}
    for name, ds_dir in usable:
        classes = _scan_dataset(ds_dir, report)
        if classes is not None:
            found[name] = classes

    _report_missing_classes(root, found, report)

    items: list[Item] = []
    for name, classes in found.items():
        for cls, cls_dir in classes.items():
            items.extend(_scan_class(name, cls, cls_dir, check_images, max_pixels, report))
    items.sort(key=lambda it: (it.dataset, it.target or "", it.path.name))
    all_classes = sorted({cls for classes in found.values() for cls in classes})
    return items, all_classes, report


def scan(params: Any, datasets: list[str], check_images: bool = True):
    return scan_classification(Path(params.data.root), datasets, check_images=check_images)
