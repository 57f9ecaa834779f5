"""Colour constancy removes a cast and is applied identically at preprocess and predict time; colour
augmentation and the robustness shifts change images the way they say."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dermdl import pipeline, shifts
from dermdl.arrays import PreparedImages
from dermdl.augment import Augmentation, augment_batch
from dermdl.color import shades_of_gray
from dermdl.demo import generate_demo
from dermdl.models import ModelConfig
from dermdl.params import params_from_dict
from dermdl.tasks import get_task
from dermdl.tasks.classification.model import build_classifier


def _scene(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(40, 220, size=(48, 64, 3)).astype(np.uint8)


def test_shades_of_gray_removes_a_colour_cast():
    scene = _scene()
    cast = shifts.colour_cast(scene, 0.3)
    corrected, reference = shades_of_gray(cast).astype(float), shades_of_gray(scene).astype(float)
    ratio = corrected.mean(axis=(0, 1)) / reference.mean(axis=(0, 1))
    assert np.abs(ratio - 1).max() < 0.05  # the cast is gone (up to clipping): the original channel balance
    assert np.abs(cast.mean(axis=(0, 1)) / scene.mean(axis=(0, 1)) - 1).max() > 0.25  # and it was there


def test_shades_of_gray_keeps_a_black_image():
    black = np.zeros((8, 8, 3), np.uint8)
    assert np.array_equal(shades_of_gray(black), black)


@pytest.mark.slow
def test_constancy_is_the_same_at_preprocess_and_predict(tmp_path):
    generate_demo(tmp_path / "demo", n_train=2, n_test=2, n_weak=0, size=40)
    params = params_from_dict(
        {
            "out_dir": str(tmp_path / "out"),
            "data": {"root": str(tmp_path / "demo" / "classification"), "wl_train": [], "sl_tests": ["sl_test"]},
            "preprocess": {"size": 32, "workers": 1, "color_constancy": "shades_of_gray"},
        }
    )
    pipeline.preprocess(params)
    records = pipeline.load_manifest(params)["datasets"]["sl_test"]
    torch.manual_seed(0)
    model, norm = build_classifier("efficientnet_lite0", 3, False)
    config = ModelConfig(
        task="classification",
        arch="efficientnet_lite0",
        classes=["a", "b", "c"],
        input_size=32,
        mean=norm[0],
        std=norm[1],
        preprocess_size=32,
        resize="squish",
        color_constancy="shades_of_gray",
    )
    task = get_task("classification")
    from_arrays = task.predict(model, config, PreparedImages(records), 8)
    raw = [Path(params.data.root) / r["source"] for r in records]
    assert np.allclose(task.predict(model, config, raw, 8), from_arrays, atol=1e-5)
    plain = task.predict(model, config.__class__(**{**config.__dict__, "color_constancy": "none"}), raw, 8)
    assert not np.allclose(plain, from_arrays, atol=1e-3)  # the correction changes what the model sees


def test_colour_augmentation_changes_channel_balance_within_bounds():
    torch.manual_seed(0)
    images = torch.full((64, 3, 8, 8), 0.5)
    out, _, _ = augment_batch(images, Augmentation(dihedral=False, max_color=0.2))
    means = out.mean(dim=(2, 3))
    assert (means.max(dim=1).values - means.min(dim=1).values).mean() > 0.02  # casts applied
    assert out.min() >= 0.5 * 0.8 * 0.8 - 1e-6 and out.max() <= 1.0


@pytest.mark.parametrize("name", list(shifts.SHIFTS))
def test_every_shift_changes_the_image_and_keeps_its_size(name):
    scene = _scene(1)
    shift, severity = shifts.SHIFTS[name]
    out = shift(scene, severity)
    assert out.shape == scene.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - scene.astype(int)).mean() > 2


def test_shift_directions():
    scene = np.full((4, 4, 3), 128, np.uint8)
    warm = shifts.colour_cast(scene, 0.2)[0, 0]
    assert warm[0] > 128 > warm[2]
    assert shifts.illumination(scene, 1.6).mean() < 128 < shifts.illumination(scene, 0.6).mean()
    assert Image.fromarray(shifts.resolution(_scene(2), 0.25)).size == (64, 48)
