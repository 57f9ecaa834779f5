"""Classification network: a timm backbone (:mod:`dermdl.models`) with fastai's pooling head.

Why here: the head (one logit per class, its dropout) is what makes a backbone a classifier; the
backbone itself, its weights and the model files are shared with the other tasks.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from dermdl.models import ModelConfig, create_backbone


def build_classifier(
    arch: str, n_classes: int, pretrained: bool | str, head_dropout: float = 0.5
) -> tuple[nn.Module, tuple[list[float], list[float]]]:
    """Backbone + fastai's pooling head, as ``nn.Sequential(body, head)`` so fastai can freeze the body.

    ``head_dropout``: fastai's ``ps`` (dropout before the last layer; half of it before the hidden one)."""
    from fastai.vision.learner import TimmBody, add_head

    backbone, norm = create_backbone(arch, pretrained)
    body = TimmBody(backbone, pretrained=bool(pretrained))
    model = add_head(body, backbone.num_features, n_classes, pool=body.needs_pool, ps=head_dropout)
    return model, norm


def build_model(config: ModelConfig, pretrained: bool | str):
    return build_classifier(config.arch, len(config.classes), pretrained, config.extra.get("head_dropout", 0.5))


def config_extra(params: Any) -> dict[str, Any]:
    """Saved in model.json: the head's dropout (training only, but part of how the model was built), and
    whether predictions apply the temperature (infer.calibrate; infer re-reads it from params)."""
    return {"head_dropout": params.classification.head_dropout, "calibrate": params.infer.calibrate}
