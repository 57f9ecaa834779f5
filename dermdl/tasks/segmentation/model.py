"""U-Net for lesion segmentation: a pretrained timm encoder under fastai's ``DynamicUnet``.

Why ``DynamicUnet`` (not segmentation-models-pytorch): it is part of fastai, which dermdl already
trains with, so no new dependency; it builds its decoder by hooking wherever the encoder halves
the resolution, so any CNN that timm can describe works; and ``model[0]`` is the encoder, so the
shared frozen/unfrozen schedule (fastai ``freeze``/``unfreeze`` on body/head groups) applies as is.

The encoder is the timm backbone cut after its last feature stage (``feature_info``), e.g.
EfficientNet-Lite0 = stem + 7 block groups without the 1x1 "head" conv (1280 channels would make
the U-Net bottleneck ~20x larger for no gain), with the offline ImageNet weights of
:func:`dermdl.models.create_backbone`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from dermdl.models import ModelConfig, create_backbone, resolve_arch

if TYPE_CHECKING:
    from fastai.vision.models.unet import DynamicUnet


def timm_encoder(backbone: nn.Module, arch: str = "model") -> nn.Sequential:
    """The backbone's top-level layers up to its last feature stage, as an ``nn.Sequential``.

    Works for timm CNNs whose forward is a plain chain of children (EfficientNet, MobileNet,
    ResNet, RegNet, ConvNeXt ...); anything else is refused with a clear message.
    """
    info: list[dict] = getattr(backbone, "feature_info", None) or []  # timm: one dict per feature stage
    last = info[-1]["module"].split(".") if info else []
    layers: list[nn.Module] = []
    found = False
    for name, child in backbone.named_children():
        if last and name == last[0]:
            if len(last) == 1:
                layers.append(child)
            else:
                for sub_name, sub in child.named_children():
                    layers.append(sub)
                    if sub_name == last[1]:
                        break
            found = True
            break
        layers.append(child)
    encoder = nn.Sequential(*layers)
    problem = None if found else "no feature stages found"
    if found:
        try:
            with torch.no_grad():
                channels = encoder.eval()(torch.zeros(1, 3, 64, 64)).shape[1]
            if channels != info[-1]["num_chs"]:
                problem = f"encoder gives {channels} channels, expected {info[-1]['num_chs']}"
        except Exception as exc:  # a non-sequential forward fails in many ways
            problem = f"{type(exc).__name__}: {exc}"
    if problem:
        raise ValueError(
            f"segmentation.model {arch!r} cannot be used as a U-Net encoder ({problem}); use a CNN such "
            "as efficientnet_lite0, efficientnet_b0, resnet34 or convnext_tiny"
        )
    return encoder


def build_unet(arch: str, n_classes: int, input_size: int, pretrained: bool | str):
    """(DynamicUnet, (mean, std)); ``model[0]`` is the pretrained encoder (the body to freeze)."""
    from fastai.vision.models.unet import DynamicUnet  # lazy: fastai is slow to import (preprocess workers skip it)

    backbone, norm = create_backbone(arch, pretrained)
    encoder = timm_encoder(backbone, resolve_arch(arch))
    # last_cross=False: no extra ResBlock on [features, input image] at full resolution; it cost
    # ~40% of the forward pass on CPU and gave no measurable Dice gain on the demo (0.968 vs 0.971).
    model = DynamicUnet(encoder, n_classes, (input_size, input_size), norm_type=None, last_cross=False)
    return model, norm


def build_model(config: ModelConfig, pretrained: bool | str):
    return build_unet(config.arch, len(config.classes), config.input_size, pretrained)


def splitter(model: DynamicUnet) -> list:
    """(encoder, decoder) parameter groups: the pretrained encoder is the body fastai freezes."""
    from fastai.torch_core import params

    return [params(model[0]), [p for layer in list(model.layers)[1:] for p in params(layer)]]
