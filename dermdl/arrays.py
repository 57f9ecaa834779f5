"""Prepared images as one uint8 array per dataset, so a training batch is a gather, not N decodes.

The preprocess stage writes ``<prepared>/<dataset>/arrays/images.npy`` (n, size, size, 3): the
resized images themselves (no per-image PNG copies since prepared format 3) and, for tasks with
spatial targets, ``targets.npy`` (n, size, size) of class ids. Manifest record ``row`` is the
record's index in both. Training memory-maps them (``np.load(mmap_mode="r")``): pages are shared
between DDP ranks and the OS page cache, and a dataset larger than RAM still works (an encrypted
run, ``data.encrypted``, writes each array as a Fernet token and decrypts it into RAM instead:
dermdl.crypto.outputs). Inference on
prepared test sets reads the same rows (:class:`PreparedImages`).

Why: on a 2-core machine PNG decoding and per-image warps in the training process cost about half
of each step, and PNG encoding two thirds of preprocessing (issue 10).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from dermdl import crypto
from dermdl.crypto.outputs import load_array, save_array
from dermdl.records import Record

if TYPE_CHECKING:  # torch is imported where a batch is gathered: predicting with ONNX Runtime reads records too
    import torch

FORMAT = 3  # of the prepared folder; part of preprocess's fingerprint (bump when its content changes)
ARRAYS = "arrays"
IMAGES = "images.npy"
TARGETS = "targets.npy"
PIXELS: Final = "pixels"  # key of a freshly prepared record that carries its resized image to the parent


def arrays_dir(prepared: Path, dataset: str) -> Path:
    return prepared / dataset / ARRAYS


def prepared_root(record: Record) -> Path:
    """The prepared folder a manifest record belongs to (its arrays are ``<root>/<dataset>/arrays``)."""
    return Path(record["arrays"]).parent.parent


class ImageRows:
    """Rows of one dataset's ``images.npy`` being written, in manifest order."""

    def __init__(self, prepared: Path, dataset: str, count: int, size: int):
        folder = arrays_dir(prepared, dataset)
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / IMAGES
        shape = (count, size, size, 3)
        # encrypted run: rows stay in memory and the file is written once, as a token (dermdl.crypto.outputs)
        self.array = (
            np.zeros(shape, np.uint8)
            if crypto.encrypted()
            else np.lib.format.open_memmap(self.path, mode="w+", dtype=np.uint8, shape=shape)
        )
        self.count = 0

    def add(self, record: Record) -> Record:
        """Store the record's pixels and return a copy numbered (``row``) without them."""
        self.array[self.count] = record[PIXELS]
        numbered: Record = {**record, "row": self.count}
        del numbered[PIXELS]
        self.count += 1
        return numbered

    def close(self) -> None:
        if isinstance(self.array, np.memmap):
            self.array.flush()
        else:
            save_array(self.path, self.array)
        del self.array


def _fill(npy: str, start: int, records: list[Record], load: Callable[[Record], np.ndarray]) -> None:
    """Worker job: compute a chunk of target maps into rows ``start ...`` of an open .npy file."""
    array = np.load(npy, mmap_mode="r+")
    for offset, record in enumerate(records):
        array[start + offset] = load(record)
    array.flush()


def write_targets(
    prepared: Path,
    dataset: str,
    records: Sequence[Record],
    size: int,
    workers: int,
    target: Callable[[Record], np.ndarray],
) -> None:
    """Stack ``target(record)`` class-id maps of one dataset into ``targets.npy`` (worker processes:
    ``target`` must be picklable)."""
    from dermdl.prepare import run_parallel

    npy = arrays_dir(prepared, dataset) / TARGETS
    located: list[Record] = [{**r, "arrays": str(arrays_dir(prepared, dataset))} for r in records]
    if crypto.encrypted():  # no clear file to fill: compute the maps here, write one token
        maps = np.zeros((len(records), size, size), np.uint8)
        for row, record in enumerate(located):
            maps[row] = target(record)
        save_array(npy, maps)
        return
    np.lib.format.open_memmap(npy, mode="w+", dtype=np.uint8, shape=(len(records), size, size)).flush()
    chunk = max(64, -(-len(records) // (workers * 4)))
    run_parallel(
        _fill,
        [(str(npy), start, located[start : start + chunk], target) for start in range(0, len(records), chunk)],
        workers,
    )


class ArrayStore:
    """Rows of several datasets' arrays, addressed by position in a list of records."""

    def __init__(self, records: Sequence[Record], name: str = IMAGES):
        self.arrays: list[np.ndarray] = []
        index: dict[str, int] = {}
        parts, rows = [], []
        for record in records:
            path = str(Path(record["arrays"]) / name)
            if path not in index:
                index[path] = len(self.arrays)
                self.arrays.append(load_array(path))  # memory-mapped, or decrypted into RAM
            parts.append(index[path])
            rows.append(record["row"])
        self.part, self.rows = np.asarray(parts, dtype=np.int64), np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, positions: Any) -> torch.Tensor:
        """uint8 tensor of the given records' rows (one gather per dataset array)."""
        import torch

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


class PreparedImages(Sequence):
    """The prepared images of some records as a sequence of (size, size, 3) uint8 arrays: what a task's
    ``predict`` accepts in place of file paths (no decoding, the pixels training saw)."""

    def __init__(self, records: Sequence[Record]):
        self.store = ArrayStore(records) if records else None
        self.n = len(records)
        self.records = records  # whose images these are (image + metadata models look up their table rows)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return list(self.store.take(list(range(self.n))[index]).numpy()) if self.store else []
        if self.store is None or not -self.n <= index < self.n:  # no store: no records
            raise IndexError(index)
        return self.store.take([index % self.n])[0].numpy()


def image_of(record: Record) -> np.ndarray | str:
    """A record's image for display: its prepared pixels, or (new images) the source file."""
    if "arrays" in record and "row" in record:
        return PreparedImages([record])[0]
    return record["source"]
