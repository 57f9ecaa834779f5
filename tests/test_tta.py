"""Test-time augmentation: views invert exactly, and TTA predictions ignore the image's orientation."""

import numpy as np
import pytest
import torch
from PIL import Image

from dermdl.inference import TTA_VIEWS, softmax_tta, unview, view
from dermdl.models import ModelConfig
from dermdl.params import params_from_dict
from dermdl.tasks import get_task
from dermdl.tasks.classification.model import build_classifier
from dermdl.tasks.segmentation.data import ValueMap
from dermdl.tasks.segmentation.model import build_unet

SIZE = 32
MASK_VALUES = ValueMap(params_from_dict({"task": "segmentation"}).segmentation.value_map(), 2).to_json()


@pytest.mark.parametrize("index", range(8))
def test_unview_inverts_view(index):
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    assert torch.equal(unview(view(x, index), index), x)


def test_the_eight_views_are_the_eight_symmetries_of_the_square():
    x = torch.arange(9, dtype=torch.float32).view(1, 1, 3, 3)  # no symmetry of its own
    views = {tuple(view(x, index).flatten().tolist()) for index in range(8)}
    assert len(views) == 8
    rotated = torch.rot90(x, 1, dims=(-2, -1))
    assert tuple(rotated.flatten().tolist()) in views


@pytest.mark.parametrize("tta", list(TTA_VIEWS))
def test_spatial_outputs_are_mapped_back_before_averaging(tta):
    """A per-pixel model commutes with every view: correct un-viewing leaves its output unchanged."""
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 2, kernel_size=1)
    x = torch.randn(2, 3, 5, 5)
    expected = torch.softmax(model(x), dim=1)
    assert torch.allclose(softmax_tta(model, x, tta, spatial=True), expected, atol=1e-6)


def test_unknown_tta_mode_is_named():
    with pytest.raises(ValueError, match="infer.tta='rot'"):
        softmax_tta(torch.nn.Identity(), torch.zeros(1, 3, 2, 2), "rot", spatial=False)


def _image_and_turned_copy(tmp_path):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8))
    image.save(tmp_path / "a.png")
    image.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "rotated.png")
    return [tmp_path / "a.png", tmp_path / "rotated.png"]


def test_dihedral_classification_does_not_depend_on_orientation(tmp_path):
    torch.manual_seed(0)
    model, (mean, std) = build_classifier("efficientnet_lite0", 3, pretrained=False)
    config = ModelConfig(
        task="classification",
        arch="efficientnet_lite0",
        classes=["a", "b", "c"],
        input_size=SIZE,
        mean=mean,
        std=std,
        preprocess_size=SIZE,
        resize="squish",
    )
    predict = get_task("classification").predict
    paths = _image_and_turned_copy(tmp_path)
    plain = predict(model, config, paths, 2, "none")
    assert np.abs(plain[0] - plain[1]).max() > 1e-3  # the model itself sees the rotation
    averaged = predict(model, config, paths, 2, "dihedral")
    np.testing.assert_allclose(averaged[0], averaged[1], atol=1e-5)
    np.testing.assert_allclose(averaged.sum(axis=1), 1.0, atol=1e-5)


def test_dihedral_segmentation_masks_turn_with_the_image(tmp_path):
    torch.manual_seed(0)
    model, (mean, std) = build_unet("efficientnet_lite0", 2, SIZE, pretrained=False)
    config = ModelConfig(
        task="segmentation",
        arch="efficientnet_lite0",
        classes=["skin", "lesion"],
        input_size=SIZE,
        mean=mean,
        std=std,
        preprocess_size=SIZE,
        resize="squish",
        extra={"mask_values": MASK_VALUES},
    )
    predict = get_task("segmentation").predict
    paths = _image_and_turned_copy(tmp_path)

    def turn(probs):  # PIL's ROTATE_90 is counter-clockwise
        return np.rot90(probs.astype(np.float32), 1, axes=(1, 2))

    plain = predict(model.eval(), config, paths, 2, "none")
    assert np.abs(turn(plain[0].probs) - plain[1].probs).max() > 1e-3
    averaged = predict(model, config, paths, 2, "dihedral")
    np.testing.assert_allclose(turn(averaged[0].probs), averaged[1].probs.astype(np.float32), atol=2e-3)  # float16


@pytest.mark.parametrize(
    "task, tta, ok",
    [
        ("classification", "dihedral", True),
        ("segmentation", "flips", True),
        ("detection", "none", True),
        ("detection", "auto", True),
        ("detection", "flips", False),
    ],
)
def test_tta_is_checked_against_the_task_when_params_load(task, tta, ok):
    raw = {"task": task, "infer": {"tta": tta}}
    if ok:
        assert params_from_dict(raw).infer.tta == tta
    else:
        with pytest.raises(ValueError, match="infer.tta"):
            params_from_dict(raw)


@pytest.mark.parametrize(
    "task, tta", [("classification", "dihedral"), ("segmentation", "dihedral"), ("detection", "none")]
)
def test_auto_tta_is_dihedral_where_the_task_has_it(task, tta):
    params = params_from_dict({"task": task})
    assert params.infer.tta == "auto" and params.tta == tta


def test_detection_models_refuse_tta():
    with pytest.raises(ValueError, match="not available for detection"):
        get_task("detection").predict(None, None, [], 1, "flips")
