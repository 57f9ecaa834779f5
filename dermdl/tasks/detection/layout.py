"""Scan the detection layout: ``<root>/annotations/<dataset>.json`` (COCO) + ``<root>/images/<dataset>/``.

Why exhaustive: a COCO file is written by annotation tools and scripts, and its mistakes (a box
with negative width, an annotation whose image was deleted, a category renamed in one split only)
otherwise surface as a crash or, worse, as silently wrong training targets. Every problem is
collected, each naming the JSON path inside the file (``annotations/sl_train.json: annotations[12].bbox``)
or the image file, what is wrong and how to fix it. The source tree is only read.

Conventions: dataset names work with or without ``.json``; images without annotations are valid
negatives; boxes are COCO ``[x, y, width, height]`` in pixels of the image as displayed (EXIF-rotated);
a box reaching outside the image is an error, or with ``clip_boxes=True`` a warning and the box is
clipped; polygons are checked with shapely, RLE masks must have the image's size; image files the
JSON does not list are warnings. Each item's ``target`` is a JSON string (hashable, picklable for
worker processes) with the image entry, its annotations and the category ids (:func:`decode_target`).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path, PurePosixPath
from typing import Any, TypeGuard

from PIL import Image

from dermdl.crypto import read_input
from dermdl.images import IMAGE_SUFFIXES, MAX_PIXELS, check_image, image_source, is_ignored, is_image_file
from dermdl.layout.items import Item
from dermdl.layout.report import Report, Severity
from dermdl.layout.schema import LayoutSchema

#: where this layout keeps its files (the one definition: checker, leak check, importer, demo, convert)
LAYOUT = LayoutSchema(image="images/{dataset}/{name}", annotations="annotations/{dataset}.json")

TOP_LEVEL_KEYS = ("images", "annotations", "categories")
_TOLERANCE = 1e-3  # pixels: float round-off in annotation tools is not "outside the image"
_SUFFIX_TEXT = ", ".join(sorted(IMAGE_SUFFIXES))


def dataset_stem(name: str) -> str:
    """``sl_train.json`` -> ``sl_train``; other names unchanged."""
    return LAYOUT.dataset_name(name)


def decode_target(target: str) -> dict[str, Any]:
    """Inverse of the scanner's target encoding: ``{"image", "annotations", "category_ids"}``."""
    return json.loads(target)


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class _Checker:
    """Checks one COCO file; ``where(jpath)`` names a location inside it for the report."""

    def __init__(self, root: Path, name: str, report: Report, clip_boxes: bool):
        self.root, self.name, self.report, self.clip_boxes = root, name, report, clip_boxes
        self.stem = dataset_stem(name)
        self.json_path = root / LAYOUT.annotation_path(self.stem)
        self.image_dir = root / LAYOUT.image_dir(self.stem)

    def where(self, jpath: str = "") -> str:
        return f"{self.json_path}: {jpath}" if jpath else str(self.json_path)

    def add(self, jpath: str, problem: str, fix: str, severity: Severity = "error") -> None:
        self.report.add(self.where(jpath), problem, fix, severity)

    # -- file and top level -------------------------------------------------------------------
    def load(self) -> dict | None:
        path = self.json_path
        if not path.is_file():
            what = "is a folder, not a file" if path.exists() else "does not exist"
            self.report.add(
                path,
                f"annotation file of dataset '{self.name}' {what}",
                f"write the dataset's COCO annotations to {path} (images go to {self.image_dir}"
                f"{os.sep}), or remove '{self.name}' from the dataset list",
            )
            return None
        try:
            data = json.loads(read_input(path).decode("utf-8"))  # decrypted in memory if data.encrypted
        except OSError as exc:
            self.report.add(path, f"cannot read the file ({exc.strerror or exc})", "check its permissions")
            return None
        except UnicodeDecodeError as exc:
            self.report.add(
                path, f"not UTF-8 text ({exc.reason} at byte {exc.start})", "save the annotation file as UTF-8 JSON"
            )
            return None
        except json.JSONDecodeError as exc:
            self.report.add(
                path,
                f"invalid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
                "fix the syntax there (a JSON validator or `python -m json.tool FILE` shows it)",
            )
            return None
        if not isinstance(data, dict):
            self.add(
                "",
                f"the top level is a JSON {type(data).__name__}, not an object",
                "write a COCO object with keys images, annotations and categories",
            )
            return None
        usable = True
        for key in TOP_LEVEL_KEYS:
            if key not in data:
                self.add(
                    "",
                    f"missing top-level key '{key}'",
                    f'add "{key}": [...] (an empty list is allowed for annotations)',
                )
                usable = False
            elif not isinstance(data[key], list):
                self.add(
                    key,
                    f"'{key}' must be a list, not a {type(data[key]).__name__}",
                    f'write "{key}" as a JSON list of objects',
                )
                usable = False
        return data if usable else None

    def entries(self, data: dict, key: str, required: dict[str, str]) -> list[tuple[int, dict]]:
        """(index, entry) for entries that are objects with the required fields of the right type."""
        good = []
        for index, entry in enumerate(data[key]):
            jpath = f"{key}[{index}]"
            if not isinstance(entry, dict):
                self.add(jpath, f"entry is a JSON {type(entry).__name__}, not an object", "make it a COCO object")
                continue
            ok = True
            for field, kind in required.items():
                value = entry.get(field)
                valid = {
                    "int": _is_int(value),
                    "str": isinstance(value, str) and value != "",
                    "size": _is_int(value) and value > 0,
                }[kind]
                if not valid:
                    what = "missing" if field not in entry else f"{value!r} is not valid"
                    need = {"int": "an integer", "str": "a non-empty string", "size": "a positive integer"}[kind]
                    self.add(f"{jpath}.{field}", f"'{field}' {what}", f"set it to {need}")
                    ok = False
            if ok:
                good.append((index, entry))
        return good

    def unique(self, entries: list[tuple[int, dict]], key: str, field: str, what: str) -> list[tuple[int, dict]]:
        first: dict[Any, int] = {}
        kept = []
        for index, entry in entries:
            value = entry[field]
            if value in first:
                self.add(
                    f"{key}[{index}].{field}",
                    f"duplicate {what} {value!r} (also {key}[{first[value]}])",
                    f"give every entry of '{key}' its own {field}, or remove the duplicate",
                )
                continue
            first[value] = index
            kept.append((index, entry))
        return kept

    # -- categories and images ----------------------------------------------------------------
    def categories(self, data: dict) -> dict[int, str]:
        entries = self.entries(data, "categories", {"id": "int", "name": "str"})
        entries = self.unique(
            self.unique(entries, "categories", "id", "category id"), "categories", "name", "category name"
        )
        if not data["categories"]:
            self.add("categories", "no categories are defined", "list the object classes in 'categories'")
        return {entry["id"]: entry["name"] for _, entry in entries}

    def image_file(self, index: int, entry: dict) -> Path | None:
        name = entry["file_name"]
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if PurePosixPath(name).is_absolute() or ".." in parts or os.path.isabs(name):
            self.add(
                f"images[{index}].file_name",
                f"file name {name!r} points outside {self.image_dir}",
                f"give the path relative to {self.image_dir}",
            )
            return None
        path = self.image_dir.joinpath(*parts)
        if not is_image_file(path):
            self.add(
                f"images[{index}].file_name",
                f"{name!r} is not an image file (suffix not one of {_SUFFIX_TEXT})",
                "point file_name at the image file",
            )
            return None
        if not path.is_file():
            what = "is a folder" if path.exists() else "does not exist"
            self.report.add(
                path,
                f"image file listed in {self.where(f'images[{index}]')} {what}",
                "copy the image there, or remove its entry (and its annotations) from the JSON",
            )
            return None
        return path

    def image_size(self, index: int, entry: dict, path: Path, check_images: bool, max_pixels: int) -> bool:
        if check_images:
            error = check_image(path, max_pixels)
            if error is not None:
                self.report.add_image_error(error)
                return False
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                image = Image.open(image_source(path))
            with image:
                width, height = image.size
                if image.getexif().get(0x0112) in (5, 6, 7, 8):  # EXIF rotation by 90 degrees
                    width, height = height, width
        except Exception as exc:  # unreadable header: the full check above would say why
            self.report.add(
                path,
                f"cannot read the image header ({exc})",
                "run `dermdl validate` for details, re-export the file, or remove it",
            )
            return False
        if (entry["width"], entry["height"]) != (width, height):
            self.add(
                f"images[{index}]",
                f"width x height in the JSON is {entry['width']} x {entry['height']} but "
                f"the file {path.name} is {width} x {height} (as displayed, after EXIF rotation)",
                "correct width/height in the JSON, or re-export the image at the annotated size",
            )
            return False
        return True

    # -- annotations --------------------------------------------------------------------------
    def bbox(self, jpath: str, value: Any, size: tuple[int, int]) -> list[float] | None:
        if not (isinstance(value, list) and len(value) == 4 and all(_is_number(v) for v in value)):
            self.add(jpath, f"bbox {value!r} is not 4 finite numbers", "write bbox as [x, y, width, height] in pixels")
            return None
        x, y, w, h = (float(v) for v in value)
        if w <= 0 or h <= 0:
            self.add(
                jpath,
                f"box has zero or negative {'width' if w <= 0 else 'height'} ({value!r})",
                "correct the box ([x, y, width, height] with width, height > 0) or delete the annotation",
            )
            return None
        width, height = size
        t = _TOLERANCE
        x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + w, width), min(y + h, height)
        if x < -t or y < -t or x + w > width + t or y + h > height + t:
            text = f"box {value!r} reaches outside the {width} x {height} image"
            if not self.clip_boxes:
                self.add(jpath, text, "correct the box, or set detection.clip_boxes: true to clip boxes to the image")
                return None
            if x1 - x0 <= 0 or y1 - y0 <= 0:
                self.add(jpath, text + " and lies entirely outside it", "correct the box or delete the annotation")
                return None
            self.add(
                jpath,
                text + "; clipped to the image (detection.clip_boxes: true)",
                "correct the box to silence this warning",
                severity="warning",
            )
        return [x0, y0, x1 - x0, y1 - y0]

    def segmentation(self, jpath: str, value: Any, size: tuple[int, int]) -> bool:
        from shapely.geometry import Polygon
        from shapely.validation import explain_validity

        if isinstance(value, dict):
            if not ("counts" in value and isinstance(value.get("size"), list)):
                self.add(jpath, "RLE mask needs 'counts' and 'size'", 'write RLE as {"size": [h, w], "counts": ...}')
                return False
            if list(value["size"]) != [size[1], size[0]]:
                self.add(
                    jpath,
                    f"RLE size {value['size']} differs from the image's [height, width] [{size[1]}, {size[0]}]",
                    "re-encode the mask at the image's size",
                )
                return False
            return True
        if not isinstance(value, list):
            self.add(
                jpath, f"segmentation is a {type(value).__name__}", "write polygons [[x1, y1, x2, y2, ...]] or RLE"
            )
            return False
        ok = True
        for k, poly in enumerate(value):
            where = f"{jpath}[{k}]"
            if not (isinstance(poly, list) and all(_is_number(v) for v in poly)):
                self.add(where, "polygon is not a flat list of finite numbers", "write it as [x1, y1, x2, y2, ...]")
                ok = False
            elif len(poly) % 2 or len(poly) < 6:
                self.add(
                    where,
                    f"polygon has {len(poly)} coordinates; need an even number, at least 6 (3 points)",
                    "fix the polygon or delete it",
                )
                ok = False
            else:
                shape = Polygon(list(zip(poly[0::2], poly[1::2])))
                if not shape.is_valid or shape.area <= 0:
                    reason = explain_validity(shape) if not shape.is_valid else "zero area"
                    self.add(
                        where,
                        f"invalid polygon ({reason})",
                        "redraw it as a simple (non-self-intersecting) outline, or repair it with shapely.make_valid",
                    )
                    ok = False
        return ok

    def annotations(
        self, data: dict, categories: dict[int, str], sizes: dict[int, tuple[int, int]]
    ) -> dict[int, list[dict]]:
        def ids(key: str) -> set[int]:  # every id an entry declares, even if the entry has other problems
            return {e["id"] for e in data[key] if isinstance(e, dict) and _is_int(e.get("id"))}

        image_ids, category_ids = ids("images"), ids("categories")
        entries = self.entries(data, "annotations", {"id": "int", "image_id": "int", "category_id": "int"})
        entries = self.unique(entries, "annotations", "id", "annotation id")
        per_image: dict[int, list[dict]] = {}
        for index, entry in entries:
            jpath = f"annotations[{index}]"
            image_id, category_id = entry["image_id"], entry["category_id"]
            ok = True
            if image_id not in image_ids:
                self.add(
                    f"{jpath}.image_id",
                    f"image id {image_id} is not in 'images'",
                    "point image_id at a listed image, or delete the annotation",
                )
                ok = False
            if category_id not in category_ids:
                self.add(
                    f"{jpath}.category_id",
                    f"category id {category_id} is not in 'categories'",
                    f"use one of the category ids {sorted(categories)}, or add the category",
                )
                ok = False
            crowd = entry.get("iscrowd", 0)
            if crowd not in (0, 1) or isinstance(crowd, bool):
                self.add(f"{jpath}.iscrowd", f"iscrowd is {crowd!r}", "set it to 0 (an object) or 1 (a crowd region)")
                ok = False
            if not ok or image_id not in sizes or category_id not in categories:
                continue  # unknown/unusable image or category (reported already)
            box = self.bbox(f"{jpath}.bbox", entry.get("bbox"), sizes[image_id])
            if "segmentation" in entry and entry["segmentation"] not in ([], None):
                ok = self.segmentation(f"{jpath}.segmentation", entry["segmentation"], sizes[image_id])
            if box is None or not ok:
                continue
            area = entry.get("area")
            per_image.setdefault(image_id, []).append(
                {
                    "id": entry["id"],
                    "category_id": category_id,
                    "category": categories[category_id],
                    "bbox": box,
                    "area": float(area) if _is_number(area) and area > 0 else box[2] * box[3],
                    "iscrowd": int(crowd),
                    "segmentation": entry.get("segmentation") or [],
                }
            )
        return per_image

    def unlisted(self, listed: set[Path]) -> None:
        if not self.image_dir.is_dir():
            return
        for path in sorted(self.image_dir.rglob("*")):
            if (
                path.is_file()
                and not any(is_ignored(p) for p in path.relative_to(self.image_dir).parts)
                and path not in listed
            ):
                self.report.add(
                    path,
                    f"file is not listed in {self.json_path.name} and will be ignored",
                    "add it to 'images' (a negative if it has no annotations), or move it out",
                    severity="warning",
                )


def _scan_one(checker: _Checker, check_images: bool, max_pixels: int) -> tuple[dict[int, str], list[Item]] | None:
    data = checker.load()
    if data is None:
        return None
    categories = checker.categories(data)
    entries = checker.entries(data, "images", {"id": "int", "file_name": "str", "width": "size", "height": "size"})
    entries = checker.unique(checker.unique(entries, "images", "id", "image id"), "images", "file_name", "file_name")
    if not data["images"]:
        checker.add("images", f"dataset '{checker.name}' lists no images", "add the images to 'images'")
    if entries and not checker.image_dir.is_dir():
        checker.report.add(
            checker.image_dir,
            f"image folder of dataset '{checker.name}' does not exist",
            f"put the images listed in {checker.json_path.name} into {checker.image_dir}",
        )
        entries_ok: list[tuple[int, dict, Path]] = []
    else:
        entries_ok = [(i, e, p) for i, e in entries if (p := checker.image_file(i, e)) is not None]
    sizes = {}
    for index, entry, path in entries_ok:
        if checker.image_size(index, entry, path, check_images, max_pixels):
            sizes[entry["id"]] = (entry["width"], entry["height"])
    per_image = checker.annotations(data, categories, sizes)
    checker.unlisted({path for _, _, path in entries_ok})
    category_ids = sorted(categories)
    items = []
    for _index, entry, path in entries_ok:
        if entry["id"] not in sizes:
            continue
        image = {key: entry[key] for key in ("id", "file_name", "width", "height")}
        target = {"image": image, "annotations": per_image.get(entry["id"], []), "category_ids": category_ids}
        items.append(Item(path=path, target=json.dumps(target, separators=(",", ":")), dataset=checker.name))
    return categories, items


def _compare_categories(found: dict[str, tuple[_Checker, dict[int, str]]], report: Report) -> None:
    """Every dataset must define the same categories (same ids and names) as the first one."""
    if not found:
        return
    (first_checker, reference), *others = found.values()
    by_name = {v: k for k, v in reference.items()}
    for checker, categories in others:
        if categories == reference:
            continue
        missing = sorted(set(reference.values()) - set(categories.values()))
        extra = sorted(set(categories.values()) - set(reference.values()))
        diffs = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"extra {', '.join(extra)}"] if extra else []
        )
        diffs += [
            f"'{v}' has id {k} here but {by_name[v]} there"
            for k, v in categories.items()
            if v in by_name and by_name[v] != k
        ]
        checker.add(
            "categories",
            f"categories differ from {first_checker.json_path.name}: {'; '.join(diffs)}",
            "use the same category list (ids and names) in every dataset's annotation file",
        )


def scan_coco(
    root: str | os.PathLike,
    datasets: list[str],
    check_images: bool = True,
    clip_boxes: bool = False,
    max_pixels: int = MAX_PIXELS,
) -> tuple[list[Item], list[str], Report]:
    """Scan ``<root>/annotations/<dataset>.json`` + ``<root>/images/<dataset>/`` for every dataset.

    Returns ``(items, classes, report)``: one item per usable image (negatives included), sorted by
    (dataset, file name); the category names ordered by category id; every problem found.
    """
    root = Path(root)
    report = Report()
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        report.add(
            root,
            f"data root folder {what}",
            "check data.root; a detection root holds annotations/<dataset>.json and images/<dataset>/",
        )
        return [], [], report
    seen: dict[str, str] = {}
    checkers = []
    for name in datasets:
        stem = dataset_stem(name)
        if not stem or stem in (".", "..") or "/" in stem or "\\" in stem:
            report.add(
                root / LAYOUT.annotation_path(name).rsplit("/", 1)[0] / name,
                f"dataset name {name!r} is not a single file name",
                "name the dataset after its annotation file, e.g. sl_train or sl_train.json",
            )
        elif stem in seen:
            report.add(
                root / LAYOUT.annotation_path(stem),
                f"dataset '{stem}' is listed twice ('{seen[stem]}' and '{name}')",
                "list each dataset only once",
            )
        else:
            seen[stem] = name
            checkers.append(_Checker(root, name, report, clip_boxes))
    found: dict[str, tuple[_Checker, dict[int, str]]] = {}
    items: list[Item] = []
    for checker in checkers:
        result = _scan_one(checker, check_images, max_pixels)
        if result is not None:
            found[checker.name] = (checker, result[0])
            items += result[1]
    _compare_categories(found, report)
    reference = next(iter(found.values()))[1] if found else {}
    classes = [reference[k] for k in sorted(reference)]
    items.sort(key=lambda item: (item.dataset, decode_target(item.labelled_target())["image"]["file_name"]))
    return items, classes, report


def scan(params: Any, datasets: list[str], check_images: bool = True) -> tuple[list[Item], list[str], Report]:
    """The task's scan: :func:`scan_coco` under ``data.root``, clipping boxes if ``detection.clip_boxes``."""
    return scan_coco(
        Path(params.data.root), datasets, check_images=check_images, clip_boxes=params.detection.clip_boxes
    )
