"""Detection: ``<root>/annotations/<dataset>.json`` (COCO) + ``<root>/images/<dataset>/`` -> boxes.

Predicts a box, a class and a score for every object, with torchvision detectors (Faster R-CNN,
RetinaNet) trained by the shared fastai core; evaluated with COCO AP and bootstrap CIs.
"""

from __future__ import annotations

from dermdl.tasks import Capabilities, TaskPlugin, parts_of
from dermdl.tasks.detection.layout import LAYOUT

_BOXES = "boxes do not mix or resize with the images here"


_part = parts_of(__name__)


TASK = TaskPlugin(
    name="detection",
    layout=LAYOUT,
    capabilities=Capabilities(
        unsupported={
            "mixup": _BOXES,
            "progressive_resizing": _BOXES,
            "oversample": _BOXES,
            "tta": "flipped boxes would need merging",
            "channels_last": "torchvision detectors take lists of differently sized images",
            "explain": "the predicted boxes (their overlays) are the explanation",
            "label_maps": "categories are named in each COCO file; rename them there",
        }
    ),
    scan=_part("layout", "scan"),
    prepare_item=_part("data", "prepare_item"),
    prepare_settings=_part("data", "prepare_settings"),
    dataloaders=_part("data", "dataloaders"),
    build_model=_part("model", "build_model"),
    loss_and_metrics=_part("losses", "loss_and_metrics"),
    predict=_part("predict", "predict"),
    predict_tiled=_part("tiled", "predict_tiled"),
    concat_predictions=_part("predict", "concat_predictions"),
    pseudo_label=_part("predict", "pseudo_label"),
    write_predictions=_part("writer", "write_predictions"),  # no torch: the ONNX predict path writes with it
    analyze=_part("analyze", "analyze"),
    table=_part("metrics", "format_table"),
    headline=_part("headline", "headline"),
    splitter=_part("model", "splitter"),
    callbacks=_part("losses", "callbacks"),
    onnx_graph=_part("export", "onnx_graph"),
    onnx_predict=_part("onnx_predict", "predict"),
    config_extra=_part("model", "config_extra"),
)
