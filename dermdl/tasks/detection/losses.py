"""Detection training in fastai: the loss, the per-epoch metrics and the callback that feeds targets.

Plugs torchvision detectors into the shared fastai core with three small pieces: the
:class:`~dermdl.tasks.detection.model.Detector` wrapper (loss dict in training, losses + detections in
validation), a loss that sums torchvision's loss components, and :class:`DetectionCallback`, which
feeds targets to the model and turns on fastai's ``train_metrics`` so every loss component is logged
(DVCLive + TensorBoard) for training and validation. Everything else is the classification path.
The training-time metrics live here, not in :mod:`~dermdl.tasks.detection.metrics` (test-set
evaluation with CIs): they are fastai ``Metric`` objects that read the same loss dict.
"""

from __future__ import annotations

from typing import Any

import fastai.callback.progress  # noqa: F401  (patches the progress table into Learner, as fastai.vision.all does)
import fastai.callback.schedule  # noqa: F401  (patches Learner.fit_one_cycle, used by dermdl.session)
import torch
from fastai.callback.core import Callback
from fastai.learner import Metric

from dermdl.records import Record
from dermdl.tasks.detection.metrics import run_cocoeval
from dermdl.tasks.detection.names import family

#: torchvision's loss-dict keys per detector family, in logging order.
LOSS_KEYS: dict[str, tuple[str, ...]] = {
    "fasterrcnn": ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"),
    "retinanet": ("classification", "bbox_regression"),
}


def detection_loss(pred: Any, *targets: Any) -> torch.Tensor:
    """Total loss = sum of torchvision's loss components (what fastai back-propagates)."""
    losses = pred["losses"] if "losses" in pred else pred
    return sum(losses.values())


class LossComponent(Metric):
    """Mean of one torchvision loss term per epoch (training batches and validation batches)."""

    def __init__(self, key: str):
        self.key = key
        self.reset()

    def reset(self) -> None:
        self.total, self.count = 0.0, 0

    def accumulate(self, learn) -> None:
        losses = learn.pred["losses"] if "losses" in learn.pred else learn.pred
        if self.key in losses:
            n = len(learn.yb[0])
            self.total += float(losses[self.key].detach()) * n
            self.count += n

    @property
    def value(self) -> float | None:
        return self.total / self.count if self.count else None

    @property
    def name(self) -> str:
        return self.key if self.key.startswith("loss_") else f"loss_{self.key}"


class ValidAP50(Metric):
    """COCO AP50 on the validation split after each epoch (None for the training phase)."""

    name = "AP50"

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.images: list[tuple[dict, dict]] = []

    def accumulate(self, learn) -> None:
        if learn.training or "detections" not in learn.pred:
            return
        for det, target in zip(learn.pred["detections"], learn.yb[0]):
            self.images.append(
                (
                    {k: v.detach().cpu().numpy() for k, v in det.items()},
                    {k: v.detach().cpu().numpy() for k, v in target.items()},
                )
            )

    @property
    def value(self) -> float | None:
        if not self.images:
            return None
        gt, results = _as_coco(self.images)
        if not gt["annotations"]:
            return None
        return max(0.0, float(run_cocoeval(gt, results).stats[1]))


def _as_coco(images: list[tuple[dict, dict]]) -> tuple[dict, list[dict]]:
    gt: dict[str, list[dict]] = {"images": [], "annotations": [], "categories": []}
    results: list[dict] = []
    labels: set[int] = set()
    for index, (det, target) in enumerate(images, start=1):
        gt["images"].append({"id": index, "width": 1, "height": 1})
        for box, label in zip(target["boxes"], target["labels"]):
            x0, y0, x1, y1 = (float(v) for v in box)
            gt["annotations"].append(
                {
                    "id": len(gt["annotations"]) + 1,
                    "image_id": index,
                    "category_id": int(label),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                }
            )
            labels.add(int(label))
        for box, label, score in zip(det["boxes"], det["labels"], det["scores"]):
            x0, y0, x1, y1 = (float(v) for v in box)
            results.append(
                {
                    "image_id": index,
                    "category_id": int(label),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": float(score),
                }
            )
            labels.add(int(label))
    gt["categories"] = [{"id": k, "name": str(k)} for k in sorted(labels)]
    return gt, results


class DetectionCallback(Callback):
    """Feed ``(images, targets)`` to the model, log every loss component, store the category ids."""

    order = -5  # before the Recorder (order 50) names its columns in before_fit

    def before_fit(self) -> None:
        self.learn.recorder.train_metrics = True
        ids = getattr(self.dls, "category_ids", None)
        if ids:
            self.learn.model.category_ids.copy_(torch.as_tensor(ids, dtype=torch.int64))

    def before_batch(self) -> None:
        self.learn.xb = (self.xb[0], self.yb[0])


def loss_and_metrics(params: Any, classes: list[str], train_records: list[Record]):
    keys = LOSS_KEYS[family(params.detection.model)]
    return detection_loss, [LossComponent(key) for key in keys] + [ValidAP50()]


def callbacks(params: Any) -> list:
    return [DetectionCallback()]
