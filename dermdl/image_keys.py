"""Per-image tables (groups.csv, metadata.csv): how a row is found for an image.

Why one place: the leak check's groups, the subgroup and metadata-model tables and predict's --metadata
must match an image the same way, or an image would have a group but no metadata. A key with a folder
(``sl_train/nevus/a.jpg``) matches the path relative to the data root or the absolute path; a bare file
name (``a.jpg``) matches every image of that name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Generic, TypeVar

V = TypeVar("V")


class ImageKeyed(Generic[V]):
    """Values keyed by image path or bare file name."""

    def __init__(self, mapping: dict[str, V]) -> None:
        self.by_path = {k: v for k, v in mapping.items() if "/" in k or "\\" in k}
        self.by_name = {k: v for k, v in mapping.items() if k not in self.by_path}

    def get(self, path: Path, root: Path) -> V | None:
        try:
            rel: str | None = path.relative_to(root).as_posix()
        except ValueError:
            rel = None
        for key in (rel, path.as_posix()):
            if key is not None and key in self.by_path:
                return self.by_path[key]
        return self.by_name.get(path.name)
