"""What a layout scan yields: one :class:`Item` per usable file.

Why a tiny frozen dataclass: items travel from the scanner to splitting, training and reports;
being immutable and hashable they can be de-duplicated, sorted and used as dict keys safely.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Item:
    """One sample: the file, its target (class name; None when unlabelled), the dataset it came
    from, and an optional group (e.g. patient id) so that splits can keep a group together."""

    path: Path
    target: str | None
    dataset: str
    group: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (path as string) for manifests and reports."""
        return {"path": str(self.path), "target": self.target, "dataset": self.dataset, "group": self.group}

    def labelled_target(self) -> str:
        """The target of an item that must have one (a mask path, a COCO record); ValueError if it has none."""
        if self.target is None:
            raise ValueError(f"{self.path}: no target (the item is unlabelled)")
        return self.target
