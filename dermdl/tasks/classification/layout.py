"""Scan the classification layout ``<root>/<dataset>/<class>/<image>``.

Why this is strict and exhaustive: the class list is the set of class folders, so a class folder
missing in one dataset (or spelled ``Melanoma`` in one and ``melanoma`` in another) would silently
change the label space between training and test data. The scan therefore checks every dataset
against the union of classes and collects ALL problems (it never stops at the first one), each
naming the exact path, what is wrong and how to fix it. It only reads: the source tree is never
modified (no renames, no caches written next to the data).

Test sets (``data.sl_tests``) are the exception: the model's classes come from the training sets
only, and a test set named in ``data.label_maps`` — an external one, from another hospital — may hold
a subset of them under its own folder names (several folders may map to one class). A test-set folder
that is neither a class nor mapped is an error; a missing class is a warning for an external test set
and an error (a forgotten folder) for the others.

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
from collections.abc import Collection, Mapping
from dataclasses import replace
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


def _test_set_targets(
    root: Path,
    name: str,
    folders: dict[str, Path],
    classes: list[str],
    label_map: Mapping[str, str],
    report: Report,
) -> dict[str, str]:
    """Folder -> model class of one test set (its own names through ``data.label_maps``).

    Why a test set is checked against the model's classes instead of joining the union: a test set
    must never add a class the model was not trained on, but an external one may use other folder
    names."""
    key = f"data.label_maps.{name}"
    known = ", ".join(classes)
    targets: dict[str, str] = {}
    for folder, folder_dir in folders.items():
        if folder in label_map:
            target = label_map[folder]
            if target not in classes:
                report.add(
                    folder_dir,
                    f"{key} maps folder '{folder}' to '{target}', which is not a model class "
                    f"(the classes come from the training sets: {known})",
                    f"map '{folder}' to one of {known} in {key}",
                )
                continue
            targets[folder] = target
        elif folder in classes:
            targets[folder] = folder
        else:
            same_but_case = [c for c in classes if c.lower() == folder.lower()]
            hint = (
                f"rename the folder to '{same_but_case[0]}' (class names are case-sensitive), or "
                if same_but_case
                else ""
            )
            report.add(
                folder_dir,
                f"class '{folder}' is missing from the training sets: folder '{folder}' of test set '{name}' is "
                f"neither a model class ({known}) nor mapped to one",
                f"{hint}map it in data.label_maps, e.g. label_maps: {{{name}: {{{folder}: <class>}}}}, "
                "or move the folder out of the test set",
            )
    for folder in sorted(set(label_map) - set(folders)):
        report.add(
            root / name / folder,
            f"{key} maps folder '{folder}', which test set '{name}' does not have",
            f"remove '{folder}' from {key}, or check its spelling against the folders of {root / name}",
            severity="warning",
        )
    return targets


def _report_absent_classes(
    root: Path,
    name: str,
    folders: dict[str, Path],
    targets: dict[str, str],
    training: dict[str, dict[str, Path]],
    external: bool,
    report: Report,
) -> None:
    """A class without images in a test set: a warning for an external test set (named in
    ``data.label_maps``: a subset is expected, analyze says what is then not defined), else an error as
    between training sets (a forgotten folder)."""
    classes = sorted({cls for found in training.values() for cls in found})
    absent = [c for c in classes if c not in targets.values()]
    if not absent or not targets:
        return
    if external:
        report.add(
            root / name,
            f"test set '{name}' has no images of class(es) {', '.join(absent)}",
            "nothing to do for an external test set with a subset of the classes (analyze reports their recall "
            "and AUC as not defined); otherwise add the missing class folders",
            severity="warning",
        )
        return
    for cls in absent:
        same_but_case = [f for f in folders if f.lower() == cls.lower()]
        rename = f"rename the folder {root / name / same_but_case[0]} to '{cls}', or " if same_but_case else ""
        report.add(
            root / name / cls,
            f"class '{cls}' is missing from dataset '{name}' "
            f"(present in: {', '.join(n for n, found in training.items() if cls in found)})",
            f"{rename}create the folder {root / name / cls} and add images; a test set with only some of the "
            f"classes (external validation): name it in data.label_maps, e.g. label_maps: {{{name}: {{}}}}",
        )


def scan_classification(
    root: str | os.PathLike,
    datasets: list[str],
    check_images: bool = True,
    max_pixels: int = MAX_PIXELS,
    tests: Collection[str] = (),
    label_maps: Mapping[str, Mapping[str, str]] | None = None,
) -> tuple[list[Item], list[str], Report]:
    """Scan ``<root>/<dataset>/<class>/<image>`` for the given datasets.

    Returns ``(items, classes, report)``: items for readable images only (sorted), the sorted class
    names, and a report with every problem found. Callers should refuse to run when ``not report.ok``
    and print ``report.lines()``. The classes are the union of the class folders of the datasets not
    in ``tests`` (every one of those must have all of them). A dataset in ``tests`` never adds a class;
    its folders are renamed by ``label_maps[dataset]`` (an item's target is the model class; its path
    keeps the original folder), and one named in ``label_maps`` may hold a subset of the classes. With
    only test sets listed, their (mapped) folders are the classes.
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

    maps = label_maps or {}
    defining = {name: folders for name, folders in found.items() if name not in tests}
    _report_missing_classes(root, defining, report)
    if defining:
        all_classes = sorted({cls for folders in defining.values() for cls in folders})
    else:
        all_classes = sorted({maps.get(n, {}).get(f, f) for n, folders in found.items() for f in folders})

    items: list[Item] = []
    for name, folders in found.items():
        if name in defining:
            targets = {f: f for f in folders}
        else:
            targets = _test_set_targets(root, name, folders, all_classes, maps.get(name, {}), report)
            _report_absent_classes(root, name, folders, targets, defining, name in maps, report)
        for folder, cls in targets.items():
            scanned = _scan_class(name, folder, folders[folder], check_images, max_pixels, report)
            items.extend(replace(item, target=cls) for item in scanned)
    items.sort(key=lambda it: (it.dataset, it.target or "", it.path.name))
    return items, all_classes, report


def scan(params: Any, datasets: list[str], check_images: bool = True):
    """The layout of ``params.data``: test sets are renamed by ``data.label_maps``; those it names may be subsets."""
    data = params.data
    return scan_classification(
        Path(data.root), datasets, check_images=check_images, tests=data.sl_tests, label_maps=data.label_maps
    )
