"""dermdl.images: every bad file gives a clear ImageError; every good file gives 8-bit RGB.

Case tables (MONAI style): each case is (id, maker, expectation); makers write one file.
"""

from __future__ import annotations

import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from dermdl.images import (
    IMAGE_SUFFIXES,
    MAX_PIXELS,
    ImageError,
    check_image,
    is_ignored,
    is_image_file,
    open_mask,
    open_rgb,
)

RNG = np.random.default_rng(0)
PIXELS = RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8)  # h=48, w=64


def rgb(path: Path, fmt: str | None = None, **kw) -> None:
    Image.fromarray(PIXELS).save(path, fmt, **kw)


def truncated(fmt: str):
    def make(path: Path) -> None:
        rgb(path, fmt)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])

    return make


def png_bomb(path: Path, w: int = 30000, h: int = 30000) -> None:
    """A valid 1-bit PNG of w x h zeros: ~0.5 MB on disk, ~0.1 s to write, 900 MP decoded."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    row = b"\x00" * (1 + (w + 7) // 8)
    comp = zlib.compressobj(1)
    parts = [comp.compress(row * 1000) for _ in range(h // 1000)]
    parts += [comp.compress(row * (h % 1000)), comp.flush()]
    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")
    )


def flipped_png_body(path: Path) -> None:
    rgb(path, "PNG")
    data = bytearray(path.read_bytes())
    for i in range(100, len(data) - 20, 7):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


# (id, file name, maker, substring of problem, substring of fix)
BAD_CASES = [
    ("zero_byte", "a.jpg", lambda p: p.write_bytes(b""), "empty (0 bytes)", "re-export"),
    ("truncated_jpeg", "a.jpg", truncated("JPEG"), "truncated", "re-export"),
    ("truncated_png", "a.png", truncated("PNG"), "truncated", "re-export"),
    (
        "truncated_jpeg_header",
        "a.jpg",
        lambda p: (rgb(p), p.write_bytes(p.read_bytes()[:120])),
        "truncated",
        "re-export",
    ),
    ("truncated_tiff", "a.tif", truncated("TIFF"), "", "re-export"),
    (
        "random_bytes",
        "a.png",
        lambda p: p.write_bytes(RNG.bytes(600)),
        "not a readable image",
        "delete it or move it out of the dataset folder",
    ),
    ("corrupt_png_body", "a.png", flipped_png_body, "corrupt", "re-export"),
    ("text_named_jpg", "a.jpg", lambda p: p.write_text("not an image\n"), "not a .jpg file", "re-export"),
    ("png_named_jpg_cut", "a.jpg", truncated("PNG"), "truncated", "re-export"),
    ("bomb_30000x30000", "bomb.png", png_bomb, "900.0 megapixels", "downscale it below 64"),
    ("over_own_limit", "big.png", lambda p: png_bomb(p, 9000, 8000), "9000 x 8000", "downscale it below 64 megapixels"),
    ("missing", "nope.png", lambda p: None, "does not exist", "check the path"),
    ("directory", "dir.png", lambda p: p.mkdir(), "is a folder", "rename it"),
]


@pytest.mark.parametrize("name, make, problem, fix", [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES])
def test_bad_images_raise_clear_error(tmp_path, name, make, problem, fix):
    path = tmp_path / name
    make(path)
    with pytest.raises(ImageError) as info:
        open_rgb(path)
    err = info.value
    assert err.path == str(path) and problem in err.problem and fix in err.fix
    assert str(err) == f"{path}: {err.problem} — {err.fix}"
    returned = check_image(path)
    assert isinstance(returned, ImageError) and returned.problem == err.problem
    if path.suffix == ".png" and path.exists() and path.is_file():
        with pytest.raises(ImageError):
            open_mask(path)


def test_max_pixels_parameter(tmp_path):
    rgb(tmp_path / "a.png")
    assert check_image(tmp_path / "a.png", max_pixels=64 * 48) is None
    err = check_image(tmp_path / "a.png", max_pixels=100)
    assert err is not None and "64 x 48" in err.problem and MAX_PIXELS == 64_000_000


def test_load_truncated_images_flag_is_switched_off(tmp_path, monkeypatch):
    """Some libraries set LOAD_TRUNCATED_IMAGES=True globally; truncation must still be reported."""
    truncated("JPEG")(tmp_path / "a.jpg")
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.warns(RuntimeWarning, match="LOAD_TRUNCATED_IMAGES"):
        err = check_image(tmp_path / "a.jpg")
    assert err is not None and "truncated" in err.problem
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def _img(mode: str):
    """Maker: the test pixels converted to a Pillow mode and saved (format from the suffix)."""
    return lambda path: Image.fromarray(PIXELS).convert(mode).save(path)


def _array(values: np.ndarray):
    """Maker: a numpy array saved as is (dtype picks the mode: uint16 -> I;16, int32 -> I ...)."""
    return lambda path: Image.fromarray(values).save(path)


def _rgba_half_transparent(path: Path) -> None:
    arr = np.zeros((48, 64, 4), np.uint8)
    arr[..., 0] = 200
    arr[:, :32, 3] = 0  # left half fully transparent -> white
    arr[:, 32:, 3] = 255
    Image.fromarray(arr, "RGBA").save(path)


def _palette_transparent(path: Path) -> None:
    im = Image.new("P", (64, 48), 0)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * (254 * 3))
    im.paste(1, (32, 0, 64, 48))
    im.save(path, transparency=0)


def _la(path: Path) -> None:
    arr = np.zeros((48, 64, 2), np.uint8)
    arr[..., 0] = 10
    arr[:, 32:, 1] = 255
    Image.fromarray(arr, "LA").save(path)


def _rgb16(path: Path) -> None:
    cv2 = pytest.importorskip("cv2")
    assert cv2.imwrite(str(path), np.full((48, 64, 3), 65535, np.uint16))


GRAD16 = (np.arange(48 * 64, dtype=np.uint32).reshape(48, 64) * 21).astype(np.uint16)

# (id, file name, maker, check(array of output) -> bool)
GOOD_CASES = [
    *[
        (f"suffix{s}", f"img{s}", (lambda p: rgb(p)) if s != ".JPG" else (lambda p: rgb(p, "JPEG")), None)
        for s in [".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".JPG", ".PNG", ".TIF"]
    ],
    ("mode_1", "a.png", _img("1"), lambda a: set(np.unique(a)) <= {0, 255}),
    ("mode_L", "a.png", _img("L"), lambda a: (a[..., 0] == a[..., 1]).all()),
    ("mode_LA", "a.png", _la, lambda a: (a[0, 0] == 255).all() and (a[0, -1] == 10).all()),
    ("mode_P", "a.png", _img("P"), None),
    (
        "mode_P_transparency",
        "a.png",
        _palette_transparent,
        lambda a: (a[0, 0] == 255).all() and tuple(a[0, -1]) == (255, 0, 0),
    ),
    (
        "mode_RGBA_on_white",
        "a.png",
        _rgba_half_transparent,
        lambda a: (a[0, 0] == 255).all() and tuple(a[0, -1]) == (200, 0, 0),
    ),
    ("mode_CMYK_jpeg", "a.jpg", _img("CMYK"), None),
    ("mode_I16_png", "a.png", _array(GRAD16), lambda a: (a[..., 0] == np.rint(GRAD16 / 257)).all()),
    ("mode_I16_full_scale", "a.png", _array(np.full((48, 64), 65535, np.uint16)), lambda a: (a == 255).all()),
    ("mode_I32_tiff", "a.tif", _array(GRAD16.astype(np.int32)), lambda a: (a[..., 0] == np.rint(GRAD16 / 257)).all()),
    ("mode_F_tiff_unit", "a.tif", _array(np.full((48, 64), 0.5, np.float32)), lambda a: (a == 128).all()),
    ("rgb16_tiff", "a.tif", _rgb16, lambda a: (a == 255).all()),
    ("rgb16_png", "a.png", _rgb16, lambda a: (a == 255).all()),
    ("name_with_space_umlaut", "naevus ä 1.jpg", lambda p: rgb(p), None),
    ("name_cjk", "痣 2.png", lambda p: rgb(p), None),
]


@pytest.mark.parametrize("name, make, check", [c[1:] for c in GOOD_CASES], ids=[c[0] for c in GOOD_CASES])
def test_good_images_open_as_rgb8(tmp_path, name, make, check):
    path = tmp_path / name
    make(path)
    assert check_image(path) is None
    image = open_rgb(path)
    arr = np.asarray(image)
    assert image.mode == "RGB" and arr.dtype == np.uint8 and arr.shape == (48, 64, 3)
    if check is not None:
        assert check(arr)
    if path.suffix.lower() in (".png", ".bmp", ".tif", ".tiff") and name.startswith("img"):
        assert (arr == PIXELS).all()  # lossless formats keep the pixels exactly


def test_open_rgb_result_does_not_hold_the_file(tmp_path):
    rgb(tmp_path / "a.png")
    image = open_rgb(tmp_path / "a.png")
    (tmp_path / "a.png").unlink()
    assert (np.asarray(image) == PIXELS).all()


@pytest.mark.parametrize(
    "fmt, suffix", [("PNG", ".png"), ("JPEG", ".jpg"), ("WEBP", ".webp")], ids=["png", "jpeg", "webp"]
)
def test_exif_orientation_applied(tmp_path, fmt, suffix):
    """Orientation 6 = rotate 90° clockwise for display: 64x48 stored -> 48x64 shown,
    the red top-left block ends up top-right."""
    arr = np.zeros((48, 64, 3), np.uint8)
    arr[:16, :16] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / f"rot{suffix}"
    Image.fromarray(arr).save(path, fmt, exif=exif.tobytes(), **({"quality": 100} if fmt != "PNG" else {}))
    out = np.asarray(open_rgb(path)).astype(int)
    assert out.shape == (64, 48, 3)
    assert out[4, -5, 0] > 200 and out[4, -5, 1] < 60  # red now top-right
    assert out[4, 4, 0] < 60  # old position is black


# (id, maker, expected dtype, expected values)
MASK_CASES = [
    ("palette_indices", "palette", np.uint8, {0, 1, 2}),
    ("L_values", "L", np.uint8, {0, 255}),
    ("I16_values", "I16", np.uint16, {0, 1000, 40000}),
    ("one_bit", "1", np.uint8, {0, 1}),
    ("grey_saved_as_rgb", "RGB", np.uint8, {0, 255}),
]


def _write_mask(path: Path, kind: str) -> None:
    idx = np.zeros((20, 30), np.uint8)
    idx[:, 10:20], idx[:, 20:] = 1, 2
    if kind == "palette":
        im = Image.frombytes("P", (30, 20), idx.tobytes())
        im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 253 * 3)  # colours != indices
        im.save(path)
    elif kind == "L":
        Image.fromarray((idx > 0).astype(np.uint8) * 255).save(path)
    elif kind == "I16":
        Image.fromarray(np.choose(idx, [0, 1000, 40000]).astype(np.uint16)).save(path)
    elif kind == "1":
        Image.fromarray(idx > 0).save(path)
    else:
        Image.fromarray(np.repeat(((idx > 0) * 255).astype(np.uint8)[..., None], 3, 2)).save(path)


@pytest.mark.parametrize("kind, dtype, values", [c[1:] for c in MASK_CASES], ids=[c[0] for c in MASK_CASES])
def test_open_mask_returns_stored_values(tmp_path, kind, dtype, values):
    path = tmp_path / "mask.png"
    _write_mask(path, kind)
    mask = open_mask(path)
    assert mask.ndim == 2 and mask.shape == (20, 30) and mask.dtype == dtype
    assert set(np.unique(mask).tolist()) == values


def test_open_mask_refuses_colour_mask(tmp_path):
    Image.fromarray(PIXELS).save(tmp_path / "m.png")
    with pytest.raises(ImageError, match="colour"):
        open_mask(tmp_path / "m.png")


@pytest.mark.parametrize(
    "name, ignored",
    [
        (".DS_Store", True),
        ("Thumbs.db", True),
        ("thumbs.db", True),
        ("desktop.ini", True),
        ("__MACOSX", True),
        ("._naevus.jpg", True),
        (".hidden.png", True),
        ("naevus.jpg", False),
        ("notes.txt", False),
        ("a b ä.png", False),
    ],
    ids=lambda v: str(v),
)
def test_is_ignored(name, ignored):
    assert is_ignored(Path("/data/.cache/ds") / name) is ignored


@pytest.mark.parametrize(
    "name, ok",
    [
        *[(f"x{s}", True) for s in sorted(IMAGE_SUFFIXES)],
        ("x.JPG", True),
        ("x.Jpeg", True),
        ("x.TIFF", True),
        ("x.txt", False),
        ("x.gif", False),
        ("x", False),
        ("jpg", False),
    ],
    ids=lambda v: str(v),
)
def test_is_image_file(name, ok):
    assert is_image_file(name) is ok


def test_image_error_is_picklable_and_a_value_error():
    err = ImageError("/d/a.jpg", "file is empty (0 bytes)", "re-export the file")
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, ValueError)
    assert (back.path, back.problem, back.fix, str(back)) == (err.path, err.problem, err.fix, str(err))
