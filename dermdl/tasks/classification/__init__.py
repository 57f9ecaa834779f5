"""Classification: ``<root>/<dataset>/<class>/<image>`` -> one label per image (class probabilities)."""

from __future__ import annotations

from dermdl.tasks import Capabilities, TaskPlugin, parts_of
from dermdl.tasks.classification.layout import LAYOUT

_part = parts_of(__name__)


TASK = TaskPlugin(
    name="classification",
    layout=LAYOUT,
    capabilities=Capabilities(),  # every procedure of the core applies
    stratify_by_target=True,
    scan=_part("layout", "scan"),
    prepare_item=_part("data", "prepare_item"),
    dataloaders=_part("data", "dataloaders"),
    build_model=_part("model", "build_model"),
    splitter=_part("model", "splitter"),  # the image + metadata network is no nn.Sequential
    loss_and_metrics=_part("losses", "loss_and_metrics"),
    predict=_part("predict", "predict"),
    predict_tiled=_part("tiled", "predict_tiled"),
    concat_predictions=_part("predict", "concat_predictions"),
    pseudo_label=_part("predict", "pseudo_label"),
    write_predictions=_part("writer", "write_predictions"),  # no torch: the ONNX predict path writes with it
    analyze=_part("analyze", "analyze"),
    table=_part("report", "format_report"),
    headline=_part("headline", "headline"),
    onnx_graph=_part("export", "onnx_graph"),
    onnx_predict=_part("onnx_predict", "predict"),
    config_extra=_part("model", "config_extra"),
    after_training=_part("calibrate", "after_training"),
    explain=_part("explain", "explain"),
)
