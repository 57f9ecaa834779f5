"""Classification: ``<root>/<dataset>/<class>/<image>`` -> one label per image (class probabilities)."""

from __future__ import annotations

from dermdl.tasks import Task
from dermdl.tasks.classification.analyze import analyze
from dermdl.tasks.classification.data import dataloaders, prepare_item
from dermdl.tasks.classification.layout import scan
from dermdl.tasks.classification.losses import loss_and_metrics
from dermdl.tasks.classification.metrics import format_table
from dermdl.tasks.classification.model import build_model, config_extra
from dermdl.tasks.classification.predict import predict, pseudo_label, write_predictions

TASK = Task(
    name="classification",
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
    config_extra=config_extra,
)
