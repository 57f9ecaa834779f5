"""Segmentation training objective: the pixel losses and the validation Dice watched while training.

Why apart from the model: the loss is chosen by ``segmentation.loss`` (with class weights and the
Tversky settings), independently of the network; and this module imports fastai (``Metric``),
which preprocess workers never need, so the task imports it only when training starts.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from fastai.metrics import Metric
from torch import nn

from dermdl.options import SEGMENTATION_LOSSES as LOSSES
from dermdl.records import Record


def _plain(x: torch.Tensor) -> torch.Tensor:
    """fastai tensor subclasses (TensorMask, TensorBase) -> torch.Tensor, so ops never clash."""
    return x.as_subclass(torch.Tensor) if isinstance(x, torch.Tensor) else x


class SegmentationLoss(nn.Module):
    """``ce`` | ``dice`` | ``ce_dice`` | ``focal`` on logits (b, k, h, w) and class ids (b, h, w).

    * ce: pixel cross-entropy, class-weighted (weighted mean, as ``F.cross_entropy``).
    * dice: 1 - weighted mean over classes of the soft Dice, pixels pooled over the batch.
    * ce_dice: ce + dice (CE gives stable gradients early, Dice targets the overlap metric).
    * focal: (1 - p_t)^gamma * CE per pixel (Lin et al. 2017), class-weighted the same way.
    * focal_tversky: weighted mean over classes of (1 - Tversky index)^(1/gamma) (Abraham & Khan 2019);
      ``alpha`` weighs false negatives, ``beta`` false positives: alpha > beta favours recall of small lesions.
    """

    weight: torch.Tensor | None  # a registered buffer (follows .to(device)); None when unweighted

    def __init__(
        self,
        kind: str = "ce_dice",
        weight: list[float] | None = None,
        gamma: float = 2.0,
        smooth: float = 1.0,
        tversky: tuple[float, float, float] = (0.7, 0.3, 4 / 3),
    ):
        super().__init__()
        if kind not in LOSSES:
            raise ValueError(f"unknown segmentation loss {kind!r}; use one of {', '.join(LOSSES)}")
        self.kind, self.gamma, self.smooth = kind, gamma, smooth
        self.tversky = tversky
        # fastai MixUp asks for per-item losses (reduction "none") and for integer targets (y_int); the
        # Dice-type terms pool pixels over the batch, so every kind returns the batch loss here.
        self.reduction, self.y_int = "mean", True
        self.register_buffer("weight", None if weight is None else torch.tensor(weight, dtype=torch.float32))

    def _ce(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        return F.cross_entropy(logits, target, weight=weight)

    def _focal(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        logp = F.log_softmax(logits, dim=1).gather(1, target[:, None]).squeeze(1)
        loss = -((1 - logp.exp()) ** self.gamma) * logp
        if weight is None:
            return loss.mean()
        w = weight[target]
        return (w * loss).sum() / w.sum().clamp_min(1e-12)

    def _dice(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        k = logits.shape[1]
        probs = logits.softmax(dim=1)
        onehot = F.one_hot(target, k).permute(0, 3, 1, 2).to(probs.dtype)
        dims = (0, 2, 3)
        dice = (2 * (probs * onehot).sum(dims) + self.smooth) / (probs.sum(dims) + onehot.sum(dims) + self.smooth)
        w = torch.ones(k, device=logits.device) if weight is None else weight
        return 1 - (w * dice).sum() / w.sum()

    def _focal_tversky(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        alpha, beta, gamma = self.tversky
        k = logits.shape[1]
        probs = logits.softmax(dim=1)
        onehot = F.one_hot(target, k).permute(0, 3, 1, 2).to(probs.dtype)
        dims = (0, 2, 3)
        tp = (probs * onehot).sum(dims)
        fn = ((1 - probs) * onehot).sum(dims)
        fp = (probs * (1 - onehot)).sum(dims)
        index = (tp + self.smooth) / (tp + alpha * fn + beta * fp + self.smooth)
        w = torch.ones(k, device=logits.device) if weight is None else weight
        return (w * (1 - index).clamp_min(0) ** (1 / gamma)).sum() / w.sum()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits, target = _plain(logits).float(), _plain(target).long()
        weight = None if self.weight is None else self.weight.to(logits.device)
        if self.kind == "ce":
            return self._ce(logits, target, weight)
        if self.kind == "focal":
            return self._focal(logits, target, weight)
        if self.kind == "dice":
            return self._dice(logits, target, weight)
        if self.kind == "focal_tversky":
            return self._focal_tversky(logits, target, weight)
        return self._ce(logits, target, weight) + self._dice(logits, target, weight)

    def activation(self, x: torch.Tensor) -> torch.Tensor:  # used by fastai's get_preds
        return F.softmax(x, dim=1)

    def decodes(self, x: torch.Tensor) -> torch.Tensor:
        return x.argmax(dim=1)


class ForegroundDice(Metric):
    """Validation Dice of the non-background classes (ids >= 1), pixels pooled over the set, then
    averaged over classes: the number to watch while training (``valid/foreground_dice``)."""

    def reset(self) -> None:
        self.inter: torch.Tensor | None = None
        self.total: torch.Tensor | None = None

    def accumulate(self, learn) -> None:
        pred = _plain(learn.pred).argmax(dim=1)
        targ = _plain(learn.y).long()
        k = learn.pred.shape[1]
        inter = torch.stack([((pred == c) & (targ == c)).sum() for c in range(1, k)]).double().cpu()
        total = torch.stack([(pred == c).sum() + (targ == c).sum() for c in range(1, k)]).double().cpu()
        self.inter = inter if self.inter is None else self.inter + inter
        self.total = total if self.total is None else self.total + total

    @property
    def value(self) -> float | None:
        if self.inter is None or self.total is None:
            return None
        defined = self.total > 0
        if not defined.any():
            return None
        return float((2 * self.inter[defined] / self.total[defined]).mean())


def loss_and_metrics(params: Any, classes: list[str], train_records: list[Record]):
    seg = params.segmentation
    weights = list(seg.class_weights) if seg.class_weights is not None else None
    tversky = (seg.tversky_alpha, seg.tversky_beta, seg.tversky_gamma)
    return SegmentationLoss(seg.loss, weights, tversky=tversky), [ForegroundDice()]
