"""Backbone resolution, offline pretrained weights and the weights-only model file round trip."""

import json

import pytest
import timm
import torch

from dermdl.models import (
    PACKAGED_WEIGHTS,
    ModelConfig,
    create_backbone,
    load_model,
    resolve_arch,
    save_model,
)
from dermdl.tasks.classification.model import build_classifier


@pytest.mark.parametrize(
    "name, arch",
    [
        ("efficientnet_lite0", "efficientnet_lite0"),
        ("efficientnet-b0", "efficientnet_b0"),
        ("efficientnet-b3", "efficientnet_b3"),
        ("efficientnet-lite0", "efficientnet_lite0"),
        ("resnet18", "resnet18"),
    ],
)
def test_resolve_arch(name, arch):
    assert resolve_arch(name) == arch


def test_unknown_arch_suggests_close_names():
    with pytest.raises(ValueError, match="efficientnet_lite0"):
        resolve_arch("efficientnet_lite00")


def test_packaged_lite0_weights_are_imagenet_weights():
    """The offline package's tensors land in timm's efficientnet_lite0, in order, unchanged."""
    source = torch.load(PACKAGED_WEIGHTS["efficientnet_lite0"](), map_location="cpu", weights_only=True)
    backbone, (mean, std) = create_backbone("efficientnet_lite0", pretrained=True)
    assert torch.equal(backbone.conv_stem.weight, source["_conv_stem.weight"])
    assert torch.equal(backbone.bn2.running_var, source["_bn1.running_var"])
    assert mean == [0.5, 0.5, 0.5] and std == [0.5, 0.5, 0.5]
    random_init, _ = create_backbone("efficientnet_lite0", pretrained=False)
    assert not torch.equal(random_init.conv_stem.weight, source["_conv_stem.weight"])


def test_packaged_weights_also_fit_the_tf_padding_variant():
    source = torch.load(PACKAGED_WEIGHTS["tf_efficientnet_lite0"](), map_location="cpu", weights_only=True)
    backbone, (mean, std) = create_backbone("tf_efficientnet_lite0", pretrained=True)
    assert torch.equal(backbone.conv_stem.weight, source["_conv_stem.weight"])
    assert type(backbone.conv_stem).__name__ == "Conv2dSame"  # TensorFlow's "same" padding
    assert mean == [0.5, 0.5, 0.5]


@pytest.mark.parametrize("key_style", ["timm", "lukemelas", "module-prefixed"])
def test_local_weights_file(tmp_path, key_style):
    reference = timm.create_model("efficientnet_lite0", num_classes=0)
    state = reference.state_dict()
    if key_style == "lukemelas":
        source = torch.load(PACKAGED_WEIGHTS["efficientnet_lite0"](), map_location="cpu", weights_only=True)
        state = {k: v for k, v in source.items()}
    elif key_style == "module-prefixed":
        state = {f"module.{k}": v for k, v in state.items()}
    path = tmp_path / "weights.pth"
    torch.save(state, path)
    backbone, _ = create_backbone("efficientnet_lite0", pretrained=str(path))
    expected = next(iter(state.values()))
    assert torch.equal(backbone.conv_stem.weight, expected)


def test_weights_for_another_architecture_are_refused(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(timm.create_model("resnet18", num_classes=0).state_dict(), path)
    with pytest.raises(ValueError, match="do not fit"):
        create_backbone("efficientnet_lite0", pretrained=str(path))


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model, (mean, std) = build_classifier("efficientnet_lite0", 3, pretrained=False)
    model.eval()
    config = ModelConfig(
        task="classification",
        arch="efficientnet_lite0",
        classes=["a", "b", "c"],
        input_size=64,
        mean=mean,
        std=std,
        preprocess_size=64,
        resize="squish",
    )
    save_model(model, config, tmp_path / "model")
    loaded, loaded_config = load_model(tmp_path / "model")
    assert loaded_config == config
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), loaded(x), atol=1e-6)
    # the weights file is a plain state dict: loadable with weights_only=True
    state = torch.load(tmp_path / "model" / "model.pt", weights_only=True)
    assert isinstance(state, dict) and all(torch.is_tensor(v) for v in state.values())
    assert json.loads((tmp_path / "model" / "model.json").read_text())["classes"] == ["a", "b", "c"]


def test_pickled_model_file_is_refused(tmp_path):
    """A model file holding arbitrary objects (a pickled nn.Module) must not be unpickled."""
    model, (mean, std) = build_classifier("efficientnet_lite0", 2, pretrained=False)
    config = ModelConfig(
        task="classification",
        arch="efficientnet_lite0",
        classes=["a", "b"],
        input_size=64,
        mean=mean,
        std=std,
        preprocess_size=64,
        resize="squish",
    )
    save_model(model, config, tmp_path)
    torch.save(model, tmp_path / "model.pt")  # whole module, as older pipelines did
    with pytest.raises(Exception, match="weights_only|Unsupported|WeightsUnpickler"):
        load_model(tmp_path)


def test_missing_model_files_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.json"):
        load_model(tmp_path)
