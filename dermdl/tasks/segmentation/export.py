"""The U-Net as an ONNX graph: per-pixel class probabilities at the model's input size."""

from __future__ import annotations

import json

import torch
from torch import nn

from dermdl.export.graph import OnnxGraph
from dermdl.models import ModelConfig


class _PixelProbabilities(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(image).float(), dim=1)


def onnx_graph(model: nn.Module, config: ModelConfig) -> OnnxGraph:
    example = torch.rand(2, 3, config.input_size, config.input_size, generator=torch.Generator().manual_seed(0))
    return OnnxGraph(
        module=_PixelProbabilities(model).eval(),
        example=(example - 0.5) / 0.25,
        outputs=("probabilities",),
        dynamic={"image": {0: "batch"}, "probabilities": {0: "batch"}},
        metadata={
            "input": "image: float32 (batch, 3, input_size, input_size), RGB resized by `resize` to "
            "preprocess_size, then bilinear to input_size, scaled to [0, 1], then (x - mean) / std",
            "outputs": "probabilities (batch, classes, input_size, input_size), softmax over `classes`; map back "
            "to the original image by undoing `resize` (dermdl predict does)",
            "mask_values": json.dumps(config.extra.get("mask_values", [])),
        },
    )
