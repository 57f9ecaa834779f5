"""Classification losses chosen in params.yaml, built from fastai's own parts, and the validation metrics.

Kept out of the training core so a task or a test can ask "which loss does this parameter set mean"
without building a Learner.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch

from dermdl.options import CLASSIFICATION_LOSSES
from dermdl.records import Record


def class_weights(targets: list[str], classes: list[str], mode: str) -> torch.Tensor | None:
    """``balanced``: weight each class by n / (k * count), as scikit-learn does; ``none``: no weights."""
    if mode == "none":
        return None
    counts = Counter(targets)
    missing = [c for c in classes if counts[c] == 0]
    if missing:
        raise ValueError(f"classification.class_weights=balanced: classes {missing} have no training images")
    n, k = len(targets), len(classes)
    return torch.tensor([n / (k * counts[c]) for c in classes], dtype=torch.float32)


class SumOfLosses:
    """Focal + cross-entropy: focal for hard examples, CE keeps gradients alive on easy ones early on."""

    y_int = True  # integer targets: fastai MixUp mixes the losses, not the labels

    def __init__(self, *losses: Any):
        self.losses = losses

    @property
    def reduction(self) -> str:
        return self.losses[0].reduction

    @reduction.setter
    def reduction(self, value: str) -> None:  # fastai MixUp switches to per-item losses and back
        for loss in self.losses:
            loss.reduction = value

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(loss(logits, target) for loss in self.losses)

    def activation(self, x: torch.Tensor) -> torch.Tensor:
        return self.losses[0].activation(x)

    def decodes(self, x: torch.Tensor) -> torch.Tensor:
        return self.losses[0].decodes(x)


def classification_loss(section: Any, weight: torch.Tensor | None):
    """The loss named by ``classification.loss`` (fastai ``*Flat`` losses so predictions decode as usual)."""
    from fastai.losses import CrossEntropyLossFlat, FocalLossFlat, LabelSmoothingCrossEntropyFlat

    if section.loss == "ce":
        return CrossEntropyLossFlat(weight=weight)
    if section.loss == "label_smoothing":
        return LabelSmoothingCrossEntropyFlat(eps=section.label_smoothing, weight=weight)
    if section.loss == "focal":
        return FocalLossFlat(gamma=section.focal_gamma, weight=weight)
    if section.loss == "focal_ce":
        return SumOfLosses(FocalLossFlat(gamma=section.focal_gamma, weight=weight), CrossEntropyLossFlat(weight=weight))
    raise ValueError(f"classification.loss: unknown loss {section.loss!r}; use one of {CLASSIFICATION_LOSSES}")


def loss_and_metrics(params: Any, classes: list[str], train_records: list[Record]):
    """The loss named by ``classification.loss`` (optionally class-weighted) and the validation metrics."""
    from fastai.vision.all import BalancedAccuracy, F1Score, accuracy

    weight = class_weights([r["target"] for r in train_records], classes, params.classification.class_weights)
    return classification_loss(params.classification, weight), [accuracy, BalancedAccuracy(), F1Score(average="macro")]
