"""Each option family has one list of names (dermdl.options) that params, the CLI and the dispatch share."""

from __future__ import annotations

import pytest
import torch

from dermdl import options
from dermdl.cli_parser import build_parser
from dermdl.inference import TTA_VIEWS
from dermdl.optimizers import opt_func
from dermdl.params import params_from_dict
from dermdl.schedule import phases
from dermdl.tasks.classification.losses import classification_loss
from dermdl.tasks.segmentation.losses import SegmentationLoss


@pytest.mark.parametrize("name", options.OPTIMIZERS)
def test_every_optimizer_name_builds_one(name):
    train = params_from_dict({"train": {"optimizer": name}}).train
    layer = torch.nn.Linear(2, 2)
    assert opt_func(train)(list(layer.parameters()), lr=0.1) is not None


@pytest.mark.parametrize("name", options.CLASSIFICATION_LOSSES)
def test_every_classification_loss_name_builds_one(name):
    assert classification_loss(params_from_dict({"classification": {"loss": name}}).classification, None) is not None


@pytest.mark.parametrize("name", options.SEGMENTATION_LOSSES)
def test_every_segmentation_loss_name_builds_one(name):
    loss = SegmentationLoss(name)
    assert torch.isfinite(loss(torch.randn(1, 2, 4, 4), torch.randint(0, 2, (1, 4, 4))))


@pytest.mark.parametrize("name", options.RECIPES)
def test_every_recipe_name_has_a_schedule(name):
    assert list(phases(params_from_dict({"train": {"recipe": name, "fepochs": 1}}).train))


def test_tta_views_cover_the_names_and_the_cli_offers_them():
    assert set(TTA_VIEWS) == set(options.TTA_MODES) - {"auto"}
    predict = build_parser()._subparsers._group_actions[0].choices["predict"]
    tta = next(a for a in predict._actions if a.dest == "tta")
    assert tuple(tta.choices) == options.TTA_MODES


def test_unknown_names_are_refused_at_load_with_the_choices():
    with pytest.raises(ValueError, match="'adamx' is not allowed"):
        params_from_dict({"train": {"optimizer": "adamx"}})
