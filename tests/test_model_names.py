"""train.model is checked without torch, against the names the installed timm really has."""

from __future__ import annotations

import pytest

from dermdl.model_names import ALIASES, check_model_name, timm_names


def test_names_file_is_the_installed_timm_list():
    import timm

    assert timm_names() == frozenset(timm.list_models()), "run `python -m dermdl.model_names` after a timm upgrade"


@pytest.mark.parametrize("name", ["efficientnet_lite0", "tf_efficientnet_lite0", "efficientnet-b0", "resnet50.a1_in1k"])
def test_known_names_aliases_and_pretrained_tags_pass(name):
    assert check_model_name(name) == name


def test_a_typo_gets_close_matches():
    with pytest.raises(ValueError, match="unknown model 'efficientnet_lit0'. Did you mean efficientnet_lite0"):
        check_model_name("efficientnet_lit0")
    assert all(target in timm_names() for target in ALIASES.values())
