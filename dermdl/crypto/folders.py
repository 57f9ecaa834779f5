"""``dermdl keygen`` / ``encrypt`` / ``decrypt``: whole layout folders, written atomically.

An encrypted folder keeps every file name and relative path (so a layout's CSV/JSON still refer to
them) and replaces each file's content by its Fernet token; nothing else is added except
``.dermdl-encrypted``, a hidden marker holding an encrypted constant: it tells "wrong key" (marker fails)
apart from "this file was tampered with" (marker decrypts, file does not). Names, sizes and encryption
times are not hidden.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from dermdl.crypto import decrypt_bytes, load_key
from dermdl.io import atomic_dir, is_inside

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

MARKER = ".dermdl-encrypted"
_MARKER_TEXT = b"dermdl encrypted layout v1"


def keygen(out: str | os.PathLike) -> Path:
    """Write a new key readable by its owner only (0600); never overwrites (a lost key loses the data)."""
    from cryptography.fernet import Fernet

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise FileExistsError(
            f"{out}: already exists; a key is never overwritten (data encrypted with it would be lost) — "
            "choose another --out"
        ) from None
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)  # whatever the umask
        handle.write(Fernet.generate_key() + b"\n")
    return out


def check_key(fernet: Fernet, folder: str | os.PathLike) -> None:
    """Fail with one line if ``folder``'s marker shows the key is not the one it was encrypted with."""
    from cryptography.fernet import InvalidToken

    marker = Path(folder) / MARKER
    if not marker.is_file():
        return
    try:
        fernet.decrypt(marker.read_bytes())
    except InvalidToken:
        raise ValueError(
            f"{folder}: wrong key: this folder was encrypted with a different key (checked with {marker}); "
            "pass the key it was encrypted with"
        ) from None


def _files(src: Path) -> Iterator[Path]:
    """Every regular file below ``src`` (sorted, links followed for files), relative, marker excluded."""
    for root, dirs, names in os.walk(src):
        dirs.sort()
        for name in sorted(names):
            path = Path(root) / name
            if path.is_file() and not (name == MARKER and Path(root) == src):
                yield path.relative_to(src)


def _check_folders(src: Path, dst: Path) -> None:
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: is not a folder; pass the layout folder to encrypt or decrypt")
    if dst.exists():
        raise FileExistsError(f"{dst}: already exists; choose a new output folder (it is never overwritten)")
    if is_inside(dst, src) or is_inside(src, dst):
        raise ValueError(f"{dst}: is inside {src} (or contains it); choose an output folder outside the source")


def encrypt_folder(src: str | os.PathLike, dst: str | os.PathLike, fernet: Fernet) -> int:
    """Encrypt every file of ``src`` into the new folder ``dst`` (same names); ``src`` is only read."""
    src, dst = Path(src), Path(dst)
    _check_folders(src, dst)
    if (src / MARKER).exists():
        raise ValueError(f"{src}: is already encrypted ({MARKER} is there); encrypting it twice would not help")
    count = 0
    with atomic_dir(dst) as tmp:
        for rel in _files(src):
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(fernet.encrypt((src / rel).read_bytes()))
            count += 1
        (tmp / MARKER).write_bytes(fernet.encrypt(_MARKER_TEXT))
    return count


def decrypt_folder(src: str | os.PathLike, dst: str | os.PathLike, fernet: Fernet) -> int:
    """Decrypt every file of the encrypted folder ``src`` into the new folder ``dst``; all or nothing."""
    src, dst = Path(src), Path(dst)
    _check_folders(src, dst)
    check_key(fernet, src)
    count = 0
    with atomic_dir(dst) as tmp:
        for rel in _files(src):
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(decrypt_bytes(fernet, (src / rel).read_bytes(), src / rel))
            count += 1
    return count


def run_cli(command: str, src: str | None, dst: str | None, key_file: str | None, out: str | None) -> int:
    """``dermdl keygen|encrypt|decrypt``: one summary line; the key is never printed."""
    if command == "keygen":
        assert out is not None
        print(f"keygen: wrote a new key to {keygen(out)} (mode 0600); keep a copy in a safe place")
        return 0
    assert src is not None and dst is not None
    fernet = load_key(key_file)
    count = (encrypt_folder if command == "encrypt" else decrypt_folder)(src, dst, fernet)
    print(f"{command}: {count} files from {src} -> {dst}")
    return 0
