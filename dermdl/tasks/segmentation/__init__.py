"""Segmentation: ``<root>/<dataset>/images/<name>.<ext>`` + ``masks/<name>.png`` -> a class per pixel.

The plug-in for the shared core (see :class:`dermdl.tasks.Task`); user documentation: docs/segmentation.md.
"""

from __future__ import annotations

from dermdl.tasks import Capabilities, TaskPlugin, parts_of
from dermdl.tasks.segmentation.layout import LAYOUT

_part = parts_of(__name__)


TASK = TaskPlugin(
    name="segmentation",
    layout=LAYOUT,
    capabilities=Capabilities(
        unsupported={
            "oversample": "its images have no class to balance",
            "explain": "the predicted mask (its overlay) is the explanation",
            "label_maps": "classes are mask values (segmentation.mask_values), not folders",
        }
    ),
    scan=_part("layout", "scan"),
    prepare_item=_part("data", "prepare_item"),
    target_array=_part("data", "target_array"),
    prepare_settings=_part("data", "prepare_settings"),
    dataloaders=_part("data", "dataloaders"),
    build_model=_part("model", "build_model"),
    loss_and_metrics=_part("losses", "loss_and_metrics"),
    predict=_part("predict", "predict"),
    predict_tiled=_part("tiled", "predict_tiled"),
    pseudo_label=_part("predict", "pseudo_label"),
    write_predictions=_part("writer", "write_predictions"),  # no torch: the ONNX predict path writes with it
    analyze=_part("analyze", "analyze"),
    table=_part("metrics", "format_table"),
    headline=_part("headline", "headline"),
    splitter=_part("model", "splitter"),
    onnx_graph=_part("export", "onnx_graph"),
    onnx_predict=_part("onnx_predict", "predict"),
    config_extra=_part("data", "config_extra"),
)
