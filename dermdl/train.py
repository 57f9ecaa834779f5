"""The one training core: a fastai ``Learner`` around whatever model and data a task provides.

Schedule as in the thesis pipeline: ``fepochs`` epochs with the pretrained body frozen, then
``epochs`` unfrozen with discriminative learning rates (fastai ``fine_tune``), once per
progressive-resizing size factor. Every epoch of every phase and learner is logged, with one
continuous step counter, to DVCLive (``dvc plots show``) and TensorBoard. How the learners of one
run are chained (weak labels, self-training rounds) lives in :mod:`dermdl.weak_labels`.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dermdl.callbacks import EpochLogger, Monitor, balanced_sampler, check_monitor, precision
from dermdl.models import ModelConfig
from dermdl.params import Params
from dermdl.recipe import opt_func
from dermdl.tasks import Task


@dataclass(frozen=True)
class FitResult:
    config: ModelConfig
    model: Any
    images_per_second: float
    seconds: float
    epochs_run: int
    lr: float
    precision: str
    rounds: list[dict] = field(default_factory=list)  # self-training: test metrics after each round
    lr_plot: bytes | None = None  # PNG of the LR finder, when train.auto_lr
    best_epoch: int | None = None  # keep_best: epoch (1-based, over the last schedule) whose weights are kept
    stopped_early: bool = False


def scaled(params: Params, factor: float) -> Params:
    """Params for one progressive-resizing stage: smaller images, proportionally larger batches."""
    if factor == 1.0:
        return params
    size = max(32, round(params.train.input_size * factor / 32) * 32)
    bs = max(1, round(params.train.bs / factor**2))
    return params.override({"train.input_size": size, "train.bs": bs})


class Session:
    """What every learner of one training run shares: the logs, the step counter, timing, the config."""

    def __init__(self, task: Task, params: Params, classes: list[str], out: Path):
        from dvclive import Live
        from torch.utils.tensorboard import SummaryWriter

        self.task, self.params, self.classes, self.out = task, params, list(classes), out
        train = params.train
        self.config = ModelConfig(
            task=task.name, arch=train.model, classes=list(classes), input_size=train.input_size, mean=[], std=[],
            preprocess_size=params.preprocess.size, resize=params.preprocess.resize,
            extra={"exp_name": train.exp_name, "pretrained": train.pretrained, **task.config_extra(params)},
        )
        self.live = Live(dir=str(out / "dvclive"), save_dvc_exp=False, dvcyaml=False)
        self.writer = SummaryWriter(log_dir=str(out / "tensorboard" / train.exp_name))
        self.step = [0]
        self.seconds = 0.0
        self.image_epochs = 0
        self.lr = train.lr
        self.lr_plot: bytes | None = None
        self.precision = "off"
        self.monitor: Monitor | None = None

    def close(self) -> None:
        self.writer.close()
        self.live.end()

    def dataloaders(self, train_records: list[dict], valid_records: list[dict], params: Params, norm: Any):
        dls = self.task.dataloaders(train_records, valid_records, self.classes, params, norm)
        if params.train.oversample:
            dls.train = dls.train.new(get_idxs=balanced_sampler([r["stratum"] for r in train_records]))
        return dls

    def learner(self, train_records: list[dict], valid_records: list[dict], loss_records: list[dict] | None = None):
        """A fresh learner (pretrained body, new head) on these records; ``loss_records`` set class weights."""
        from fastai.learner import Learner

        model, norm = self.task.build_model(self.config, self.params.train.pretrained)
        self.config = replace(self.config, mean=list(norm[0]), std=list(norm[1]))
        loss, metrics = self.task.loss_and_metrics(self.params, self.classes, loss_records or train_records)
        if valid_records:
            check_monitor(self.params.train.monitor, metrics)
        cbs = list(self.task.callbacks(self.params))
        if self.params.train.mixup:
            from fastai.callback.mixup import MixUp

            cbs.append(MixUp(self.params.train.mixup))
        dls = self.dataloaders(train_records, valid_records, self.params, norm)
        learn = Learner(dls, model, loss_func=loss, metrics=metrics, splitter=self.task.splitter,
                        opt_func=opt_func(self.params.train), cbs=cbs, path=self.out)
        learn.dermdl_norm = norm
        self._accelerate(learn)
        return learn

    def _accelerate(self, learn) -> None:
        """AMP and channels_last on CUDA; CPU stays fp32 (CPU autocast is slower and less accurate here)."""
        from fastai.torch_core import default_device

        device = default_device()
        self.precision = precision(device, self.params.train.mixed_precision)
        if self.precision == "bf16":
            learn.to_bf16()
        elif self.precision == "fp16":
            learn.to_fp16()
        if device.type == "cuda" and self.params.train.channels_last and self.task.name != "detection":
            import torch

            learn.model.to(memory_format=torch.channels_last)

    def find_lr(self, learn) -> float:
        """fastai LR finder, valley suggestion; the curve is kept as a PNG for the model folder."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from fastai.callback.schedule import valley

        suggestion = learn.lr_find(suggest_funcs=(valley,), show_plot=True)  # draws on a new Agg figure
        figure = plt.gcf()
        figure.suptitle(f"LR finder: valley = {suggestion.valley:.2e}")
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100)
        plt.close(figure)
        self.lr_plot = buffer.getvalue()
        return float(suggestion.valley)

    def fine_tune(self, learn, train_records: list[dict], valid_records: list[dict], label: str = "") -> None:
        """Frozen then unfrozen phases, once per size factor, with monitoring callbacks."""
        from fastai.callback.tracker import ReduceLROnPlateau

        train = self.params.train
        if train.auto_lr and self.lr_plot is None:
            self.lr = self.find_lr(learn)
            print(f"train: LR finder (valley) suggests lr = {self.lr:.2e}")
        monitored = bool(valid_records) and (train.early_stopping or train.keep_best)
        self.monitor = Monitor(train.monitor, train.min_delta, train.early_stopping, train.keep_best) if monitored else None
        start = time.perf_counter()
        for factor in train.progressive_resizing or (1.0,):
            sized = scaled(self.params, factor)
            learn.dls = self.dataloaders(train_records, valid_records, sized, learn.dermdl_norm)
            stage = f"{label}x{factor:g}_" if train.progressive_resizing else label
            for phase, epochs in ((f"{stage}frozen", train.fepochs), (f"{stage}unfrozen", train.epochs)):
                if epochs == 0 or (self.monitor and self.monitor.stopped):
                    continue
                cbs: list = [EpochLogger(self.live, self.writer, phase, self.step)]
                cbs += [self.monitor] if self.monitor else []
                if train.plateau and valid_records:
                    cbs.append(ReduceLROnPlateau(monitor=train.monitor, patience=train.plateau,
                                                 factor=train.plateau_factor, min_delta=train.min_delta))
                before = self.step[0]
                self._run_phase(learn, phase, epochs, cbs)
                self.image_epochs += len(train_records) * (self.step[0] - before)
        self.seconds += time.perf_counter() - start
        if self.monitor:
            self.monitor.restore_best(learn.model)

    def _run_phase(self, learn, phase: str, epochs: int, cbs: list) -> None:
        lr, plateau = self.lr, self.params.train.plateau
        if phase.endswith("unfrozen"):
            learn.unfreeze()
            lrs = slice(lr / 200, lr / 2)
            if plateau:
                learn.fit(epochs, lrs, cbs=cbs)
            else:
                learn.fit_one_cycle(epochs, lrs, pct_start=0.3, div=5.0, cbs=cbs)
        else:
            learn.freeze()
            if plateau:
                learn.fit(epochs, slice(lr), cbs=cbs)
            else:
                learn.fit_one_cycle(epochs, slice(lr), pct_start=0.99, cbs=cbs)

    def result(self, learn, rounds: list[dict] | None = None) -> FitResult:
        learn.model.eval()
        ips = self.image_epochs / self.seconds if self.seconds else 0.0
        monitor = self.monitor
        return FitResult(self.config, learn.model, ips, self.seconds, self.step[0], self.lr, self.precision,
                         rounds or [], self.lr_plot, monitor.best_epoch if monitor and monitor.keep_best else None,
                         bool(monitor and monitor.stopped))


def seed_everything(params: Params) -> None:
    from fastai.torch_core import set_seed

    set_seed(params.train.seed, reproducible=params.train.deterministic)
    if params.train.deterministic:
        import torch

        torch.use_deterministic_algorithms(True, warn_only=True)  # warn, not fail, on GPU ops without one


def fit(
    task: Task,
    params: Params,
    train_records: list[dict],
    valid_records: list[dict],
    classes: list[str],
    out: Path,
    weak_records: list[dict] | None = None,
    evaluate: Callable[[Any, ModelConfig, int], dict] | None = None,
) -> FitResult:
    """Train a model for ``task``; logs go to ``out/dvclive`` and ``out/tensorboard``.

    ``evaluate(model, config, round)`` scores a self-training round on the test sets.
    """
    from dermdl.weak_labels import train_with_weak_labels

    seed_everything(params)
    session = Session(task, params, classes, out)
    try:
        learn, rounds = train_with_weak_labels(session, train_records, valid_records, weak_records or [], evaluate)
    finally:
        session.close()
    return session.result(learn, rounds)
