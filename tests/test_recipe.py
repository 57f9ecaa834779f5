"""Optimiser and loss choices from params.yaml mean what their names say."""

import pytest
import torch

from dermdl.optimizers import opt_func
from dermdl.params import params_from_dict
from dermdl.tasks.classification.losses import class_weights, classification_loss


@pytest.mark.parametrize(
    "name, opt_class, decoupled",
    [("adam", "Adam", False), ("adamw", "Adam", True), ("rmsprop", "RMSProp", None), ("sgd", "SGD", None)],
)
def test_optimizer_factory(name, opt_class, decoupled):
    train = params_from_dict({"train": {"optimizer": name, "wd": 0.05, "momentum": 0.8}}).train
    layer = torch.nn.Linear(3, 2)
    opt = opt_func(train)([p for p in layer.parameters()], lr=0.1)
    hyper = opt.hypers[0]
    assert hyper["wd"] == 0.05
    if decoupled is not None:  # fastai: weight_decay step (decoupled) vs l2_reg (coupled) callback
        names = [getattr(cb, "__name__", "") for cb in opt.cbs]
        assert ("weight_decay" in names) is decoupled and ("l2_reg" in names) is (not decoupled)
    if name in ("rmsprop", "sgd"):
        assert hyper["mom"] == 0.8
    assert opt_func(train).func.__name__ == opt_class


def test_balanced_class_weights_follow_sklearn_formula():
    weights = class_weights(["a", "a", "a", "b"], ["a", "b"], "balanced")
    assert torch.allclose(weights, torch.tensor([4 / (2 * 3), 4 / (2 * 1)]))
    assert class_weights(["a", "b"], ["a", "b"], "none") is None
    with pytest.raises(ValueError, match="no training images"):
        class_weights(["a"], ["a", "b"], "balanced")


LOGITS = torch.tensor([[2.0, 0.1, -1.0], [0.2, 0.1, 3.0], [0.0, 0.0, 0.0]])
TARGET = torch.tensor([0, 2, 1])


@pytest.mark.parametrize("loss", ["ce", "focal", "focal_ce", "label_smoothing"])
def test_losses_are_finite_and_decode(loss):
    section = params_from_dict({"classification": {"loss": loss}}).classification
    fn = classification_loss(section, None)
    value = fn(LOGITS, TARGET)
    assert torch.isfinite(value) and value > 0
    assert fn.decodes(LOGITS).tolist() == [0, 2, 0]


def test_focal_downweights_easy_examples_and_reduces_to_ce():
    ce = torch.nn.functional.cross_entropy(LOGITS, TARGET)
    focal0 = classification_loss(
        params_from_dict({"classification": {"loss": "focal", "focal_gamma": 0}}).classification, None
    )
    assert torch.allclose(focal0(LOGITS, TARGET), ce)
    focal2 = classification_loss(params_from_dict({"classification": {"loss": "focal"}}).classification, None)
    assert focal2(LOGITS, TARGET) < ce
    both = classification_loss(params_from_dict({"classification": {"loss": "focal_ce"}}).classification, None)
    assert torch.allclose(both(LOGITS, TARGET), focal2(LOGITS, TARGET) + ce)


def test_class_weights_change_the_loss():
    weight = torch.tensor([1.0, 5.0, 1.0])
    section = params_from_dict({}).classification
    assert not torch.allclose(
        classification_loss(section, weight)(LOGITS, TARGET), classification_loss(section, None)(LOGITS, TARGET)
    )
