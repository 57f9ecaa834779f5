"""``dermdl import``: the import arguments (ImportSpec), table rows and small parsing helpers."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dermdl.layout.report import Report

MARKER = "import.json"

PRESETS: dict[str, dict[str, Any]] = {
    # HAM10000 metadata (../shared/data/ham10000/labels.csv): boxes are tight around the mask, x1/y1 exclusive.
    "ham10000": {
        "image": "image_file",
        "label": "dx",
        "group": "lesion_id",
        "mask": "mask_file",
        "boxes": ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"),
        "box_format": "xyxy",
    },
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
    layouts: tuple[str, ...] | None = None  # None: every layout the columns allow
    test_size: float = 0.2
    weak_size: float = 0.0
    seed: int = 0
    train_name: str = "sl_train"
    test_name: str = "sl_test"
    weak_name: str = "wl_train"
    single_class: str | None = None  # detection category for every box (default: the label)
    missing_group_alone: bool = False  # a missing group id (empty, NaN, N/A, -, ...) makes the row its own group
    copy: bool = False
    workers: int = 2
    preset: str | None = None
    # Every other column (age, sex, site, ...) goes to <layout>/metadata.csv for subgroup analysis.
    metadata: bool = True
    metadata_exclude: tuple[str, ...] = ()

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
            x0, y0, x1, y1 = self.boxes  # a list (JSON, a caller's) becomes the 4-tuple
            self.boxes = (x0, y0, x1, y1)
        self.metadata_exclude = tuple(self.metadata_exclude)

    def shares(self) -> dict[str, float]:
        return {
            self.train_name: 1 - self.test_size - self.weak_size,
            self.test_name: self.test_size,
            self.weak_name: self.weak_size,
        }

    def arguments(self) -> dict[str, Any]:
        """The arguments as recorded in import.json (paths as given)."""
        return {
            "csv": str(self.csv),
            "out": str(self.out),
            "preset": self.preset,
            "columns": {
                "image": self.image,
                "label": self.label,
                "group": self.group,
                "mask": self.mask,
                "boxes": list(self.boxes) if self.boxes else None,
            },
            "box_format": self.box_format,
            "images_root": str(self.images_root) if self.images_root else None,
            "layouts": list(self.layouts) if self.layouts else None,
            "test_size": self.test_size,
            "weak_size": self.weak_size,
            "seed": self.seed,
            "names": {"sl_train": self.train_name, "sl_test": self.test_name, "wl_train": self.weak_name},
            "single_class": self.single_class,
            "missing_group_alone": self.missing_group_alone,
            "copy": self.copy,
            "metadata": self.metadata,
            "metadata_exclude": list(self.metadata_exclude),
        }


@dataclass
class Row:
    """One usable CSV row."""

    line: int
    image: str  # as written in the CSV
    source: Path
    label: str
    group: str
    mask: Path | None = None
    box: tuple[float, float, float, float] | None = None  # x0, y0, x1, y1 (x1/y1 exclusive)
    name: str = ""  # output file name
    size: tuple[int, int] = (0, 0)
    mask_annotation: dict[str, Any] | None = None  # COCO bbox/area/segmentation from the mask
    dataset: str = ""
    extra: dict[str, str] = field(default_factory=dict)  # metadata columns carried as written


# --- reading and checking the table ---------------------------------------------------------------------


def _where(spec: ImportSpec, line: int) -> str:
    return f"{spec.csv}:{line}"


#: What spreadsheets write for "no value": never a real lesion/patient id (it would merge unrelated rows).
MISSING_TOKENS = frozenset({"", "nan", "na", "n/a", "null", "none", "-", "--", "?", "#n/a", "missing", "unknown"})


def is_missing(value: str) -> bool:
    return value.strip().lower() in MISSING_TOKENS


def has_control_characters(value: str) -> bool:
    return any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value)


def _safe_folder_name(name: str) -> bool:
    return (
        bool(name)
        and name not in (".", "..")
        and not name.startswith(".")
        and "/" not in name
        and "\\" not in name
        and not has_control_characters(name)
    )


def _dialect(sample: str) -> type[csv.Dialect] | csv.Dialect:
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        return csv.excel


def _line_of(where: str, spec: ImportSpec) -> int:
    """Line number of a problem location ``<csv>:<line>`` (0 for the table as a whole), for sorting."""
    prefix = f"{spec.csv}:"
    return int(where[len(prefix) :]) if where.startswith(prefix) and where[len(prefix) :].isdigit() else 0


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
