"""Classification data: the manifest record of one image and the training/validation batches.

Why here: the target of a classification item is its class folder's name, kept as-is in the record
(``target`` and ``stratum``, so splits stratify by class); the batches come from the shared arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from dermdl.arrays import PIXELS
from dermdl.prepare import prepare_image
from dermdl.records import Record


def prepare_item(
    source: Path, relative: str, target: str, dst_root: Path, size: int, policy: str, color_constancy: str = "none"
) -> Record:
    """Resize one image; the record is what later stages read (``pixels`` go into the dataset's array)."""
    width, height, pixels = prepare_image(source, size, policy, color_constancy)
    return {
        "path": relative,
        "source": relative,
        "target": target,
        "stratum": target,
        "width": width,
        "height": height,
        PIXELS: pixels,
    }


def dataloaders(train: Sequence[Record], valid: Sequence[Record], classes: list[str], all_params: Any, norm: Any):
    """Batches from the prepared arrays; flips/rotation/zoom/lighting on whole batches (dermdl.augment)."""
    from dermdl.batches import Labels, array_dataloaders, augmentation

    tabular = None
    if all_params.classification.metadata:  # image + metadata: the encoding model.json will carry
        import torch

        from dermdl.tasks.classification.tabular import fit_extra, record_rows

        config = SimpleNamespace(extra=fit_extra(all_params))

        def tabular(records: Sequence[Record]) -> torch.Tensor:
            return torch.from_numpy(record_rows(config, records))

    return array_dataloaders(
        train, valid, Labels, all_params, norm, augmentation(all_params.train), tabular=tabular, classes=classes
    )
