"""The detectors ``detection.model`` may name, known without importing torch (params.yaml is checked by
every command; torchvision takes seconds to import)."""

from __future__ import annotations

import difflib

#: Detector name -> short description; ``detection.model`` in params.yaml must be one of these.
DETECTORS: dict[str, str] = {
    "fasterrcnn_efficientnet_lite0_fpn": "Faster R-CNN, EfficientNet-Lite0 + FPN (ImageNet weights offline)",
    "retinanet_efficientnet_lite0_fpn": "RetinaNet, EfficientNet-Lite0 + FPN (ImageNet weights offline)",
    "fasterrcnn_mobilenet_v3_large_fpn": "Faster R-CNN, MobileNetV3-Large + FPN (torchvision)",
    "fasterrcnn_resnet50_fpn": "Faster R-CNN, ResNet-50 + FPN (torchvision)",
    "retinanet_resnet50_fpn": "RetinaNet, ResNet-50 + FPN (torchvision)",
}

#: ``detection.model``'s default in params.yaml (:class:`dermdl.params.DetectionParams`), used for a
#: model.json without a ``detection`` entry.
DEFAULT_DETECTOR = "fasterrcnn_efficientnet_lite0_fpn"


def family(name: str) -> str:
    """``fasterrcnn`` or ``retinanet`` for a detector name (ValueError for unknown names)."""
    check_name(name)
    return name.split("_", 1)[0]


def check_name(name: str) -> str:
    if name not in DETECTORS:
        close = difflib.get_close_matches(name, DETECTORS, n=2)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown detector {name!r}.{hint} Choose one of: {', '.join(DETECTORS)}")
    return name
