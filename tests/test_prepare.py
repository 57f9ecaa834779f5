"""Resize policies: exact output size, mask values preserved, geometry consistent with pixels."""

import numpy as np
import pytest
from PIL import Image

from dermdl.prepare import geometry, prepare_image, resize, run_parallel

POLICIES = ["squish", "pad", "crop"]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("src_size", [(200, 150), (150, 200), (64, 64), (33, 501)])
def test_output_is_square_rgb(tmp_path, policy, src_size):
    src = tmp_path / "in.jpg"
    Image.new("RGB", src_size, (200, 120, 90)).save(src)
    width, height, pixels = prepare_image(src, 48, policy)
    assert (width, height) == src_size
    assert pixels.shape == (48, 48, 3) and pixels.dtype == np.uint8


@pytest.mark.parametrize("policy", POLICIES)
def test_mask_resize_keeps_label_values(policy):
    mask = np.zeros((150, 200), np.uint8)
    mask[30:100, 50:160] = 255
    mask[100:120, 10:30] = 2
    out = np.asarray(resize(Image.fromarray(mask), 64, policy, kind="mask"))
    assert set(np.unique(out)) <= {0, 2, 255}


@pytest.mark.parametrize("policy", POLICIES)
def test_geometry_maps_a_marked_pixel(policy):
    """A bright square drawn in the original lands where Geometry.to_prepared says it does."""
    image = np.zeros((150, 200, 3), np.uint8)
    image[60:90, 120:150] = 255
    out = np.asarray(resize(Image.fromarray(image), 100, policy))
    ys, xs = np.nonzero(out[..., 0] > 127)
    geo = geometry(200, 150, 100, policy)
    cx, cy = geo.to_prepared(135, 75)
    assert abs(xs.mean() - cx) < 1.5 and abs(ys.mean() - cy) < 1.5
    assert np.allclose(geo.to_original(*geo.to_prepared(12.5, 40.0)), (12.5, 40.0))


def test_source_is_never_modified(tmp_path):
    src = tmp_path / "photo.png"
    Image.new("RGB", (80, 60), (10, 20, 30)).save(src)
    before = (src.read_bytes(), src.stat().st_mtime_ns)
    prepare_image(src, 32, "pad")
    assert (src.read_bytes(), src.stat().st_mtime_ns) == before


def _square(x: int) -> int:
    return x * x


def test_run_parallel_keeps_order():
    args = [(i,) for i in range(20)]
    assert run_parallel(_square, args, workers=2) == [i * i for i in range(20)]
    assert run_parallel(_square, args, workers=1) == [i * i for i in range(20)]
