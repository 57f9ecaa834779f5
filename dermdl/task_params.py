"""The parameter sections every params.yaml shares the base of, and the sections each task owns
(``classification:``, ``segmentation:``, ``detection:``): the network, its loss and the task's options.

Kept apart from the schedule (:mod:`dermdl.train_params`), the data and stage sections
(:mod:`dermdl.stage_params`) and loading (:mod:`dermdl.params`) so each file stays readable;
:class:`dermdl.params.Params` puts them together.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dermdl.options import ClassificationLoss, SegmentationLoss


class Section(BaseModel):
    """Frozen, no unknown keys, defaults validated; booleans are never numbers."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_as_number(cls, value: Any, info: Any) -> Any:
        """YAML's ``true``/``yes`` would silently become 1 in a number field: refuse it."""
        annotation = cls.model_fields[info.field_name].annotation
        if isinstance(value, bool) and annotation in (int, float):
            raise ValueError(f"expected a number, got the boolean {str(value).lower()}")
        return value


def _timm_model(value: str) -> str:
    from dermdl.model_names import check_model_name  # torch-free: the pinned timm's names

    return check_model_name(value)  # raises ValueError with suggestions


class ClassificationParams(Section):
    """One label per image: the network, its loss and its head."""

    moved_from_train: ClassVar[tuple[str, ...]] = (
        "model",
        "loss",
        "label_smoothing",
        "focal_gamma",
        "class_weights",
        "head_dropout",
    )  # train.<key> of dermdl 0.1 (still read, with a note, until 0.3)

    model: str = "efficientnet_lite0"  # a timm architecture (efficientnet-pytorch names work too)
    loss: ClassificationLoss = "ce"
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    focal_gamma: float = Field(2.0, ge=0)
    class_weights: Literal["none", "balanced"] = "balanced"
    head_dropout: float = Field(0.5, ge=0, lt=1)  # dropout before the head's last layer
    # metadata-table columns fused with the image features (the thesis's train.metadata); [] = image only
    metadata: list[str] = Field(default_factory=list)

    _known_model = field_validator("model")(classmethod(lambda cls, value: _timm_model(value)))


class SegmentationParams(Section):
    """Lesion masks: class names and how stored mask pixel values map onto class ids.

    ``mask_values`` maps a STORED pixel value (0..65535; a palette PNG stores indices) to a class
    id (index into ``codes``). None means: two classes -> {0: 0, 255: 1, 1: 1} (0/255 and 0/1
    masks both work), more classes -> identity {0: 0, 1: 1, ...}. Predicted masks are written
    with the FIRST stored value listed for each class (default: 0 and 255).
    """

    moved_from_train: ClassVar[tuple[str, ...]] = ("model",)  # train.model of dermdl 0.1 (read until 0.3)
    model: str = "efficientnet_lite0"  # the U-Net's encoder: a timm CNN
    codes: tuple[str, ...] = ("skin", "lesion")
    mask_values: dict[int, int] | None = None
    loss: SegmentationLoss = "ce_dice"
    class_weights: tuple[float, ...] | None = None
    tversky_alpha: float = Field(0.7, ge=0)  # focal_tversky: weight of false negatives
    tversky_beta: float = Field(0.3, ge=0)  # ... of false positives
    tversky_gamma: float = Field(4 / 3, ge=1)  # focal exponent: loss = (1 - TI)^(1/gamma)

    _known_model = field_validator("model")(classmethod(lambda cls, value: _timm_model(value)))

    @field_validator("codes")
    @classmethod
    def _usable_codes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(value) < 2:
            raise ValueError("give at least two class names (index 0 = background, e.g. [skin, lesion])")
        if len(set(value)) != len(value):
            raise ValueError(f"class names must be unique, got {list(value)}")
        bad = [c for c in value if not c.strip() or "/" in c or "\\" in c]
        if bad:
            raise ValueError(f"class names must be non-empty and contain no '/' or '\\', got {bad}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SegmentationParams:
        k = len(self.codes)
        if self.mask_values is not None:
            if not self.mask_values:
                raise ValueError("mask_values is empty; remove it (null = default) or map stored values to class ids")
            bad_keys = sorted(v for v in self.mask_values if not 0 <= v <= 65535)
            if bad_keys:
                raise ValueError(f"mask_values: stored values {bad_keys} are outside 0..65535 (8- or 16-bit PNG masks)")
            bad_ids = sorted({c for c in self.mask_values.values() if not 0 <= c < k})
            if bad_ids:
                raise ValueError(
                    f"mask_values: class ids {bad_ids} do not exist; codes has {k} classes (ids 0..{k - 1})"
                )
            missing = [self.codes[c] for c in range(k) if c not in self.mask_values.values()]
            if missing:
                raise ValueError(f"mask_values: no stored value maps to class(es) {missing}; every class needs one")
        if self.class_weights is not None:
            if len(self.class_weights) != k:
                raise ValueError(f"class_weights has {len(self.class_weights)} values but codes has {k} classes")
            if any(not (w >= 0 and w < float("inf")) for w in self.class_weights) or sum(self.class_weights) <= 0:
                raise ValueError(f"class_weights must be finite, >= 0 and not all 0, got {list(self.class_weights)}")
        return self

    def value_map(self) -> dict[int, int]:
        """Stored value -> class id, the explicit or the default mapping (see class docstring)."""
        if self.mask_values is not None:
            return dict(self.mask_values)
        if len(self.codes) == 2:
            return {0: 0, 255: 1, 1: 1}
        return {i: i for i in range(len(self.codes))}


class DetectionParams(Section):
    """Object detection with torchvision detectors (replacing the thesis' icevision)."""

    model: str = "fasterrcnn_efficientnet_lite0_fpn"  # see dermdl.tasks.detection.names.DETECTORS
    score_threshold: float = Field(0.5, ge=0, le=1)  # overlays/gallery; results JSON keeps every score
    clip_boxes: bool = False  # clip boxes reaching outside their image (else validate reports an error)

    @field_validator("model")
    @classmethod
    def _known_detector(cls, value: str) -> str:
        from dermdl.tasks.detection.names import check_name

        return check_name(value)  # ValueError listing the detectors
