"""Leak check: the images of a layout and the image -> group mapping."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dermdl.image_keys import ImageKeyed
from dermdl.images import is_ignored, is_image_file
from dermdl.io import CSV_ENCODING_FIX, NotUtf8Error, read_utf8
from dermdl.layout.report import Report

# --- images of a layout, groups ------------------------------------------------------------------------

VARIANT_NAMES = (
    "as is",
    "mirrored left-right",
    "rotated 90 degrees",
    "rotated 90 degrees and mirrored",
    "rotated 180 degrees",
    "flipped upside down",
    "rotated 270 degrees",
    "rotated 270 degrees and mirrored",
)


def detect_task(root: str | os.PathLike, datasets: Sequence[str]) -> str:
    """Guess the layout of ``root``: the most specific task layout whose folders are there."""
    from dermdl.tasks import detect_layout

    return detect_layout(Path(root), list(datasets))


def image_folder(root: str | os.PathLike, task: str, dataset: str) -> Path:
    """The folder that holds one dataset's images in the task's layout."""
    from dermdl.tasks import get_task

    layout = get_task(task).layout
    return Path(root) / layout.image_dir(layout.dataset_name(dataset))


def _walk(folder: Path) -> list[Path]:
    """Image files below ``folder`` (recursively, hidden/system entries skipped), in code-point order."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not is_ignored(d))
        found += [Path(dirpath) / f for f in filenames if not is_ignored(f) and is_image_file(f)]
    return sorted(found, key=lambda p: p.as_posix())


def dataset_images(root: str | os.PathLike, task: str, dataset: str) -> list[Path] | None:
    """The images of one dataset of a layout; None when its image folder does not exist."""
    folder = image_folder(root, task, dataset)
    return _walk(folder) if folder.is_dir() else None


class Groups(ImageKeyed[str]):
    """Image -> group id (lesion or patient), read from a CSV with columns ``path`` (or ``image``) and
    ``group``; rows are matched to images by :class:`dermdl.image_keys.ImageKeyed`'s rules."""

    def __init__(self, mapping: dict[str, str], source: str) -> None:
        super().__init__(mapping)
        self.source = source

    def __len__(self) -> int:
        return len(self.by_path)

    @classmethod
    def read(cls, path: str | os.PathLike, report: Report) -> Groups | None:
        """Read a groups CSV; problems (missing file or columns, empty ids) go to ``report``."""
        path = Path(path)
        if not path.is_file():
            report.add(
                path,
                "groups file does not exist",
                "give the CSV that maps images to lesion/patient ids (columns path, group), or remove "
                "data.groups / --groups",
            )
            return None
        try:
            text = read_utf8(path)
        except NotUtf8Error as exc:
            report.add(f"{path}:{exc.line}", str(exc), CSV_ENCODING_FIX)
            return None
        with io.StringIO(text, newline="") as handle:
            reader = csv.DictReader(handle)
            fields = {(f or "").strip().lower(): f for f in reader.fieldnames or []}
            key = fields.get("path") or fields.get("image")
            group = fields.get("group")
            if key is None or group is None:
                report.add(
                    path,
                    f"groups file has columns {sorted(fields)}, needs 'path' (or 'image') and 'group'",
                    "add a header line 'path,group' (path relative to the data root)",
                )
                return None
            mapping: dict[str, str] = {}
            for line, row in enumerate(reader, start=2):
                image, gid = (row.get(key) or "").strip(), (row.get(group) or "").strip()
                if not image:
                    report.add(f"{path}:{line}", "row has no image path", "fill in the path or delete the row")
                elif gid:
                    mapping[image] = gid
        return cls(mapping, str(path))


def groups_of(params: Any, sources: Sequence[str]) -> list[str] | None:
    """Lesion/patient id of each image (``sources`` relative to data.root), from data.groups or
    ``<root>/groups.csv``; an image without one is its own group. None when no groups are known."""
    root = Path(params.data.root)
    path = Path(params.data.groups) if params.data.groups else root / "groups.csv"
    if not path.is_file():
        return None
    problems = Report()
    table = Groups.read(path, problems)
    if table is None:
        raise ValueError("\n".join(problems.lines()))
    found = [table.get(root / source, root) for source in sources]
    if not any(found):
        return None
    return [group if group else f"#image:{source}" for group, source in zip(found, sources)]
