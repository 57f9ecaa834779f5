"""What a task hands the exporter: the module to trace and how its inputs and outputs are named."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class OnnxGraph:
    """A task's answer to ``onnx_graph(model, config)``.

    ``module`` (a torch module in eval mode) maps the tensor ``example`` (named ``image``) to the tensors
    named ``outputs``; ``dynamic`` names the axes that may change size (e.g. the batch); ``metadata``:
    the task's own entries for the file (what the outputs mean, category ids ...). The exporter checks
    the ONNX graph against ``module`` on ``example`` (``rtol``/``atol``) before writing the file.
    """

    module: Any
    example: Any
    outputs: tuple[str, ...]
    dynamic: Mapping[str, Mapping[int, str]] = field(default_factory=dict)
    metadata: Mapping[str, str] = field(default_factory=dict)
    rtol: float = 1e-3
    atol: float = 1e-4
