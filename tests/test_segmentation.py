"""Segmentation task pieces: mask values, geometry alignment, params, model, losses, prediction files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dermdl.images import open_mask
from dermdl.models import ModelConfig, load_model, save_model
from dermdl.params import ParamsError, params_from_dict
from dermdl.tasks import get_task
from dermdl.tasks.segmentation.data import MaskTarget, ValueMap, prepare_item, to_original
from dermdl.tasks.segmentation.losses import SegmentationLoss
from dermdl.tasks.segmentation.model import build_unet, timm_encoder
from dermdl.tasks.segmentation.predict import SegPrediction, write_predictions

TASK = get_task("segmentation")
DEFAULT = params_from_dict({"task": "segmentation"}).segmentation
H, W = 30, 40
LESION = np.zeros((H, W), bool)
LESION[5:20, 10:32] = True


def _palette(indices: np.ndarray) -> Image.Image:
    image = Image.frombytes("P", (indices.shape[1], indices.shape[0]), indices.astype(np.uint8).tobytes())
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [77] * (768 - 9))  # index 1 is drawn red
    return image


MASK_STORAGES = {
    "0_255": lambda m: Image.fromarray(np.where(m, 255, 0).astype(np.uint8)),
    "0_1": lambda m: Image.fromarray(m.astype(np.uint8)),
    "palette": lambda m: _palette(m),
    "one_bit": lambda m: Image.fromarray(np.where(m, 255, 0).astype(np.uint8)).convert("1"),
    "16_bit_0_1": lambda m: Image.fromarray(m.astype(np.uint16)),
    "grey_rgb_0_255": lambda m: Image.fromarray(np.where(m, 255, 0).astype(np.uint8)).convert("RGB"),
}


def _prepare(
    tmp_path: Path, name: str, image: Image.Image, mask: Image.Image, size: int = 16, policy: str = "squish"
) -> dict:
    src = tmp_path / "src" / name
    (src / "images").mkdir(parents=True)
    (src / "masks").mkdir()
    image.save(src / "images" / "x.png")
    mask.save(src / "masks" / "x.png")
    prepared = tmp_path / "prepared"
    record = prepare_item(
        src / "images" / "x.png", f"{name}/images/x.png", str(src / "masks" / "x.png"), prepared, size, policy
    )
    return record | {"arrays": str(prepared / name / "arrays"), "dataset": name}


def test_0_255_0_1_and_palette_masks_give_identical_targets(tmp_path):
    """The training target of a pair goes image -> prepare_item -> MaskTarget (the fastai get_y)."""
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8))
    get_y = MaskTarget(ValueMap(DEFAULT.value_map(), 2).to_json(), 2)
    targets = {}
    for name, store in MASK_STORAGES.items():
        record = _prepare(tmp_path, name, image, store(LESION), size=H)
        targets[name] = get_y(record)
        # the full-resolution copy gives the same classes too
        full = ValueMap(DEFAULT.value_map(), 2).to_classes(open_mask(tmp_path / "prepared" / record["mask_full"]))
        assert np.array_equal(full, LESION)
    expected = targets["0_255"]
    assert expected.dtype == np.uint8 and set(np.unique(expected)) == {0, 1}
    for name, target in targets.items():
        assert np.array_equal(target, expected), name


@pytest.mark.parametrize(
    "codes, mapping, stored, classes, written",
    [
        (("skin", "lesion"), None, [0, 255, 1], [0, 1, 1], [0, 255]),
        (("skin", "lesion"), {0: 0, 1: 1}, [0, 1], [0, 1], [0, 1]),
        (("skin", "lesion"), {0: 0, 128: 1}, [128, 0], [1, 0], [0, 128]),
        (("other", "skin", "eczema"), None, [0, 1, 2], [0, 1, 2], [0, 1, 2]),
        (("other", "skin", "eczema"), {0: 0, 100: 1, 200: 2, 255: 0}, [255, 100, 200, 0], [0, 1, 2, 0], [0, 100, 200]),
        (("bg", "fg"), {0: 0, 1000: 1}, [1000, 0], [1, 0], [0, 1000]),
    ],
    ids=["default_0_255", "explicit_0_1", "custom_0_128", "multiclass_identity", "multiclass_custom", "16_bit"],
)
def test_value_map_both_ways(codes, mapping, stored, classes, written):
    seg = params_from_dict({"segmentation": {"codes": list(codes), "mask_values": mapping}}).segmentation
    vmap = ValueMap(seg.value_map(), len(codes))
    assert vmap.to_classes(np.array(stored)).tolist() == classes
    assert vmap.to_stored(np.arange(len(codes))).tolist() == written  # the first value listed per class
    assert vmap.to_stored(vmap.to_classes(np.array(written))).tolist() == written
    assert ValueMap([tuple(p) for p in json.loads(json.dumps(vmap.to_json()))], len(codes)).pairs == vmap.pairs


def test_value_map_refuses_unknown_values_naming_the_file():
    vmap = ValueMap({0: 0, 255: 1}, 2)
    with pytest.raises(ValueError, match=r"m\.png: pixel values \[7, 300\] are not in segmentation.mask_values"):
        vmap.to_classes(np.array([0, 7, 300]), "m.png")
    with pytest.raises(ValueError, match=r"\[7\]"):
        vmap.to_classes(np.array([0, 7, 255]), "m.png")


# (id, segmentation params, message fragment)
BAD_PARAMS = [
    ("one_code", {"codes": ["lesion"]}, "at least two class names"),
    ("duplicate_codes", {"codes": ["skin", "skin"]}, "must be unique"),
    ("slash_in_code", {"codes": ["skin", "a/b"]}, "contain no '/'"),
    ("empty_mask_values", {"mask_values": {}}, "mask_values is empty"),
    ("class_id_too_large", {"mask_values": {0: 0, 255: 2}}, "class ids [2] do not exist"),
    ("negative_class_id", {"mask_values": {0: -1, 255: 1}}, "class ids [-1] do not exist"),
    ("stored_value_too_large", {"mask_values": {0: 0, 70000: 1}}, "stored values [70000] are outside 0..65535"),
    ("class_without_value", {"codes": ["a", "b", "c"], "mask_values": {0: 0, 1: 1}}, "no stored value maps to"),
    ("not_a_mapping", {"mask_values": [0, 255]}, "mask_values"),
    ("unknown_loss", {"loss": "lovasz"}, "segmentation.loss"),
    ("weights_wrong_length", {"class_weights": [1.0]}, "class_weights has 1 values but codes has 2"),
    ("negative_weight", {"class_weights": [1.0, -2.0]}, "finite, >= 0 and not all 0"),
    ("all_zero_weights", {"class_weights": [0, 0]}, "not all 0"),
    ("unknown_key", {"mask_value": {0: 0}}, "unknown key"),
]


@pytest.mark.parametrize("section, message", [c[1:] for c in BAD_PARAMS], ids=[c[0] for c in BAD_PARAMS])
def test_bad_segmentation_params_are_refused(section, message):
    with pytest.raises(ParamsError) as info:
        params_from_dict({"task": "segmentation", "segmentation": section})
    assert message in str(info.value) and "segmentation" in str(info.value)


def test_default_value_maps():
    assert DEFAULT.value_map() == {0: 0, 255: 1, 1: 1}
    three = params_from_dict({"segmentation": {"codes": ["other", "skin", "eczema"]}}).segmentation
    assert three.value_map() == {0: 0, 1: 1, 2: 2}


def _blobs(width: int, height: int) -> np.ndarray:
    """Three off-centre blobs of different sizes inside the central square (kept by every policy)."""
    yy, xx = np.mgrid[0:height, 0:width]
    side, x0, y0 = min(width, height), (width - min(width, height)) / 2, (height - min(width, height)) / 2
    out = np.zeros((height, width), bool)
    for cx, cy, r in ((0.3, 0.35, 0.14), (0.7, 0.3, 0.09), (0.55, 0.72, 0.18)):
        out |= (xx - (x0 + cx * side)) ** 2 + (yy - (y0 + cy * side)) ** 2 < (r * side) ** 2
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / (a | b).sum()


def _centroid(a: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(a)
    return np.array([xs.mean(), ys.mean()])


@pytest.mark.parametrize("width, height", [(120, 80), (80, 120), (100, 100)], ids=["wide", "tall", "square"])
@pytest.mark.parametrize("policy", ["squish", "pad", "crop"])
def test_mask_and_image_stay_aligned_under_every_resize_policy(tmp_path, policy, width, height):
    """The image draws the mask in white: after preprocessing both must still coincide, and a perfect
    prediction mapped back to the original resolution must give the original mask back."""
    lesion = _blobs(width, height)
    image = Image.fromarray(np.repeat(np.where(lesion, 255, 0).astype(np.uint8)[..., None], 3, axis=2))
    record = _prepare(tmp_path, "ds", image, Image.fromarray(np.where(lesion, 255, 0).astype(np.uint8)), 48, policy)
    prepared_image = np.asarray(Image.fromarray(record["pixels"]).convert("L")) > 127
    prepared_mask = open_mask(tmp_path / "prepared" / record["target"]) == 255
    assert prepared_image.shape == prepared_mask.shape == (48, 48)
    assert (record["width"], record["height"]) == (width, height)
    assert _iou(prepared_image, prepared_mask) > 0.93
    assert np.abs(_centroid(prepared_image) - _centroid(prepared_mask)).max() < 0.35
    # back to the original resolution: a one-hot "prediction" in model space (input size 32)
    small = np.asarray(
        Image.fromarray(prepared_mask.astype(np.uint8) * 255).resize((32, 32), Image.Resampling.BILINEAR)
    )
    probs = np.stack([1 - small / 255.0, small / 255.0]).astype(np.float16)
    back = to_original(probs, width, height, 48, policy).argmax(axis=0) == 1
    assert back.shape == (height, width)
    assert _iou(back, lesion) > 0.9
    # a geometry bug (half-pixel convention, wrong offset) shifts by >= 0.5 model pixel; allow 0.25
    model_pixel = max(width, height) / 32
    assert np.abs(_centroid(back) - _centroid(lesion)).max() < 0.25 * model_pixel


def test_prepare_item_refuses_a_mask_of_another_size(tmp_path):
    image = Image.fromarray(np.zeros((H, W, 3), np.uint8))
    with pytest.raises(ValueError, match=r"mask is 10 x 10 pixels but its image .* is 40 x 30; run `dermdl validate`"):
        _prepare(tmp_path, "ds", image, Image.fromarray(np.zeros((10, 10), np.uint8)))


def test_prepared_record_layout(tmp_path):
    image = Image.fromarray(np.zeros((H, W, 3), np.uint8))
    record = _prepare(tmp_path, "ds", image, Image.fromarray(np.where(LESION, 255, 0).astype(np.uint8)))
    assert record["path"] == "ds/images/x.png" and record["target"] == "ds/masks/x.png"
    assert record["mask_full"] == "ds/masks_full/x.png" and record["mask_source"] == "ds/masks/x.png"
    assert record["source"] == "ds/images/x.png" and record["stratum"] is None
    assert open_mask(tmp_path / "prepared" / record["mask_full"]).shape == (H, W)
    assert set(np.unique(open_mask(tmp_path / "prepared" / record["target"]))) == {0, 255}  # stored values kept


def _config(**extra) -> ModelConfig:
    return ModelConfig(
        task="segmentation",
        arch="efficientnet_lite0",
        classes=["skin", "lesion"],
        input_size=64,
        mean=[0.5] * 3,
        std=[0.5] * 3,
        preprocess_size=64,
        resize="squish",
        extra={"mask_values": ValueMap(DEFAULT.value_map(), 2).to_json()} | extra,
    )


@pytest.mark.parametrize("size", [64, 72])
def test_unet_on_the_packaged_encoder(size):
    torch.manual_seed(0)
    model, (mean, std) = build_unet("efficientnet_lite0", 3, size, pretrained=True)
    assert mean == [0.5] * 3 and std == [0.5] * 3
    with torch.no_grad():
        out = model.eval()(torch.zeros(2, 3, size, size))
    assert tuple(out.shape) == (2, 3, size, size)
    body, head = TASK.splitter(model)
    everything = {id(p) for p in model.parameters()}
    assert {id(p) for p in body} | {id(p) for p in head} == everything and not {id(p) for p in body} & {
        id(p) for p in head
    }
    assert {id(p) for p in body} == {id(p) for p in model[0].parameters()}  # the encoder is the frozen body


def test_other_timm_encoders_work_and_unsuitable_ones_are_refused():
    model, _ = build_unet("resnet18", 2, 64, pretrained=False)
    with torch.no_grad():
        assert tuple(model.eval()(torch.zeros(1, 3, 64, 64)).shape) == (1, 2, 64, 64)
    import timm

    with pytest.raises(ValueError, match="cannot be used as a U-Net encoder.*efficientnet_lite0"):
        timm_encoder(timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0), "vit_tiny_patch16_224")


def test_model_round_trip_is_weights_only_and_keeps_the_value_convention(tmp_path):
    model, _ = TASK.build_model(_config(), pretrained=True)
    save_model(model, _config(), tmp_path / "model")
    loaded, config = load_model(tmp_path / "model")
    assert config.extra["mask_values"] == [[0, 0], [255, 1], [1, 1]]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), loaded(x), atol=1e-5)


def _logits_and_target(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, 5, 4, generator=g), torch.randint(0, 3, (2, 5, 4), generator=g)


def test_losses_match_independent_formulas():
    logits, target = _logits_and_target()
    probs = logits.softmax(1).numpy()
    onehot = np.eye(3)[target.numpy()].transpose(0, 3, 1, 2)
    ce = F.cross_entropy(logits, target)
    assert torch.isclose(SegmentationLoss("ce")(logits, target), ce)
    w = [0.5, 1.0, 3.0]
    assert torch.isclose(SegmentationLoss("ce", w)(logits, target), F.cross_entropy(logits, target, torch.tensor(w)))
    dice_c = [
        (2 * (probs[:, c] * onehot[:, c]).sum() + 1) / (probs[:, c].sum() + onehot[:, c].sum() + 1) for c in range(3)
    ]
    assert np.isclose(SegmentationLoss("dice")(logits, target).item(), 1 - np.mean(dice_c), atol=1e-6)
    assert np.isclose(SegmentationLoss("dice", w)(logits, target).item(), 1 - np.dot(w, dice_c) / sum(w), atol=1e-6)
    assert torch.isclose(SegmentationLoss("ce_dice")(logits, target), ce + SegmentationLoss("dice")(logits, target))
    p_t = np.take_along_axis(probs, target.numpy()[:, None], 1)[:, 0]
    focal = -((1 - p_t) ** 2) * np.log(p_t)
    assert np.isclose(SegmentationLoss("focal")(logits, target).item(), focal.mean(), atol=1e-6)
    w_t = np.array(w)[target.numpy()]
    assert np.isclose(SegmentationLoss("focal", w)(logits, target).item(), (w_t * focal).sum() / w_t.sum(), atol=1e-6)
    assert torch.isclose(SegmentationLoss("focal", gamma=0.0)(logits, target), ce)  # gamma 0 = CE


def test_losses_accept_fastai_tensor_types_and_reward_a_perfect_prediction():
    from fastai.torch_core import TensorBase
    from fastai.vision.core import TensorMask

    _, target = _logits_and_target()
    perfect = F.one_hot(target, 3).permute(0, 3, 1, 2).float() * 20
    for kind in ("ce", "dice", "ce_dice", "focal"):
        loss = SegmentationLoss(kind)(TensorBase(perfect), TensorMask(target))
        assert type(loss) is torch.Tensor and loss.item() < 1e-3, kind
    with pytest.raises(ValueError, match="unknown segmentation loss"):
        SegmentationLoss("lovasz")


def test_write_predictions_for_new_images_uses_original_size_and_stored_values(tmp_path):
    sources = []
    for i, (w, h) in enumerate([(40, 30), (25, 50)]):
        path = tmp_path / ("a" if i == 0 else "b") / "same name.jpg"
        path.parent.mkdir()
        Image.fromarray(np.full((h, w, 3), 120, np.uint8)).save(path)
        sources.append(path)
    probs = np.zeros((2, 64, 64), np.float16)
    probs[1, 10:40, 20:50] = 1
    probs[0] = 1 - probs[1]
    preds = [SegPrediction(probs, 40, 30), SegPrediction(probs, 25, 50)]
    csv = write_predictions([{"source": str(p)} for p in sources], preds, _config(), tmp_path / "out", "new")
    frame = pd.read_csv(csv)
    assert frame["mask"].tolist() == ["new/masks/same name.png", "new/masks/same name_2.png"]  # unique stems
    for row, (w, h) in zip(frame.itertuples(), [(40, 30), (25, 50)]):
        mask = open_mask(tmp_path / "out" / row.mask)
        assert mask.shape == (h, w) and set(np.unique(mask)) == {0, 255}
        overlay = Image.open(tmp_path / "out" / row.overlay)
        assert overlay.size == (64 * 2 + 2, 64)  # image | prediction (no truth for new images)
    assert not any(c.startswith(("dice_", "cm_")) for c in frame.columns)
    assert np.isclose(frame["area_lesion"] + frame["area_skin"], 1).all()


@pytest.mark.parametrize("policy, box", [("squish", [0, 0, 16, 16]), ("pad", [0, 2, 16, 14]), ("crop", [0, 0, 16, 16])])
def test_padding_is_background_even_when_0_is_not_a_stored_value(tmp_path, policy, box):
    """Masks stored as 1 = skin / 2 = lesion: the black padding (stored 0) must become class 0, not an error."""
    image = Image.fromarray(np.zeros((H, W, 3), np.uint8))
    record = _prepare(tmp_path, "ds", image, Image.fromarray(np.where(LESION, 2, 1).astype(np.uint8)), 16, policy)
    assert record["content_box"] == box
    get_y = MaskTarget([[1, 0], [2, 1]], 2)
    classes = get_y(record)
    x0, y0, x1, y1 = box
    assert classes.shape == (16, 16) and (classes[:y0] == 0).all() and (classes[y1:] == 0).all()
    stored = open_mask(tmp_path / "prepared" / record["target"])[y0:y1, x0:x1]
    assert np.array_equal(classes[y0:y1, x0:x1], (stored == 2).astype(np.uint8))
