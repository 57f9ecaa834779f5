"""Byte-exact fingerprint of a folder: the catalogue tests assert that dermdl never changes the user's data."""

from __future__ import annotations

import hashlib
from pathlib import Path


def tree_digest(root: Path) -> str | None:
    """SHA-256 over every relative path and file content below ``root`` (None if it does not exist)."""
    if not root.exists():
        return None
    if root.is_file():
        return hashlib.sha256(root.read_bytes()).hexdigest()
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        if path.is_file() and not path.is_symlink():
            digest.update(path.read_bytes())
    return digest.hexdigest()
