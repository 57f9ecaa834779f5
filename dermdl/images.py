"""The one place in dermdl that opens image files.

Why one place: every stage (layout scan, training, inference, segmentation masks) must agree on
what a "readable image" is and on how odd files are turned into pixels. If each stage called
``PIL.Image.open`` itself, a truncated JPEG could pass the dataset scan and crash training hours
later, or a 16-bit PNG could be read as white in one stage and as data in another.

It also holds the PNG writer (:func:`write_png`) for arrays dermdl writes as images: prepared and
predicted masks, overlays, converted layouts.

Rules implemented here:

* The decompression-bomb guard reads the size from the header (``Image.open`` is lazy) and refuses
  ``width * height > max_pixels`` BEFORE any pixel is decoded. Pillow's own bomb error is caught too.
* Images are fully decoded (``load()``) so truncated/corrupt files fail here, with a message naming
  the file, what is wrong and how to fix it, instead of deep inside a DataLoader worker.
* ``ImageFile.LOAD_TRUNCATED_IMAGES`` must stay False: if some library switched it on, truncated
  files would silently decode as grey padding. We switch it back off (with a warning).
* EXIF orientation is applied, because phone photos of lesions are often stored rotated.
* Conversion to 8-bit RGB: alpha (RGBA/LA/PA, or a ``transparency`` key) is composited on WHITE
  (a transparent background should look like paper, not like black skin); 16-bit integer modes
  (I;16*, I) are divided by 257, i.e. 0..65535 maps exactly onto 0..255 (full-scale rule, not
  per-image max, so that two exposures keep their relative brightness); float mode F is taken as
  0..1 when its maximum is <= 1, otherwise as 16-bit full scale. 16-bit RGB files are reduced to
  8 bit by Pillow itself on open.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from dermdl import crypto

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"})
MAX_PIXELS = 64_000_000

# Lower-case names of files/folders that operating systems and archivers create on their own.
IGNORED_NAMES = frozenset(
    {
        "thumbs.db",
        "ehthumbs.db",
        "ehthumbs_vista.db",
        "desktop.ini",
        "__macosx",
        "$recycle.bin",
        "system volume information",
        "icon\r",
    }
)

_REMOVE = "delete it or move it out of the dataset folder"
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "La", "RGBa"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})


class ImageError(ValueError):
    """An image that cannot be used, with the file, what is wrong and how to fix it."""

    def __init__(self, path: str | os.PathLike, problem: str, fix: str) -> None:
        self.path = str(path)
        self.problem = problem
        self.fix = fix
        super().__init__(f"{self.path}: {problem} — {fix}")

    def __reduce__(self):  # keeps the exception picklable (DataLoader workers, multiprocessing)
        return (type(self), (self.path, self.problem, self.fix))


def is_ignored(path: str | os.PathLike) -> bool:
    """True for hidden/system entries (``.DS_Store``, ``Thumbs.db``, ``__MACOSX`` ...).

    Only the last path component is looked at, so a dataset that itself lives under a hidden
    folder (``~/.cache/...``) is not ignored; folder walkers skip ignored folders instead of
    descending into them.
    """
    name = Path(path).name
    return name.startswith(".") or name.lower() in IGNORED_NAMES


def is_image_file(path: str | os.PathLike) -> bool:
    """Suffix test only (case-insensitive); the content is checked by :func:`check_image`."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _ensure_strict_truncation() -> None:
    """Switch ``LOAD_TRUNCATED_IMAGES`` back off if another library turned it on (see module doc)."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        warnings.warn(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES was True; dermdl sets it to False so that "
            "truncated image files are reported instead of silently padded with grey.",
            RuntimeWarning,
            stacklevel=3,
        )
        ImageFile.LOAD_TRUNCATED_IMAGES = False


def _too_large(path: Path, width: int, height: int, max_pixels: int) -> ImageError:
    limit_mp = max_pixels / 1e6
    return ImageError(
        path,
        f"image is {width} x {height} = {width * height / 1e6:.1f} megapixels, above the limit of "
        f"{limit_mp:g} megapixels (decompression-bomb guard)",
        f"downscale it below {limit_mp:g} megapixels, or {_REMOVE}",
    )


def _decode_failure(path: Path, exc: BaseException) -> ImageError:
    """Pillow's many exception types/messages -> "truncated" or "corrupt", both with a fix."""
    if "truncated" in str(exc).lower() or isinstance(exc, EOFError):
        what = "image data is truncated (the file was cut off, e.g. an interrupted copy or download)"
    else:
        what = f"image data is corrupt ({type(exc).__name__}: {exc})"
    return ImageError(path, what, f"copy or re-export the file again, or {_REMOVE}")


def image_source(path: str | os.PathLike) -> Path | io.BytesIO:
    """What to hand ``Image.open``: the file, or (``data.encrypted``) its content decrypted in memory —
    never a decrypted copy on disk. A missing key is one error for the run, not one per image."""
    path = Path(path)
    if not crypto.encrypted():
        return path
    key = crypto.process_key()
    try:
        return io.BytesIO(crypto.decrypt_bytes(key, path.read_bytes(), path))
    except ValueError:
        raise ImageError(
            path,
            "cannot be decrypted: wrong key, or the file was changed after encryption (tampered or corrupt)",
            f"check ${crypto.KEY_FILE_ENV} / ${crypto.KEY_ENV}, or restore the file from its encrypted original",
        ) from None


def _open_decoded(path: str | os.PathLike, max_pixels: int) -> Image.Image:
    """Open, size-check, fully decode and EXIF-transpose; every failure becomes an ImageError."""
    path = Path(path)
    _ensure_strict_truncation()
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageError(path, "file does not exist", "check the path") from None
    except OSError as exc:
        raise ImageError(
            path,
            f"cannot read the file ({exc.strerror or exc})",
            "check that it exists and that you have permission to read it",
        ) from None
    if path.is_dir():
        raise ImageError(path, "is a folder, not an image file", f"rename it or {_REMOVE}")
    if size == 0:
        raise ImageError(path, "file is empty (0 bytes)", f"re-export the file, or {_REMOVE}")
    source = image_source(path)
    try:
        with warnings.catch_warnings():
            # We apply our own (stricter, configurable) limit below; Pillow's hard error still counts.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(source)
    except Image.DecompressionBombError as exc:  # beyond Pillow's hard limit, its header size is
        found = re.search(r"\((\d+) pixels\)", str(exc))  # only in the message
        size_text = f"{int(found.group(1)) / 1e6:.1f} megapixels" if found else "too many pixels"
        raise ImageError(
            path,
            f"image has {size_text}, above the limit of {max_pixels / 1e6:g} megapixels (decompression-bomb guard)",
            f"downscale it below {max_pixels / 1e6:g} megapixels, or {_REMOVE}",
        ) from None
    except UnidentifiedImageError:
        raise ImageError(
            path,
            f"not a readable image: the content is corrupt or is not a {path.suffix or 'image'} file despite its name",
            f"re-export the file (e.g. as PNG or JPEG), or {_REMOVE}",
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
        raise _decode_failure(path, exc) from None
    with image:
        width, height = image.size
        if width <= 0 or height <= 0:
            raise ImageError(path, f"image has an invalid size {width} x {height}", f"re-export the file, or {_REMOVE}")
        if width * height > max_pixels:
            raise _too_large(path, width, height, max_pixels)
        try:
            image.load()
        except MemoryError:
            raise ImageError(path, "not enough memory to decode the image", f"downscale it, or {_REMOVE}") from None
        except Exception as exc:  # plugins raise OSError, ValueError, struct.error, IndexError ...
            raise _decode_failure(path, exc) from None
        try:
            out = ImageOps.exif_transpose(image)
        except Exception as exc:  # broken EXIF block
            raise ImageError(
                path, f"EXIF metadata is corrupt ({exc})", "re-export the file to rewrite its metadata"
            ) from None
        if out is None or out is image:
            out = image.copy()  # detach from the (closing) file handle
    return out


def _sixteen_to_eight(values: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255 by /257 (rounded, clipped); see module docstring for why full scale."""
    return np.clip(np.rint(values.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)


def _to_rgb(image: Image.Image, path: Path) -> Image.Image:
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        return Image.fromarray(_sixteen_to_eight(np.asarray(image)), "L").convert("RGB")
    if mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        scaled = values * 255.0 if values.size and values.max() <= 1.0 else values / 257.0
        return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode in _ALPHA_MODES or "transparency" in image.info:
        try:
            rgba = image.convert("RGBA")
        except (ValueError, OSError) as exc:
            raise ImageError(
                path, f"cannot convert pixel mode {mode} to RGB ({exc})", "re-export the file as 8-bit RGB"
            ) from None
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "RGB":
        return image
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageError(
            path, f"unsupported pixel mode {mode} ({exc})", "re-export the file as 8-bit RGB or grayscale"
        ) from None


def open_rgb(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Fully decoded, EXIF-transposed 8-bit RGB image, or ImageError saying what to do."""
    return _to_rgb(_open_decoded(path, max_pixels), Path(path))


def as_rgb(item: str | os.PathLike | np.ndarray) -> Image.Image:
    """An image file (opened with every check of :func:`open_rgb`) or prepared uint8 RGB pixels."""
    if isinstance(item, np.ndarray):
        return Image.fromarray(item, "RGB")
    return open_rgb(item)


def check_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> ImageError | None:
    """Same checks as :func:`open_rgb` (full decode + conversion), returned instead of raised."""
    try:
        open_rgb(path, max_pixels)
    except ImageError as exc:
        return exc
    return None


def open_mask(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """2-D array of the STORED values of a segmentation mask (never colours).

    Palette PNGs give their indices, L gives uint8 values, 16-bit gives uint16 values, mode "1"
    gives 0/1. RGB(A) masks are accepted only when all colour channels are equal (a grey image
    saved as RGB); a real colour mask is ambiguous, so it is refused rather than guessed.
    """
    path = Path(path)
    image = _open_decoded(path, max_pixels)
    mode = image.mode
    if mode in ("P", "L"):
        return np.array(image, dtype=np.uint8)
    if mode == "1":
        return np.array(image, dtype=np.uint8)  # bool -> 0/1
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.array(image).astype(np.uint16)
    if mode == "I":
        values = np.asarray(image)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ImageError(
                path, "mask values do not fit in 16 bits", "save the mask as an 8-bit or 16-bit single-channel PNG"
            )
        return values.astype(np.uint16)
    if mode in ("RGB", "RGBA", "LA"):
        values = np.asarray(image)
        channels = values[..., :3] if mode != "LA" else values[..., :1]
        if np.all(channels == channels[..., :1]):
            return np.ascontiguousarray(channels[..., 0], dtype=np.uint8)
        raise ImageError(
            path,
            f"mask is a colour ({mode}) image, so its class values are ambiguous",
            "save the mask as a single-channel (L or palette) PNG of class values",
        )
    raise ImageError(
        path,
        f"unsupported mask pixel mode {mode}",
        "save the mask as a single-channel (L or palette) PNG of class values",
    )


def write_png(path: str | os.PathLike, array: np.ndarray, compress_level: int = 6, atomic: bool = True) -> None:
    """uint8 2-D -> L, uint16 2-D -> I;16, (h, w, 3) uint8 -> RGB; written atomically unless the caller
    writes into a folder that is itself renamed into place when complete (``atomic=False``: no fsync).
    Every PNG written here is patient-derived (prepared masks, predicted masks/overlays): an encrypted run
    (``data.encrypted``) writes its Fernet token instead, which :func:`image_source` decrypts."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", compress_level=compress_level)
    from dermdl.crypto.outputs import write_output

    write_output(path, buffer.getvalue(), atomic)
