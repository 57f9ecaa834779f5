"""Atomic output writing: a stage either leaves a complete result or none at all.

Every file a stage writes goes through these helpers (write to a temporary sibling, then
``os.replace``), so an interrupted run never leaves a half-written file that looks complete.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dermdl.crypto import read_input


class NotUtf8Error(ValueError):
    """A text file that is not UTF-8: names the line, so the user can find the character."""

    def __init__(self, path: Path, line: int, byte: int) -> None:
        self.path, self.line = path, line
        super().__init__(f"line {line} is not UTF-8 text (byte {byte:#x})")


def read_utf8(path: str | os.PathLike) -> str:
    """UTF-8 text, a BOM (Windows, Excel's "CSV UTF-8") accepted; NotUtf8Error names the first bad line.
    Decrypted in memory when the run is encrypted (``data.encrypted``): layout CSVs are read here."""
    data = read_input(path)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise NotUtf8Error(Path(path), data[: exc.start].count(b"\n") + 1, data[exc.start]) from None


CSV_ENCODING_FIX = (
    're-save it as UTF-8 (Excel: "CSV UTF-8 (comma delimited)"; LibreOffice: character set Unicode (UTF-8))'
)


def is_inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """``path`` is ``folder`` or below it (links resolved): where writing would land among its files."""
    real, base = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    return real == base or base in real.parents


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


# Modes a normally created file/folder gets; mkstemp's 0600 would hide outputs from other users.
_UMASK = _umask()
_FILE_MODE = 0o666 & ~_UMASK
_DIR_MODE = 0o777 & ~_UMASK


LOW_DISK = 64 * 2**20  # below this much free space, a failed write is reported as a full disk


def _explain_full_disk(path: Path, exc: BaseException) -> None:
    """Writers fail cryptically on a full disk (torch.save: "unexpected pos ..."): name the place instead."""
    if not isinstance(exc, Exception):  # Ctrl-C and the like stay what they are
        return
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return
    if free < LOW_DISK:
        raise OSError(
            errno.ENOSPC,
            f"{path}: could not be written, the disk is full ({free / 2**20:.0f} MiB free; "
            f"{exc.__class__.__name__}: {exc}). Free space there or set out_dir to a larger disk; "
            "the previous complete file, if any, is unchanged",
        ) from exc


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        _explain_full_disk(path, exc)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n")


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to hand to a library that writes files itself (savefig, torch.save)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.fchmod(fd, _FILE_MODE)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        _explain_full_disk(path, exc)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Build a whole directory in a temporary sibling and swap it in only when complete.

    An existing directory at ``path`` is replaced; if the body raises, it is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp.chmod(_DIR_MODE)
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
