"""Prepared images as one uint8 array per dataset, so a training batch is a gather, not N decodes.

The preprocess stage writes, beside each dataset's prepared PNGs (which stay for people, galleries
and inference), ``<prepared>/<dataset>/arrays/images.npy`` (n, size, size, 3) and, for tasks with
spatial targets, ``targets.npy`` (n, size, size) of class ids. Manifest record ``row`` is the
record's index in both. Training memory-maps them (``np.load(mmap_mode="r")``): pages are shared
between DDP ranks and the OS page cache, and a dataset larger than RAM still works.

Why not decode the PNGs per batch: on a 2-core machine PNG decoding and per-image warps in the
training process cost about half of each step (issue 10).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = 2  # of the prepared folder; part of preprocess's fingerprint (bump when its content changes)
ARRAYS = "arrays"
IMAGES = "images.npy"
TARGETS = "targets.npy"


def arrays_dir(prepared: Path, dataset: str) -> Path:
    return prepared / dataset / ARRAYS


def _fill(npy: str, start: int, records: list[dict], load: Callable[[dict], np.ndarray]) -> None:
    """Worker job: decode a chunk of prepared files into rows ``start ...`` of an open .npy file."""
    array = np.load(npy, mmap_mode="r+")
    for offset, record in enumerate(records):
        array[start + offset] = load(record)
    array.flush()


def prepared_rgb(record: dict) -> np.ndarray:
    from PIL import Image

    with Image.open(record["abspath"]) as image:  # written by preprocess: 8-bit RGB, size x size
        return np.asarray(image.convert("RGB"))


def write_arrays(prepared: Path, dataset: str, records: Sequence[dict], size: int, workers: int,
                 target: Callable[[dict], np.ndarray] | None = None) -> None:
    """Stack one dataset's prepared images (and ``target(record)`` class-id maps) into .npy files;
    numbers the records (``row``). ``target`` must be picklable (it runs in worker processes)."""
    from dermdl.prepare import run_parallel

    folder = arrays_dir(prepared, dataset)
    folder.mkdir(parents=True, exist_ok=True)
    for offset, record in enumerate(records):
        record["row"] = offset
    located = [{**r, "abspath": str(prepared / r["path"])} for r in records]
    jobs: list[tuple[Path, Callable[[dict], np.ndarray], tuple[int, ...]]] = [
        (folder / IMAGES, prepared_rgb, (size, size, 3))]
    if target is not None:
        jobs.append((folder / TARGETS, target, (size, size)))
    chunk = max(64, -(-len(records) // (workers * 4)))
    for npy, load, shape in jobs:
        np.lib.format.open_memmap(npy, mode="w+", dtype=np.uint8, shape=(len(records), *shape)).flush()
        args = [(str(npy), start, located[start : start + chunk], load) for start in range(0, len(records), chunk)]
        run_parallel(_fill, args, workers)


class ArrayStore:
    """Rows of several datasets' arrays, addressed by position in a list of records."""

    def __init__(self, records: Sequence[dict], name: str = IMAGES):
        self.arrays: list[np.ndarray] = []
        index: dict[str, int] = {}
        parts, rows = [], []
        for record in records:
            path = str(Path(record["arrays"]) / name)
            if path not in index:
                index[path] = len(self.arrays)
                self.arrays.append(np.load(path, mmap_mode="r"))
            parts.append(index[path])
            rows.append(record["row"])
        self.part, self.rows = np.asarray(parts, dtype=np.int64), np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, positions: Any) -> torch.Tensor:
        """uint8 tensor of the given records' rows (one gather per dataset array)."""
        positions = np.asarray(positions, dtype=np.int64)
        if len(self.arrays) == 1:
            return torch.from_numpy(self.arrays[0][self.rows[positions]])
        first = self.arrays[self.part[positions[0]]] if len(positions) else self.arrays[0]
        out = np.empty((len(positions), *first.shape[1:]), dtype=first.dtype)
        for part, array in enumerate(self.arrays):
            mask = self.part[positions] == part
            if mask.any():
                out[mask] = array[self.rows[positions[mask]]]
        return torch.from_numpy(out)
