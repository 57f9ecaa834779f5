"""Segmentation: ``<root>/<dataset>/images/<name>.<ext>`` + ``masks/<name>.png`` -> a class per pixel.

The plug-in for the shared core (see :class:`dermdl.tasks.Task`); user documentation: docs/segmentation.md.
"""

from __future__ import annotations

from typing import Any

from dermdl.tasks import Task
from dermdl.tasks.segmentation.analyze import analyze
from dermdl.tasks.segmentation.data import config_extra, dataloaders, prepare_item, target_array
from dermdl.tasks.segmentation.layout import scan
from dermdl.tasks.segmentation.metrics import format_table
from dermdl.tasks.segmentation.model import build_model, splitter
from dermdl.tasks.segmentation.predict import predict, pseudo_label, write_predictions


def loss_and_metrics(params: Any, classes: list[str], train_records: list[dict]):
    """:func:`dermdl.tasks.segmentation.losses.loss_and_metrics`, imported when training starts
    (fastai is slow to import; preprocess workers skip it)."""
    from dermdl.tasks.segmentation import losses

    return losses.loss_and_metrics(params, classes, train_records)


TASK = Task(
    name="segmentation",
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
    config_extra=config_extra,
    target_array=target_array,
)
