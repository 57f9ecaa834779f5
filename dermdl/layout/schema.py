"""Where a layout keeps its files below the data root: one definition per layout.

Why: the checkers, the leak check, the importer, the demo generator and ``dermdl convert`` all read or
write the same ``<root>/<dataset>/...`` paths. Written out in each of them, one drifting copy is
enough to make the importer build a tree the checker then rejects. Each task declares its
:class:`LayoutSchema` once (in its ``layout.py``) and every reader and writer asks it.

Patterns are relative POSIX paths with the fields ``{dataset}``, ``{label}`` (class folder),
``{name}`` (file name) and ``{stem}`` (file name without suffix).
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

FIELDS = frozenset({"dataset", "label", "name", "stem"})


def _fields(pattern: str) -> list[str]:
    return [field for _, field, _, _ in string.Formatter().parse(pattern) if field]


@dataclass(frozen=True)
class LayoutSchema:
    """The path patterns of one layout; ``mask`` and ``annotations`` only where the layout has them."""

    image: str
    mask: str | None = None
    annotations: str | None = None

    def __post_init__(self) -> None:
        for pattern in (self.image, self.mask, self.annotations):
            if pattern is not None:
                unknown = set(_fields(pattern)) - FIELDS
                if unknown or pattern.startswith("/"):
                    raise ValueError(f"layout pattern {pattern!r}: relative path with fields {sorted(FIELDS)} only")
        if "{name}" not in self.image:
            raise ValueError(f"layout pattern {self.image!r}: the image path needs {{name}}")

    @property
    def class_folders(self) -> bool:
        """Images sit in one folder per class, so every class must exist in every dataset."""
        return "label" in _fields(self.image)

    def dataset_name(self, name: str) -> str:
        """A dataset named by its annotation file (``sl_train.json``) -> the dataset (``sl_train``)."""
        if self.annotations and self.annotations.endswith("{dataset}" + Path(self.annotations).suffix):
            suffix = Path(self.annotations).suffix
            if suffix and name.lower().endswith(suffix.lower()):
                return name[: -len(suffix)]
        return name

    def image_path(self, dataset: str, name: str, label: str = "") -> str:
        return self.image.format(dataset=dataset, label=label, name=name, stem=Path(name).stem)

    def image_dir(self, dataset: str) -> str:
        """The folder that holds all images of one dataset (class folders included)."""
        return _static_prefix(self.image, dataset)

    def mask_path(self, dataset: str, name: str) -> str:
        if self.mask is None:
            raise ValueError("this layout has no masks")
        return self.mask.format(dataset=dataset, name=name, stem=Path(name).stem, label="")

    def mask_dir(self, dataset: str) -> str:
        if self.mask is None:
            raise ValueError("this layout has no masks")
        return _static_prefix(self.mask, dataset)

    def annotation_path(self, dataset: str) -> str:
        if self.annotations is None:
            raise ValueError("this layout has no annotation files")
        return self.annotations.format(dataset=dataset)

    def required_dirs(self, dataset: str) -> list[str]:
        """Folders that must exist for one dataset to be in this layout (image, mask, annotation folders)."""
        patterns = [p for p in (self.image, self.mask, self.annotations) if p is not None]
        return sorted({_static_prefix(p, dataset) for p in patterns})

    @property
    def specificity(self) -> int:
        """How many fixed folder names the layout prescribes: a more specific layout is tried first."""
        patterns = [p for p in (self.image, self.mask, self.annotations) if p is not None]
        return len({part for p in patterns for part in p.split("/")[:-1] if not _fields(part)})

    def matches(self, root: Path, datasets: list[str]) -> bool:
        """Does ``root`` look like this layout? Its top-level folders exist and, where the layout has fixed
        folders inside a dataset folder (``<dataset>/images``), every dataset present has them."""
        patterns = [p for p in (self.image, self.mask, self.annotations) if p is not None]
        if not all((root / _static_prefix(p, None)).is_dir() for p in patterns):
            return False
        if not any(_nested(p) for p in patterns):
            return True
        present = [d for d in datasets if (root / _dataset_prefix(self.image, d)).is_dir()]
        return bool(present) and all((root / f).is_dir() for d in present for f in self.required_dirs(d))


def _static_prefix(pattern: str, dataset: str | None) -> str:
    """The folder part of ``pattern`` up to the first field other than ``{dataset}`` (with ``dataset``
    None: up to the first field at all)."""
    parts = []
    for part in pattern.split("/")[:-1]:
        fields = set(_fields(part))
        if fields - {"dataset"} or (fields and dataset is None):
            break
        parts.append(part.format(dataset=dataset))
    return "/".join(parts) or "."


def _dataset_prefix(pattern: str, dataset: str) -> str:
    """The folder part of ``pattern`` up to and including the one that names the dataset."""
    parts = []
    for part in pattern.split("/")[:-1]:
        parts.append(part.format(dataset=dataset))
        if "dataset" in _fields(part):
            break
    return "/".join(parts)


def _nested(pattern: str) -> bool:
    """A fixed folder name after the dataset's folder (``{dataset}/images/...``)."""
    parts = pattern.split("/")[:-1]
    seen = False
    for part in parts:
        fields = _fields(part)
        if seen and not fields:
            return True
        seen = seen or "dataset" in fields
    return False
