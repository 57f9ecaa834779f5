"""The names of every option family that params.yaml, the CLI and the code dispatching on it share.

Why one module: a name written out in three places (the params check, the CLI choices, the function
that acts on it) drifts; here each family is one ``Literal`` type — what pydantic validates and mypy
checks — and its tuple of names for choices and messages. Dispatch tables are tested to cover exactly
these names (tests/test_options.py). Torch-free, so params and ``dermdl --help`` stay fast.
"""

from __future__ import annotations

from typing import Literal, get_args

Optimizer = Literal["adam", "adamw", "rmsprop", "sgd"]
Recipe = Literal["one_cycle", "thesis"]
TTAMode = Literal["auto", "none", "flips", "dihedral"]  # auto: dihedral where the task can average views
ResizePolicy = Literal["squish", "pad", "crop"]
ColorConstancy = Literal["none", "shades_of_gray"]
ClassificationLoss = Literal["ce", "focal", "focal_ce", "label_smoothing"]
SegmentationLoss = Literal["ce", "dice", "ce_dice", "focal", "focal_tversky"]
BoxFormat = Literal["xyxy", "xyxy_inclusive", "xywh"]

OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
RECIPES: tuple[str, ...] = get_args(Recipe)
TTA_MODES: tuple[str, ...] = get_args(TTAMode)
# Explanation heatmaps (classification): occlusion = the drop of the class probability when a window of the
# image is greyed out (faithful by construction); hirescam = gradient x activation of the last feature map.
ExplainMethod = Literal["occlusion", "hirescam"]
EXPLAIN_METHODS: tuple[str, ...] = get_args(ExplainMethod)
RESIZE_POLICIES: tuple[str, ...] = get_args(ResizePolicy)
COLOR_CONSTANCY: tuple[str, ...] = get_args(ColorConstancy)
CLASSIFICATION_LOSSES: tuple[str, ...] = get_args(ClassificationLoss)
SEGMENTATION_LOSSES: tuple[str, ...] = get_args(SegmentationLoss)
BOX_FORMATS: tuple[str, ...] = get_args(BoxFormat)
