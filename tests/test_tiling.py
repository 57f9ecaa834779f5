"""Large images by tiles: the grid covers with the fewest tiles, blending has no seams, tiled segmentation
agrees with whole-image prediction, classification aggregates, detection merges duplicates."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dermdl.models import ModelConfig
from dermdl.params import ParamsError, params_from_dict
from dermdl.tasks.classification.model import build_classifier
from dermdl.tasks.classification.tiled import tile_probabilities
from dermdl.tasks.detection.tiled import merge_tiles
from dermdl.tasks.segmentation.model import build_unet
from dermdl.tasks.segmentation.tiled import predict_image
from dermdl.tiling import aggregate, cut_tile, gaussian_weights, sliding_window, tile_grid, tile_starts


@pytest.mark.parametrize(
    ("length", "tile", "overlap", "expected"),
    [
        (100, 100, 0.0, [0]),
        (60, 100, 0.5, [0]),
        (200, 100, 0.0, [0, 100]),
        (201, 100, 0.0, [0, 50, 101]),  # 3 tiles are the fewest that cover 201 px
        (300, 100, 0.5, [0, 50, 100, 150, 200]),
        (250, 100, 0.25, [0, 75, 150]),
    ],
)
def test_tile_starts_by_hand(length, tile, overlap, expected):
    assert tile_starts(length, tile, overlap) == expected


@pytest.mark.parametrize("length", [33, 100, 511, 512, 513, 4000, 6000])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
def test_grid_covers_with_the_requested_overlap_and_no_fewer_tiles_would(length, overlap):
    tile = 128
    starts = tile_starts(length, tile, overlap)
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s : s + tile] = True
    assert covered.all() and starts[-1] + min(tile, length) == length
    gaps = np.diff(starts)
    assert (gaps <= math.floor(tile * (1 - overlap))).all()  # neighbours share at least the overlap
    if len(starts) > 2:  # one tile fewer would need a wider stride than the overlap allows
        assert (length - tile) / (len(starts) - 2) > math.floor(tile * (1 - overlap))


def test_bad_tile_settings_are_refused_naming_the_key():
    with pytest.raises(ParamsError, match="tile_size"):
        params_from_dict({"infer": {"tile_size": 16}})
    with pytest.raises(ParamsError, match="tile_overlap"):
        params_from_dict({"infer": {"tile_overlap": 0.9}})
    with pytest.raises(ParamsError, match="tile_aggregate"):
        params_from_dict({"infer": {"tile_aggregate": "median"}})
    assert params_from_dict({"infer": {"tile_size": 512}}).infer.tile_size == 512


def test_weights_peak_in_the_centre_and_never_vanish():
    w = gaussian_weights(64)
    assert w.argmax() in (31, 32) and np.allclose(w, w[::-1]) and w.min() > 0


def _pixelwise(windows: np.ndarray) -> np.ndarray:
    """A per-pixel 'network': its whole-image output is known exactly."""
    x = windows.astype(np.float32)
    return np.stack([x[..., 0] * 0.5 + x[..., 2], np.sqrt(x[..., 1] + 1.0)], axis=1)


@pytest.mark.parametrize(
    ("height", "width", "tile", "overlap"), [(97, 131, 32, 0.5), (64, 64, 64, 0.0), (20, 45, 32, 0.25)]
)
def test_blended_tiles_reproduce_a_per_pixel_function_exactly(height, width, tile, overlap):
    """Any seam, double count or missed pixel would show here: blending is a weighted mean of equal values."""
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    expected = _pixelwise(image[None])[0]
    out = sliding_window(image, tile, overlap, _pixelwise, channels=2, bs=3)
    assert out.shape == (2, height, width)
    np.testing.assert_allclose(out, expected, rtol=1e-5)


def test_small_images_are_mirrored_to_a_full_tile():
    image = np.arange(12).reshape(3, 4)
    tile = cut_tile(image, 0, 0, 6)
    assert tile.shape == (6, 6) and (tile[:3, :4] == image).all() and tile[3, 0] == image[1, 0]


# --- segmentation: a real U-Net trained for a few steps on synthetic lesions -----------------------------


def _scene(rng: np.random.Generator, height: int, width: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:height, :width]
    image, mask = np.zeros((height, width, 3)) + rng.uniform(150, 220, 3), np.zeros((height, width), bool)
    for _ in range(n):
        cy, cx, ry, rx = (
            rng.uniform(0, height),
            rng.uniform(0, width),
            rng.uniform(6, height / 3),
            rng.uniform(6, width / 3),
        )
        disc = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        mask |= disc
        image[disc] = rng.uniform(40, 110, 3)
    return np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8), mask


def _normalise(images: np.ndarray, config: ModelConfig) -> torch.Tensor:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    return (x - torch.tensor(config.mean).view(1, 3, 1, 1)) / torch.tensor(config.std).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def unet() -> tuple[torch.nn.Module, ModelConfig]:
    """A U-Net that segments the synthetic lesions (Dice ~0.97 against the truth): an untrained one calls
    nearly every pixel foreground, which would make the agreement test trivially pass."""
    torch.manual_seed(0)
    model, (mean, std) = build_unet("efficientnet_lite0", 2, 64, pretrained=True)
    config = ModelConfig(
        task="segmentation", arch="efficientnet_lite0", classes=["skin", "lesion"], input_size=64,
        mean=list(mean), std=list(std), preprocess_size=64, resize="squish",
    )  # fmt: skip
    rng = np.random.default_rng(0)
    optimiser = torch.optim.Adam(model.parameters(), 1e-3)
    model.train()
    for _ in range(40):
        images, masks = zip(*[_scene(rng, 64, 64, 2) for _ in range(8)])
        loss = F.cross_entropy(model(_normalise(np.stack(images), config)), torch.from_numpy(np.stack(masks)).long())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval(), config


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


@pytest.mark.parametrize("overlap", [0.25, 0.5])
def test_tiled_segmentation_agrees_with_the_whole_image(unet, overlap):
    model, config = unet
    image, truth = _scene(np.random.default_rng(5), 160, 224, 3)
    with torch.no_grad():
        whole = torch.softmax(model(_normalise(image[None], config)), 1)[0].numpy().argmax(0).astype(bool)
    assert _dice(whole, truth) > 0.9  # the model really segments (else agreement says nothing)
    tiled = predict_image(model, config, image, tile=64, overlap=overlap).argmax(0).astype(bool)
    assert _dice(tiled, whole) >= 0.99


def test_tiles_larger_than_the_input_are_resized_like_patches(unet):
    """A 128-px tile of a 2x upscaled image is the 64-px training geometry: the mask is the 2x mask."""
    model, config = unet
    image, _ = _scene(np.random.default_rng(6), 96, 128, 2)
    small = predict_image(model, config, image, tile=64, overlap=0.5).argmax(0).astype(bool)
    big = predict_image(model, config, image.repeat(2, 0).repeat(2, 1), tile=128, overlap=0.5).argmax(0).astype(bool)
    assert big.shape == (192, 256)
    assert _dice(big[::2, ::2], small) >= 0.97


# --- classification: tiles aggregated -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("probs", "how", "expected"),
    [
        ([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8]], "mean", [0.6, 0.4]),
        ([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8]], "max", [0.9 / 1.7, 0.8 / 1.7]),
        ([[1.0, 0.0]], "max", [1.0, 0.0]),
    ],
)
def test_aggregate_by_hand(probs, how, expected):
    np.testing.assert_allclose(aggregate(np.array(probs), how), expected)


def test_unknown_aggregate_names_the_key():
    with pytest.raises(ValueError, match="infer.tile_aggregate"):
        aggregate(np.ones((2, 2)) / 2, "median")


def _tiny_classifier() -> tuple[torch.nn.Module, ModelConfig]:
    """A seeded 3-class classifier at 32 px in eval mode, and its config."""
    torch.manual_seed(0)
    model, (mean, std) = build_classifier("efficientnet_lite0", 3, pretrained=False)
    config = ModelConfig(
        task="classification", arch="efficientnet_lite0", classes=["a", "b", "c"], input_size=32,
        mean=list(mean), std=list(std), preprocess_size=32, resize="squish",
    )  # fmt: skip
    return model.eval(), config


def test_classifier_tile_probabilities_are_each_tile_classified_alone():
    model, config = _tiny_classifier()
    image = np.random.default_rng(1).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    tiles = tile_probabilities(model, config, image, tile=32, overlap=0.0, bs=4, tta="none")
    assert tiles.shape == (len(tile_grid(64, 96, 32)), 3)
    with torch.no_grad():
        third = torch.softmax(model(_normalise(image[None, 0:32, 64:96], config)), 1)[0].numpy()
    np.testing.assert_allclose(tiles[2], third, atol=1e-5)  # row 0, column 64


# --- detection: boxes from overlapping tiles merged -----------------------------------------------------


def test_a_lesion_on_a_tile_border_is_reported_once_in_image_pixels():
    # tiles of 100 px at columns 0 and 60: a lesion at x 70..90 is seen by both, in their own pixels
    left = {"boxes": [[70, 10, 90, 30], [5, 5, 15, 15]], "scores": [0.8, 0.6], "labels": [0, 1]}
    right = {"boxes": [[10.5, 10, 30.5, 30]], "scores": [0.9], "labels": [0]}
    other_class = {"boxes": [[10, 10, 30, 30]], "scores": [0.7], "labels": [1]}
    merged = merge_tiles([left, right, other_class], [(0, 0), (0, 60), (0, 60)])
    np.testing.assert_allclose(
        merged["boxes"], [[70.5, 10, 90.5, 30], [70, 10, 90, 30], [5, 5, 15, 15]]
    )  # the duplicate (0.8) went; a different class at the same place stays
    np.testing.assert_allclose(merged["scores"], [0.9, 0.7, 0.6])
    assert merged["labels"].tolist() == [0, 1, 1]


# --- dermdl predict --tile-size: the masks written are the tiled prediction at the original resolution ---


def test_predict_command_writes_tiled_masks_at_the_original_resolution(unet, tmp_path):
    from PIL import Image

    from dermdl.cli import main
    from dermdl.images import open_mask
    from dermdl.models import save_model
    from dermdl.tasks.segmentation.data import ValueMap, config_value_map

    model, config = unet
    values = ValueMap(params_from_dict({"task": "segmentation"}).segmentation.value_map(), 2).to_json()
    config = ModelConfig(**{**config.__dict__, "extra": {"mask_values": values}})
    save_model(model, config, tmp_path / "model")
    image, _ = _scene(np.random.default_rng(7), 150, 210, 3)
    (tmp_path / "photos").mkdir()
    Image.fromarray(image).save(tmp_path / "photos" / "big.png")
    out = tmp_path / "out" / "pred.csv"
    argv = ["predict", "--model", str(tmp_path / "model"), str(tmp_path / "photos"), "--out", str(out)]
    assert main([*argv, "--tile-size", "64", "--tile-overlap", "0.5", "--tta", "none"]) == 0
    written = open_mask(tmp_path / "out" / "pred" / "masks" / "big.png")
    expected = predict_image(model, config, image, tile=64, overlap=0.5).argmax(0).astype(np.uint8)
    assert written.shape == (150, 210)
    assert (written == config_value_map(config).to_stored(expected)).mean() > 0.999  # float16 ties aside
    assert main([*argv, "--tile-size", "16"]) != 0  # refused with one line, like infer.tile_size


def test_tiled_prepared_images_are_mapped_to_the_original_like_whole_ones(unet, tmp_path):
    """infer's path: tiles of a prepared (square) image; the writer maps the masks to the recorded original
    size as it does for whole-image predictions."""
    from dermdl.images import open_mask
    from dermdl.tasks.segmentation.data import ValueMap, config_value_map, to_original
    from dermdl.tasks.segmentation.tiled import predict_tiled
    from dermdl.tasks.segmentation.writer import write_predictions
    from dermdl.tiling import Tiles

    model, config = unet
    values = ValueMap(params_from_dict({"task": "segmentation"}).segmentation.value_map(), 2).to_json()
    config = ModelConfig(**{**config.__dict__, "preprocess_size": 128, "extra": {"mask_values": values}})
    prepared, _ = _scene(np.random.default_rng(8), 128, 128, 2)
    (pred,) = predict_tiled(model, config, [prepared], 4, "none", Tiles(64, 0.5))
    assert pred.full is not None and pred.full.shape == (2, 128, 128) and pred.probs.shape == (2, 64, 64)
    from PIL import Image

    Image.fromarray(prepared).resize((300, 200)).save(tmp_path / "a.png")  # the overlay draws the original
    record = {"source": str(tmp_path / "a.png"), "width": 300, "height": 200}
    write_predictions([record], [pred], config, tmp_path, "p")
    expected = to_original(pred.probs, 300, 200, 128, "squish").argmax(0).astype(np.uint8)
    assert (open_mask(tmp_path / "p" / "masks" / "a.png") == config_value_map(config).to_stored(expected)).all()
    # the model-space view agrees with the full-resolution probabilities it was drawn from
    assert _dice(pred.probs.argmax(0).astype(bool), pred.full[:, ::2, ::2].argmax(0).astype(bool)) > 0.95


@pytest.mark.parametrize("how", ["mean", "max"])
def test_classification_predict_tiled_aggregates_each_image(tmp_path, how):
    from PIL import Image

    from dermdl.tasks.classification.tiled import predict_tiled
    from dermdl.tiling import Tiles

    model, config = _tiny_classifier()
    rng = np.random.default_rng(2)
    paths = []
    for i, shape in enumerate([(64, 96, 3), (40, 40, 3)]):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    probs = predict_tiled(model, config, paths, 4, "none", Tiles(32, 0.0, how))
    for path, row in zip(paths, probs):
        tiles = tile_probabilities(model, config, np.asarray(Image.open(path)), 32, 0.0, 4, "none")
        np.testing.assert_allclose(row, aggregate(tiles, how), atol=1e-6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_detection_predict_tiled_maps_each_tile_back_and_suppresses_duplicates():
    """A real (untrained-head) detector with a low score threshold: every merged box is one of the tiles'
    boxes shifted by its tile's corner, inside the image, and no two boxes of a class overlap above the
    merge IoU."""
    from torchvision.ops import box_iou

    from dermdl.tasks import get_task
    from dermdl.tasks.detection.predict import predict
    from dermdl.tasks.detection.tiled import MERGE_IOU, predict_tiled
    from dermdl.tiling import Tiles

    torch.manual_seed(0)
    detector = "fasterrcnn_efficientnet_lite0_fpn"
    config = ModelConfig(
        task="detection", arch="efficientnet_lite0", classes=["melanoma", "nevus"], input_size=64,
        mean=[0.5] * 3, std=[0.5] * 3, preprocess_size=64, resize="squish",
        extra={"detection": {"model": detector, "score_threshold": 0.01, "clip_boxes": False}},
    )  # fmt: skip
    model, _ = get_task("detection").build_model(config, True)
    model.eval()
    image, _ = _scene(np.random.default_rng(9), 96, 128, 3)
    (result,) = predict_tiled(model, config, [image], 4, "none", Tiles(64, 0.5))["images"]
    assert (result["width"], result["height"]) == (128, 96) and len(result["boxes"]) > 0
    shifted = []
    for r, c in tile_grid(96, 128, 64, 0.5):
        (tile,) = predict(model, config, [image[r : r + 64, c : c + 64]], 1, "none")["images"]
        shifted += [b + np.array([c, r, c, r], dtype=np.float32) for b in tile["boxes"]]
    for box in result["boxes"]:
        assert min(np.abs(np.asarray(shifted) - box).max(axis=1)) < 1e-3
    assert (result["boxes"][:, :2] >= 0).all() and (result["boxes"][:, 2] <= 128).all()
    for label in np.unique(result["labels"]):
        same = torch.from_numpy(result["boxes"][result["labels"] == label])
        iou = box_iou(same, same).fill_diagonal_(0)
        assert float(iou.max()) <= MERGE_IOU


# --- patches: names and annotations cut with the pixels --------------------------------------------------


@pytest.mark.parametrize(
    ("stem", "row", "col", "name"), [("ISIC_1", 512, 1024, "ISIC_1__r0512_c1024"), ("a__b", 0, 7, "a__b__r0000_c0007")]
)
def test_patch_names_round_trip(stem, row, col, name):
    from dermdl.patches import parse_patch_name, patch_name

    assert patch_name(stem, row, col) == name and parse_patch_name(name) == (stem, row, col)


def test_a_name_that_is_no_patch_is_refused():
    from dermdl.patches import parse_patch_name

    with pytest.raises(ValueError, match="not a patch name"):
        parse_patch_name("ISIC_1")


@pytest.mark.parametrize(
    ("xyxy", "row", "col", "expected"),
    [
        ((10, 10, 50, 50), 0, 0, (10, 10, 50, 50)),  # inside
        ((80, 10, 120, 50), 0, 0, (80, 10, 100, 50)),  # half visible: kept, clipped
        ((80, 10, 120, 50), 0, 60, (20, 10, 60, 50)),  # the neighbour patch sees all of it, in its pixels
        ((95, 10, 135, 50), 0, 0, None),  # 1/8 visible: dropped
        ((200, 200, 210, 210), 0, 0, None),  # outside
    ],
)
def test_boxes_are_clipped_to_the_patch_and_slivers_dropped(xyxy, row, col, expected):
    from dermdl.patches import clip_box

    got = clip_box(xyxy, row, col, 100, min_visible=0.25)
    assert got == (None if expected is None else pytest.approx(expected))


def test_a_concave_polygon_split_by_the_border_keeps_both_visible_parts():
    from shapely.geometry import Polygon

    from dermdl.patches import clip_polygon

    u_shape = [(80, 0), (140, 0), (140, 60), (120, 60), (120, 20), (100, 20), (100, 60), (80, 60)]  # an arch
    parts = clip_polygon(u_shape, 30, 0, 200, min_visible=0.25)  # rows 30+: the two legs, 1200 of 2800 px^2
    assert sorted(Polygon(p).bounds for p in parts) == [(80, 0, 100, 30), (120, 0, 140, 30)]  # patch pixels
    assert clip_polygon(u_shape, 50, 0, 200, min_visible=0.25) == []  # 400 of 2800 px^2 visible
