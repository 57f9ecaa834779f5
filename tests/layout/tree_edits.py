"""Building blocks for the layout case tables: each returns a function that edits a dataset tree."""

from __future__ import annotations

import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

Edit = Callable[[Path], None]


def png_bomb_bytes(w: int = 30000, h: int = 30000) -> bytes:
    """A valid 1-bit PNG of zeros: ~0.5 MB, ~0.1 s to build, 900 megapixels when decoded."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    row = b"\x00" * (1 + (w + 7) // 8)
    comp = zlib.compressobj(1)
    idat = b"".join([comp.compress(row * 1000) for _ in range(h // 1000)] + [comp.flush()])
    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def write(rel: str, data: bytes | str) -> Edit:
    def change(root: Path) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)

    return change


def truncate(rel: str) -> Edit:
    """Cut an existing file in half (a partially copied upload)."""

    def change(root: Path) -> None:
        data = (root / rel).read_bytes()
        (root / rel).write_bytes(data[: len(data) // 2])

    return change


def remove(rel: str) -> Edit:
    return lambda root: shutil.rmtree(root / rel) if (root / rel).is_dir() else (root / rel).unlink()


def steps(*changes: Edit) -> Edit:
    def change(root: Path) -> None:
        for c in changes:
            c(root)

    return change
