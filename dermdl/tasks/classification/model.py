"""Classification network: a timm backbone (:mod:`dermdl.models`) with fastai's pooling head.

Why here: the head (one logit per class, its dropout) is what makes a backbone a classifier; the
backbone itself, its weights and the model files are shared with the other tasks.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dermdl.models import ModelConfig, create_backbone
from dermdl.tasks.classification.tabular import TabularEncoder, encoder_of, fit_extra


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


class FusionClassifier(nn.Module):
    """Image + metadata (:mod:`.tabular`): pooled image features, the categorical embeddings and the numeric
    values concatenated, then fastai's head. ``forward(images, tabular)``; ``self[0]`` is the body (what
    fastai freezes and explanations hook), like the image-only ``nn.Sequential(body, head)``."""

    def __init__(
        self, body: nn.Module, pool: nn.Module, features: int, encoder: TabularEncoder, n_classes: int, ps: float
    ):
        from fastai.vision.learner import create_head

        super().__init__()
        self.body, self.pool = body, pool
        # fastai's rule of thumb for embedding sizes (index 0: missing/unseen)
        sizes = [len(c.vocab) + 1 for c in encoder.categorical]
        dims = [min(16, (n + 1) // 2 + 1) for n in sizes]
        self.embeddings = nn.ModuleList(nn.Embedding(n, d) for n, d in zip(sizes, dims))
        self.n_cat = len(sizes)
        width = features + sum(dims) + 2 * len(encoder.numeric)
        self.head = create_head(width, n_classes, pool=False, ps=ps)

    def __getitem__(self, index: int) -> nn.Module:
        return [self.body, self.head][index]

    def forward(self, images: torch.Tensor, tabular: torch.Tensor) -> torch.Tensor:
        parts = [self.pool(self.body(images))]
        codes = tabular[:, : self.n_cat].long()
        parts += [embedding(codes[:, i]) for i, embedding in enumerate(self.embeddings)]
        parts.append(tabular[:, self.n_cat :].to(parts[0].dtype))
        return self.head(torch.cat(parts, dim=1))


def build_fusion(
    arch: str, n_classes: int, pretrained: bool | str, encoder: TabularEncoder, head_dropout: float = 0.5
) -> tuple[nn.Module, tuple[list[float], list[float]]]:
    """The image-only body and pooling (concat pooling for CNNs, as fastai's head does) + the tabular branch."""
    from fastai.layers import AdaptiveConcatPool2d
    from fastai.vision.learner import TimmBody

    backbone, norm = create_backbone(arch, pretrained)
    body = TimmBody(backbone, pretrained=bool(pretrained))
    pool: nn.Module
    features = int(backbone.num_features)  # type: ignore[arg-type]
    if body.needs_pool:
        pool, features = nn.Sequential(AdaptiveConcatPool2d(), nn.Flatten()), 2 * features
    else:
        pool = nn.Flatten()
    return FusionClassifier(body, pool, features, encoder, n_classes, head_dropout), norm


def build_model(config: ModelConfig, pretrained: bool | str):
    encoder = encoder_of(config)
    dropout = config.extra.get("head_dropout", 0.5)
    if encoder is not None:
        return build_fusion(config.arch, len(config.classes), pretrained, encoder, dropout)
    return build_classifier(config.arch, len(config.classes), pretrained, dropout)


def splitter(model: nn.Module) -> list:
    """fastai's (body, rest) parameter groups, for both networks (the body is frozen while the head warms up)."""
    from fastai.torch_core import params
    from fastai.vision.learner import default_split

    if isinstance(model, FusionClassifier):
        body = {id(p) for p in model.body.parameters()}
        return [params(model.body), [p for p in model.parameters() if id(p) not in body]]
    return default_split(model)


def config_extra(params: Any) -> dict[str, Any]:
    """Saved in model.json: the head's dropout (training only, but part of how the model was built),
    whether predictions apply the temperature (infer.calibrate; infer re-reads it from params), and the
    metadata encoding when classification.metadata names columns (:func:`.tabular.fit_extra`)."""
    return {
        "head_dropout": params.classification.head_dropout,
        "calibrate": params.infer.calibrate,
        **fit_extra(params),
    }
