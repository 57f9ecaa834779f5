"""Detection: ``<root>/annotations/<dataset>.json`` (COCO) + ``<root>/images/<dataset>/`` -> boxes.

Predicts a box, a class and a score for every object, with torchvision detectors (Faster R-CNN,
RetinaNet) trained by the shared fastai core; evaluated with COCO AP and bootstrap CIs.

``TASK`` is built on first use (module ``__getattr__``), not on import: :mod:`dermdl.params` imports
:mod:`dermdl.tasks.detection.model` to check ``detection.model``, which runs this file, and loading
every params.yaml must not import fastai (:mod:`~dermdl.tasks.detection.losses`) for that.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dermdl.tasks import Task


def _task() -> Task:
    from dermdl.tasks import Task
    from dermdl.tasks.detection.analyze import analyze
    from dermdl.tasks.detection.data import dataloaders, prepare_item
    from dermdl.tasks.detection.layout import scan
    from dermdl.tasks.detection.losses import callbacks, loss_and_metrics
    from dermdl.tasks.detection.metrics import format_table
    from dermdl.tasks.detection.model import build_model, config_extra, splitter
    from dermdl.tasks.detection.predict import predict, pseudo_label, write_predictions

    return Task(
        name="detection",
        scan=scan,
        prepare_item=prepare_item,
        dataloaders=dataloaders,
        build_model=build_model,
        loss_and_metrics=loss_and_metrics,
        predict=predict,
        pseudo_label=pseudo_label,
        write_predictions=write_predictions,
        analyze=analyze,
        table=format_table,
        splitter=splitter,
        callbacks=callbacks,
        config_extra=config_extra,
    )


def __getattr__(name: str):
    if name == "TASK":
        task = globals()["TASK"] = _task()
        return task
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
