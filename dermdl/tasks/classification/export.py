"""The classifier as an ONNX graph: logits and calibrated probabilities for normalised images."""

from __future__ import annotations

import torch
from torch import nn

from dermdl.export.graph import OnnxGraph
from dermdl.models import ModelConfig
from dermdl.tasks.classification.writer import applied_temperature


class _Probabilities(nn.Module):
    """``logits`` and ``probabilities`` = softmax(logits / T): a program that reads the file alone gets
    calibrated probabilities; dermdl predict uses the logits, so --no-calibrate and TTA work as in PyTorch."""

    def __init__(self, model: nn.Module, temperature: float):
        super().__init__()
        self.model, self.temperature = model, temperature

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(image).float()
        return logits, torch.softmax(logits / self.temperature, dim=1)


def onnx_graph(model: nn.Module, config: ModelConfig) -> OnnxGraph:
    if config.extra.get("tabular"):
        raise ValueError(
            "export --format onnx: image + metadata models are not exportable yet; predict with the model folder"
        )
    temperature = applied_temperature(config)
    example = torch.rand(2, 3, config.input_size, config.input_size, generator=torch.Generator().manual_seed(0))
    return OnnxGraph(
        module=_Probabilities(model, temperature).eval(),
        example=(example - 0.5) / 0.25,
        outputs=("logits", "probabilities"),
        dynamic={"image": {0: "batch"}, "logits": {0: "batch"}, "probabilities": {0: "batch"}},
        metadata={
            "input": "image: float32 (batch, 3, input_size, input_size), RGB resized by `resize` to "
            "preprocess_size, then bilinear to input_size, scaled to [0, 1], then (x - mean) / std",
            "outputs": "logits (batch, classes); probabilities = softmax(logits / temperature), in `classes` order",
            "temperature": repr(temperature),
        },
    )
