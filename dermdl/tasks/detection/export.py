"""The detector as an ONNX graph: boxes, scores and labels for one prepared image.

torchvision documents ONNX export of its R-CNN detectors for a fixed batch of one (the data-dependent
number of boxes per image); dermdl's prepared images are all preprocess_size squares, so one image of
that size per call is what every prediction uses anyway.
"""

from __future__ import annotations

import json

import torch
from torch import nn

from dermdl.export.graph import OnnxGraph
from dermdl.models import ModelConfig
from dermdl.tasks.detection.model import Detector
from dermdl.tasks.detection.writer import settings


class _Detections(nn.Module):
    """One (1, 3, s, s) image in [0, 1] -> the torchvision detector's boxes, scores, labels (1..K)."""

    def __init__(self, model: Detector):
        super().__init__()
        self.detector = model.detector

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        found = self.detector([image[0]])[0]
        return found["boxes"], found["scores"], found["labels"]


def onnx_graph(model: Detector, config: ModelConfig) -> OnnxGraph:
    size = config.preprocess_size
    category_ids = model.category_ids
    if not isinstance(category_ids, torch.Tensor):
        raise TypeError(f"{type(model).__name__}.category_ids is not a tensor; expected a Detector")
    example = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    return OnnxGraph(
        module=_Detections(model).eval(),
        example=example,
        outputs=("boxes", "scores", "labels"),
        metadata={
            "input": "image: float32 (1, 3, preprocess_size, preprocess_size), RGB resized by `resize`, scaled to "
            "[0, 1] (the graph normalises with mean/std itself)",
            "outputs": "boxes (n, 4) x0 y0 x1 y1 in input pixels, scores (n,), labels (n,) 1..K = `classes` order; "
            "COCO ids in category_ids",
            "category_ids": json.dumps([int(v) for v in category_ids.cpu()]),
            "score_threshold": repr(settings(config).score_threshold),
        },
        rtol=1e-3,
        atol=1e-3,  # pixels: box decoding (exp, clip) in float32
    )
