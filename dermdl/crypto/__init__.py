"""Encrypted datasets: keys, and decryption in memory for the readers of a layout.

Why Fernet (``cryptography.fernet``): it is what the thesis pipeline used, so its encrypted folders and
keys keep working, and it is authenticated (AES-128-CBC + HMAC-SHA256): a wrong key or a file changed
after encryption is detected before any byte is used, never silently decoded as noise. AES-GCM would be
faster and smaller, but gives no compatibility and needs nonce handling we would have to get right
ourselves. Cost: a token is base64 (files grow by about a third) and is decrypted whole in memory
(images are capped at 64 megapixels, so this stays bounded).

The key comes from ``--key-file FILE``, else ``DERMDL_KEY_FILE`` (a path), else ``DERMDL_KEY`` (the
key itself); never from params, so it cannot reach dvc.lock or the model folder. It is never printed.

``data.encrypted: true`` switches :func:`read_input` (used by dermdl.images and dermdl.io.read_utf8, the
readers of layout files) to decrypt in memory; the switch is the environment variable
``DERMDL_ENCRYPTED`` so worker processes inherit it, and the key is read once per process.
Folder commands (``dermdl encrypt`` / ``decrypt``) are in :mod:`dermdl.crypto.folders`; what an encrypted
run writes (prepared arrays, predicted masks, image galleries) goes through :mod:`dermdl.crypto.outputs`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

KEY_ENV, KEY_FILE_ENV, MODE_ENV = "DERMDL_KEY", "DERMDL_KEY_FILE", "DERMDL_ENCRYPTED"
MAKE_KEY = "create one with: dermdl keygen --out FILE"
_process_key: Fernet | None = None


def _fernet(key: bytes, origin: str) -> Fernet:
    from cryptography.fernet import Fernet

    try:
        return Fernet(key.strip())
    except ValueError:  # names where the key came from, never the value
        raise ValueError(f"{origin}: is not a dermdl/Fernet key (44 url-safe base64 characters); {MAKE_KEY}") from None


def load_key(key_file: str | os.PathLike | None = None) -> Fernet:
    """The key from ``key_file``, ``$DERMDL_KEY_FILE`` or ``$DERMDL_KEY`` (in that order); one line if none."""
    path = key_file or os.environ.get(KEY_FILE_ENV)
    if path:
        try:
            return _fernet(Path(path).read_bytes(), f"key file {path}")
        except FileNotFoundError:
            raise FileNotFoundError(f"key file {path}: does not exist; check the path or {MAKE_KEY}") from None
    value = os.environ.get(KEY_ENV)
    if value:
        return _fernet(value.encode("ascii", "replace"), f"environment variable {KEY_ENV}")
    raise ValueError(
        f"no encryption key: pass --key-file FILE, or set {KEY_FILE_ENV}=FILE or {KEY_ENV}=KEY; {MAKE_KEY}"
    )


def decrypt_bytes(fernet: Fernet, data: bytes, path: str | os.PathLike) -> bytes:
    """Plain bytes of one encrypted file, or one line naming it (wrong key and tampering look alike here)."""
    from cryptography.fernet import InvalidToken

    try:
        return fernet.decrypt(data)
    except InvalidToken:
        raise ValueError(
            f"{path}: cannot be decrypted: wrong key, or the file was changed after encryption (tampered or "
            "corrupt); check the key, or restore the file from its encrypted original"
        ) from None


def use_encrypted(encrypted: bool) -> None:
    """Set this process's (and its future workers') reading mode from ``data.encrypted``."""
    if encrypted:
        os.environ[MODE_ENV] = "1"
    else:
        os.environ.pop(MODE_ENV, None)


def encrypted() -> bool:
    return os.environ.get(MODE_ENV, "") not in ("", "0")


def process_key() -> Fernet:
    """The key of an encrypted run, read once per process (environment only: stages take no key flag)."""
    global _process_key
    if _process_key is None:
        _process_key = load_key()
    return _process_key


def read_input(path: str | os.PathLike) -> bytes:
    """A layout file's bytes: decrypted in memory when the run is encrypted, else as stored."""
    data = Path(path).read_bytes()
    return decrypt_bytes(process_key(), data, path) if encrypted() else data


def is_token(data: bytes) -> bool:
    """Does ``data`` look like a Fernet token (what an encrypted run writes in place of patient images)?"""
    return data.startswith(b"gAAAAA")
