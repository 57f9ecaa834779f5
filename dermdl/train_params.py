"""The ``train:`` section: the schedule and its procedures (splits, monitoring, LR finder, augmentation,
MixUp, hardware, data-parallel and multi-node launch), the same for every task.

Why a module of its own: it is the largest section and the only one the training core reads as a whole;
:mod:`dermdl.params` puts it together with the data and stage sections (:mod:`dermdl.stage_params`) and
the tasks' own (:mod:`dermdl.task_params`), and re-exports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from dermdl.options import Optimizer, Recipe, TTAMode
from dermdl.task_params import Section as _Section


class TrainParams(_Section):
    """The schedule and its procedures, the same for every task; ``recipe`` names the schedule
    (dermdl.options.RECIPES). What a task builds and optimises lives in its own section."""

    pretrained: bool | str = True  # the network's starting weights: ImageNet (true), none (false) or a file
    input_size: int = Field(128, ge=8, le=4096)
    bs: int = Field(32, ge=1, le=65_536)
    lr: float = Field(1e-3, gt=0, le=10)
    recipe: Recipe = "one_cycle"
    epochs: int = Field(4, ge=0, le=10_000)
    fepochs: int = Field(0, ge=0, le=10_000)
    valid_size: float = Field(0.2, gt=0, lt=1)
    seed: int = Field(42, ge=0, le=2**32 - 1)  # numpy/torch seeds are 32-bit
    weak_labels: Literal["none", "pretrain", "self_train"] = "none"
    nrepeats: int = Field(1, ge=1, le=100)  # self_train: teacher -> pseudo-labels -> student rounds
    augment: bool = True  # random flips/90° turns, plus the rotation, zoom and lighting below
    max_rotate: float = Field(45.0, ge=0, le=180)  # degrees on top of the 90° turns (45: every angle)
    max_zoom: float = Field(1.15, ge=1, le=4)
    max_lighting: float = Field(0.2, ge=0, lt=1)  # brightness/contrast factors in [1 - x, 1 + x]
    max_color: float = Field(0.0, ge=0, lt=1)  # per-channel gains and saturation in [1 - x, 1 + x]
    exp_name: str = "dermdl"
    optimizer: Optimizer = "adamw"
    wd: float = Field(0.01, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    deterministic: bool = True  # seeded, deterministic kernels: same seed -> same model and metrics
    # Splits: k-fold cross-validation estimate before the final model; full_data = no validation split.
    cv_folds: int = Field(0, ge=0, le=50)
    full_data: bool = False
    # Monitoring (needs a validation split): early stopping, reduce-LR-on-plateau, best checkpoint.
    monitor: str = (
        "valid_loss"  # valid_loss or a metric name (accuracy, balanced_accuracy_score, foreground_dice, ap50, ...)
    )
    early_stopping: int = Field(0, ge=0, le=10_000)  # patience in epochs; 0 = off
    plateau: int = Field(
        0, ge=0, le=10_000
    )  # patience; > 0: constant LR (no one-cycle), divided by plateau_factor on a plateau
    plateau_factor: float = Field(10.0, gt=1)
    keep_best: bool = False  # end with the weights of the best monitored epoch
    min_delta: float = Field(0.0, ge=0)
    # LR finder, progressive resizing, MixUp, oversampling.
    auto_lr: bool = False  # fastai lr_find, valley suggestion replaces train.lr; plot in <out>/model/lr_find.png
    progressive_resizing: tuple[float, ...] = ()  # e.g. [0.5, 1.0]: the schedule once per size factor
    mixup: float = Field(0.0, ge=0)  # MixUp alpha; 0 = off
    oversample: bool = False  # draw training images with class-balanced probabilities
    # Views averaged when training itself predicts (cross-validation held-out folds, pseudo-labels);
    # infer.tta is for the test sets and never changes the model.
    tta: TTAMode = "auto"
    # Hardware: mixed precision applies on CUDA only (CPU trains in fp32); channels_last everywhere.
    mixed_precision: Literal["auto", "bf16", "fp16", "off"] = "auto"
    channels_last: bool = True
    # Data-parallel: torchrun = the train stage launches itself under torchrun with nproc processes.
    launcher: Literal["none", "torchrun"] = "none"
    nproc: int = Field(2, ge=1, le=1024)
    # Several nodes (docs/distributed.md): left at 1 / 0 / "", a SLURM job's variables fill them in
    # (dermdl.launch says which wins); rdzv_endpoint = host:port of node 0 (torchrun's c10d rendezvous)
    nnodes: int = Field(1, ge=1, le=4096)
    node_rank: int = Field(0, ge=0, le=4095)
    rdzv_endpoint: str = ""
    # Seconds any collective (and the rendezvous) waits for a peer: bounds the hang after a node is lost
    # silently (a killed process is seen at once); must exceed the longest rank-0-only step (LR finder,
    # a CV fold's held-out analysis), which 10 min does on HAM10000-sized data
    dist_timeout: int = Field(600, ge=5, le=86_400)

    @field_validator("cv_folds")
    @classmethod
    def _folds(cls, value: int) -> int:
        if value == 1:
            raise ValueError("cv_folds=1 is not cross-validation; use 0 (off) or k >= 2")
        return value

    @field_validator("progressive_resizing")
    @classmethod
    def _size_factors(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if value and (any(not 0 < f <= 1 for f in value) or list(value) != sorted(set(value)) or value[-1] != 1):
            raise ValueError(
                f"give increasing size factors in (0, 1] ending with 1.0, e.g. [0.5, 1.0]; got {list(value)}"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TrainParams:
        needs_valid = [k for k in ("early_stopping", "plateau", "keep_best") if getattr(self, k)]
        if self.full_data and needs_valid:
            raise ValueError(
                f"full_data trains without a validation split, so {needs_valid} cannot monitor anything; "
                "set them to 0/false or full_data: false"
            )
        if self.node_rank >= self.nnodes:
            raise ValueError(
                f"node_rank={self.node_rank} must be below nnodes={self.nnodes} (nodes are numbered 0..nnodes-1)"
            )
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ValueError(f"nnodes={self.nnodes} needs rdzv_endpoint: host:port of node 0, e.g. node0:29500")
        return self

    @field_validator("rdzv_endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        from dermdl.launch import check_endpoint

        return check_endpoint(value, "rdzv_endpoint")

    @field_validator("pretrained")
    @classmethod
    def _weights_file_exists(cls, value: bool | str) -> bool | str:
        if isinstance(value, str) and not Path(value).is_file():
            raise ValueError(
                f"weights file {value!r} does not exist; give true, false or a path to a .pth/.safetensors file"
            )
        return value
