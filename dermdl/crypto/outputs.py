"""Patient-derived files a run writes (prepared arrays, predicted masks/overlays): encrypted when the run is.

With ``data.encrypted: true`` every stage writes pixels through this module, so nothing decrypted reaches
the disk: the file holds the Fernet token of the bytes it would otherwise hold, under the same name, and
the readers (:func:`load_array`, and :func:`dermdl.images.image_source` for PNGs) decrypt in memory.

Why whole-file Fernet tokens for the prepared ``.npy`` arrays too: one scheme, one key, tamper detection
for free. Cost: an array is decrypted whole into RAM (memory-mapping goes) and decrypting needs about
three times its size at the peak (token + plain bytes + the array): HAM10000 at 128 px (490 MB of pixels)
peaks near 2 GB. :data:`MAX_ARRAY_BYTES` refuses a prepared dataset above 4 GiB with one line rather than
swap; lower ``preprocess.size`` or split the dataset. DDP ranks each hold their own copy.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from dermdl.crypto import decrypt_bytes, encrypted, process_key

MAX_ARRAY_BYTES = 4 << 30  # one prepared dataset's pixels, decrypted whole into RAM (see the module docstring)


def write_output(path: str | os.PathLike, data: bytes, atomic: bool = True) -> None:
    """Write a patient-derived file: its bytes, or (encrypted run) their Fernet token."""
    from dermdl.io import atomic_write_bytes

    if encrypted():
        data = process_key().encrypt(data)
    if atomic:
        atomic_write_bytes(path, data)
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(data)


def save_array(path: str | os.PathLike, array: np.ndarray) -> None:
    """An ``.npy`` file of ``array`` (written into a folder renamed into place when complete)."""
    if array.nbytes > MAX_ARRAY_BYTES and encrypted():
        raise ValueError(
            f"{path}: {array.nbytes / 2**30:.1f} GiB of pixels is above the {MAX_ARRAY_BYTES >> 30} GiB an "
            "encrypted run decrypts into memory; lower preprocess.size or split the dataset (docs/encryption.md)"
        )
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    write_output(path, buffer.getvalue(), atomic=False)


def load_array(path: str | os.PathLike) -> np.ndarray:
    """A prepared array: memory-mapped when clear, decrypted into memory when the run is encrypted."""
    if not encrypted():
        return np.load(path, mmap_mode="r")
    plain = decrypt_bytes(process_key(), Path(path).read_bytes(), path)
    return np.load(io.BytesIO(plain), allow_pickle=False)
