"""Scan the segmentation layout ``<root>/<dataset>/images/<name>.<ext>`` + ``masks/<name>.png``.

Why this is strict: a mask that is silently paired with the wrong image, stored lossily (JPEG
smoothing invents values at every lesion border), saved at another size, or coloured instead of
indexed produces a model that looks trained but learned garbage. So, like the classification
scanner (:mod:`dermdl.tasks.classification.layout`), this collects ALL problems, one line each with the exact
path and a fix, and never modifies the tree.

Checks (``check_images=True`` decodes every file; False only pairs names and catches 0-byte files):

* dataset folder missing / a file; ``images/`` or ``masks/`` missing; stray files or folders
* ``images/``: no images, non-image files, sub-folders, two images with the same stem, and every
  image check of the classification task (:func:`dermdl.images.check_image`)
* ``masks/``: mask not ``.png``, non-image files, sub-folders, image without mask, mask without image
* decoded masks: unreadable (same checks as images), colour RGB masks (refused) and grey RGB masks
  (a warning), size different from the image, pixel values outside ``mask_values`` (listed with
  their pixel counts)
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dermdl.images import (
    IMAGE_SUFFIXES,
    MAX_PIXELS,
    ImageError,
    check_image,
    image_source,
    is_image_file,
    open_mask,
)
from dermdl.layout.datasets import dataset_dirs, list_entries
from dermdl.layout.items import Item
from dermdl.layout.report import Report
from dermdl.layout.schema import LayoutSchema

#: where this layout keeps its files (the one definition: checker, leak check, importer, demo, convert)
LAYOUT = LayoutSchema(image="{dataset}/images/{name}", mask="{dataset}/masks/{stem}.png")

# the folder names inside a dataset folder, as the schema above defines them
IMAGES, MASKS = Path(LAYOUT.image_dir("d")).name, Path(LAYOUT.mask_dir("d")).name
_REMOVE = "remove it or move it out of the dataset folder"
_SUFFIX_TEXT = ", ".join(sorted(IMAGE_SUFFIXES))
_MAX_LISTED_VALUES = 8
_RGB_MODES = frozenset({"RGB", "RGBA", "RGBX", "LA"})


def _image_size(path: Path) -> tuple[int, int]:
    """Displayed (EXIF-transposed) size from the header only; :func:`open_rgb` agrees with it."""
    with Image.open(image_source(path)) as image:
        width, height = image.size
        orientation = image.getexif().get(0x0112)
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _stored_mode(path: Path) -> str:
    with Image.open(image_source(path)) as image:
        return image.mode


def _folder(ds_dir: Path, name: str, entries: dict[str, Path], report: Report) -> Path | None:
    """``images/`` or ``masks/`` of a dataset, reporting when it is missing (with a case hint)."""
    if name in entries and entries[name].is_dir():
        return entries[name]
    near = [n for n, p in entries.items() if n.lower() == name and p.is_dir()]
    fix = (
        f"rename the folder {ds_dir / near[0]} to '{name}' (folder names are case-sensitive)"
        if near
        else f"create {ds_dir / name}{os.sep} and put the {'images' if name == IMAGES else 'PNG masks'} in it"
    )
    report.add(ds_dir / name, f"folder '{name}' is missing from dataset '{ds_dir.name}'", fix)
    return None


def _not_empty(path: Path, report: Report) -> bool:
    try:
        empty = path.stat().st_size == 0
    except OSError:
        empty = True
    if empty:
        report.add(path, "file is empty (0 bytes) or unreadable", f"re-export the file, or {_REMOVE}")
    return not empty


def _list_images(folder: Path, report: Report) -> tuple[dict[str, Path], set[str]]:
    """(stem -> image, every image stem); sub-folders, non-images and duplicated stems are reported."""
    by_stem: dict[str, list[Path]] = defaultdict(list)
    for entry in list_entries(folder, report) or []:
        if entry.is_dir():
            report.add(
                entry,
                f"unexpected sub-folder inside {IMAGES}/ (images must sit directly in it)",
                f"move its images up into {folder}, or {_REMOVE}",
            )
        elif not is_image_file(entry):
            report.add(
                entry, f"not an image file (suffix {entry.suffix or '(none)'!r} is not one of {_SUFFIX_TEXT})", _REMOVE
            )
        else:
            by_stem[entry.stem].append(entry)
    images: dict[str, Path] = {}
    for stem, paths in by_stem.items():
        if len(paths) > 1:
            names = ", ".join(p.name for p in paths)
            for path in paths:
                report.add(
                    path,
                    f"{len(paths)} images share the name '{stem}' ({names}), so they would "
                    f"share the mask {MASKS}/{stem}.png",
                    "rename or remove all but one of them",
                )
        else:
            images[stem] = paths[0]
    for stems in _case_only_collisions(images):
        names = ", ".join(images[stem].name for stem in stems)
        for stem in stems:
            report.add(
                images.pop(stem),
                f"images {names} differ only in upper/lower case: on macOS and Windows they are one file, and "
                f"their masks ({MASKS}/<name>.png) would be too",
                "rename all but one of them",
            )
    if not by_stem:
        report.add(
            folder,
            f"folder {IMAGES}/ of dataset '{folder.parent.name}' contains no images",
            "add images (and their masks), or remove the dataset from the dataset list",
        )
    return images, set(by_stem)


def _case_only_collisions(by_stem: Mapping[str, Path]) -> list[list[str]]:
    """Groups of stems equal but for case (``X`` and ``x``)."""
    folded: dict[str, list[str]] = defaultdict(list)
    for stem in by_stem:
        folded[stem.casefold()].append(stem)
    return [sorted(stems) for stems in folded.values() if len(stems) > 1]


def _list_masks(folder: Path, report: Report) -> tuple[dict[str, Path], set[str]]:
    """(stem -> .png mask, stems of non-PNG masks); every other entry is reported."""
    masks: dict[str, list[Path]] = defaultdict(list)
    not_png: set[str] = set()
    for entry in list_entries(folder, report) or []:
        if entry.is_dir():
            report.add(
                entry,
                f"unexpected sub-folder inside {MASKS}/ (masks must sit directly in it)",
                f"move its masks up into {folder}, or {_REMOVE}",
            )
        elif entry.suffix.lower() == ".png":
            masks[entry.stem].append(entry)
        elif is_image_file(entry):
            not_png.add(entry.stem)
            report.add(
                entry,
                f"mask is not a .png file ({entry.suffix} is lossy or not a label format: "
                "its pixel values would not be exact class values)",
                f"save it losslessly as {folder / (entry.stem + '.png')}",
            )
        else:
            report.add(entry, f"not a mask file (suffix {entry.suffix or '(none)'!r}; masks are .png)", _REMOVE)
    unique: dict[str, Path] = {}
    for stem, paths in masks.items():
        if len(paths) > 1:
            for path in paths:
                report.add(path, f"{len(paths)} masks share the name '{stem}'", "keep exactly one of them")
        else:
            unique[stem] = paths[0]
    return unique, not_png


def _describe_values(values: np.ndarray, counts: np.ndarray) -> str:
    order = np.argsort(-counts, kind="stable")
    parts = [f"{int(values[i])} ({int(counts[i]):,} pixels)" for i in order[:_MAX_LISTED_VALUES]]
    if len(order) > _MAX_LISTED_VALUES:
        parts.append(f"and {len(order) - _MAX_LISTED_VALUES} more values")
    return ", ".join(parts)


def _check_mask(
    mask_path: Path,
    image_path: Path,
    image_size: tuple[int, int] | None,
    value_map: Mapping[int, int] | None,
    max_pixels: int,
    report: Report,
) -> bool:
    """Decode one mask and check mode, size and values; True when it is usable."""
    try:
        values = open_mask(mask_path, max_pixels)
    except ImageError as exc:
        report.add_image_error(exc)
        return False
    ok = True
    if _stored_mode(mask_path) in _RGB_MODES:
        report.add(
            mask_path,
            "mask is stored as an RGB image (all channels are equal, so it is read as grey values)",
            "save it as a single-channel (L) or palette PNG",
            severity="warning",
        )
    height, width = values.shape
    if image_size is not None and image_size != (width, height):
        report.add(
            mask_path,
            f"mask is {width} x {height} pixels but its image {image_path.name} is {image_size[0]} x {image_size[1]}",
            "export the mask at the size of its image (they must align pixel for pixel)",
        )
        ok = False
    if value_map is not None:
        found, counts = np.unique(values, return_counts=True)
        outside = ~np.isin(found, np.fromiter(value_map, dtype=np.int64))
        if outside.any():
            allowed = ", ".join(str(v) for v in sorted(value_map))
            report.add(
                mask_path,
                f"pixel values outside segmentation.mask_values ({allowed}): "
                f"{_describe_values(found[outside], counts[outside])}",
                "re-export the mask with only those values (no anti-aliasing or smoothing), or map "
                "the extra values to class ids in segmentation.mask_values",
            )
            ok = False
    return ok


def _scan_dataset(
    name: str, ds_dir: Path, value_map: Mapping[int, int] | None, check_images: bool, max_pixels: int, report: Report
) -> list[Item]:
    entries = {e.name: e for e in list_entries(ds_dir, report) or []}
    for entry_name, entry in entries.items():
        if entry_name in (IMAGES, MASKS) and entry.is_dir():
            continue
        if entry.is_dir():
            if entry_name.lower() in (IMAGES, MASKS):
                continue  # reported by _folder with a rename hint
            report.add(
                entry,
                f"unexpected folder in a segmentation dataset (only {IMAGES}/ and {MASKS}/ belong here)",
                f"move its files into {IMAGES}/ or {MASKS}/, or {_REMOVE}",
            )
        else:
            report.add(
                entry,
                f"file is directly in the dataset folder, not inside {IMAGES}/ or {MASKS}/",
                f"move it into {ds_dir / IMAGES} (images) or {ds_dir / MASKS} (masks), or remove it",
            )
    image_dir, mask_dir = _folder(ds_dir, IMAGES, entries, report), _folder(ds_dir, MASKS, entries, report)
    if image_dir is None:
        return []
    images, image_stems = _list_images(image_dir, report)
    masks, not_png = _list_masks(mask_dir, report) if mask_dir is not None else ({}, set())
    items: list[Item] = []
    for stem, image in sorted(images.items()):
        mask = masks.get(stem)
        if mask is None:
            if mask_dir is not None and stem not in not_png:
                report.add(
                    image,
                    f"image has no mask (expected {mask_dir / (stem + '.png')})",
                    "add its mask, or remove the image",
                )
            if check_images:
                error = check_image(image, max_pixels)
                if error is not None:
                    report.add_image_error(error)
            continue
        if check_images:
            error = check_image(image, max_pixels)
            if error is not None:
                report.add_image_error(error)
            size = None if error is not None else _image_size(image)
            mask_ok = _check_mask(mask, image, size, value_map, max_pixels, report)
            usable = error is None and mask_ok
        else:
            usable = _not_empty(image, report) & _not_empty(mask, report)
        if usable:
            items.append(Item(path=image, target=str(mask), dataset=name))
    for stem, mask in sorted(masks.items()):
        if stem not in image_stems:
            report.add(
                mask,
                f"mask has no image (expected {image_dir / stem}.<ext>, ext one of {_SUFFIX_TEXT})",
                "add its image, or remove the mask",
            )
    return items


def scan_segmentation(
    root: str | os.PathLike,
    datasets: list[str],
    value_map: Mapping[int, int] | None = None,
    check_images: bool = True,
    max_pixels: int = MAX_PIXELS,
) -> tuple[list[Item], Report]:
    """Scan the datasets of a segmentation root; ``value_map`` (stored value -> class id) enables the
    value check. Returns ``(items, report)``: one Item per usable pair (``target`` = mask path),
    sorted by (dataset, image name), and every problem found."""
    root = Path(root)
    report = Report()
    usable = dataset_dirs(root, datasets, report, f"create {{dir}}{os.sep} with {IMAGES}/ and {MASKS}/ inside")
    if usable is None:
        return [], report
    items: list[Item] = []
    for name, ds_dir in usable:
        items.extend(_scan_dataset(name, ds_dir, value_map, check_images, max_pixels, report))
    items.sort(key=lambda it: (it.dataset, it.path.name))
    return items, report


def scan(params: Any, datasets: list[str], check_images: bool = True):
    """(items, codes, report); values are checked against mask_values when masks are decoded."""
    mapping = params.segmentation.value_map() if check_images else None
    items, report = scan_segmentation(Path(params.data.root), datasets, mapping, check_images=check_images)
    return items, list(params.segmentation.codes), report
