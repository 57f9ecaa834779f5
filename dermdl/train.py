"""The one training core: a fastai ``Learner`` around whatever model and data a task provides.

Schedule as in the thesis pipeline: ``fepochs`` epochs with the pretrained body frozen, then
``epochs`` unfrozen with discriminative learning rates (fastai ``fine_tune``). Every epoch of every
phase is logged, with one continuous step counter, to DVCLive (``dvc plots show``) and TensorBoard.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fastai.callback.core import Callback

from dermdl.models import ModelConfig
from dermdl.params import Params
from dermdl.recipe import opt_func
from dermdl.tasks import Task


class EpochLogger(Callback):
    """Log fastai's per-epoch metrics to DVCLive and TensorBoard across all training phases.

    dvclive's own fastai callback ends its run after one ``fine_tune``; weak-label pre-training
    runs several, so the core owns the run and this callback only logs into it.
    """

    order = 60  # after the Recorder has written the epoch's values

    def __init__(self, live: Any, writer: Any, phase: str, step: list[int]):
        self.live, self.writer, self.phase, self.step = live, writer, phase, step

    def after_batch(self) -> None:
        if self.training and not hasattr(self.learn, "lr_finder"):
            self.writer.add_scalar("train/batch_loss", float(self.learn.smooth_loss), self.learn.train_iter)

    def after_epoch(self) -> None:
        names, values = self.learn.recorder.metric_names, self.learn.recorder.log
        for name, value in zip(names, values):
            if name in ("epoch", "time") or value is None:
                continue
            # fastai names: train_loss, valid_loss, <metric>; with Recorder.train_metrics (detection's
            # per-component losses) also train_<metric> / valid_<metric>.
            prefix, _, rest = name.partition("_")
            key = f"{prefix}/{rest}" if prefix in ("train", "valid") and rest else f"valid/{name}"
            self.live.log_metric(key, float(value))
            self.writer.add_scalar(key, float(value), self.step[0])
        self.live.log_metric("frozen", int(self.phase.endswith("frozen") and not self.phase.endswith("unfrozen")))
        self.live.next_step()
        self.step[0] += 1


@dataclass(frozen=True)
class FitResult:
    config: ModelConfig
    model: Any
    images_per_second: float
    seconds: float
    epochs_run: int


def _fine_tune(learn, params: Params, n_items: int, live, writer, step: list[int], label: str) -> tuple[float, int]:
    """Frozen then unfrozen phases; returns (seconds, image-epochs) for throughput reporting."""
    train = params.train
    start = time.perf_counter()
    for phase, epochs in ((f"{label}frozen", train.fepochs), (f"{label}unfrozen", train.epochs)):
        if epochs == 0:
            continue
        logger = EpochLogger(live, writer, phase, step)
        if phase.endswith("unfrozen"):
            learn.unfreeze()
            learn.fit_one_cycle(epochs, slice(train.lr / 200, train.lr / 2), pct_start=0.3, div=5.0, cbs=[logger])
        else:
            learn.freeze()
            learn.fit_one_cycle(epochs, slice(train.lr), pct_start=0.99, cbs=[logger])
    return time.perf_counter() - start, n_items * (train.fepochs + train.epochs)


def fit(
    task: Task,
    params: Params,
    train_records: list[dict],
    valid_records: list[dict],
    classes: list[str],
    out: Path,
    weak_records: list[dict] | None = None,
) -> FitResult:
    """Train a model for ``task``; logs go to ``out/dvclive`` and ``out/tensorboard``."""
    from dvclive import Live
    from fastai.learner import Learner
    from fastai.torch_core import set_seed
    from torch.utils.tensorboard import SummaryWriter

    train = params.train
    set_seed(train.seed, reproducible=train.deterministic)
    if train.deterministic:
        import torch

        torch.use_deterministic_algorithms(True, warn_only=True)  # warn, not fail, on GPU ops without one
    config = ModelConfig(
        task=task.name,
        arch=train.model,
        classes=list(classes),
        input_size=train.input_size,
        mean=[],
        std=[],
        preprocess_size=params.preprocess.size,
        resize=params.preprocess.resize,
        extra={"exp_name": train.exp_name, "pretrained": train.pretrained, **task.config_extra(params)},
    )
    model, norm = task.build_model(config, train.pretrained)
    config = replace(config, mean=list(norm[0]), std=list(norm[1]))
    loss, metrics = task.loss_and_metrics(params, list(classes), train_records)
    live = Live(dir=str(out / "dvclive"), save_dvc_exp=False, dvcyaml=False)
    writer = SummaryWriter(log_dir=str(out / "tensorboard" / train.exp_name))
    step = [0]
    seconds = image_epochs = 0.0
    try:
        rounds = [("weak_", weak_records)] if weak_records else []
        rounds.append(("", train_records))
        learn = None
        for label, records in rounds:
            dls = task.dataloaders(records, valid_records, classes, params, norm)
            if learn is None:
                learn = Learner(dls, model, loss_func=loss, metrics=metrics, splitter=task.splitter,
                                opt_func=opt_func(train),
                                cbs=task.callbacks(params), path=out)
            else:
                learn.dls = dls
            spent, done = _fine_tune(learn, params, len(records), live, writer, step, label)
            seconds += spent
            image_epochs += done
    finally:
        writer.close()
        live.end()
    learn.model.eval()
    ips = image_epochs / seconds if seconds else 0.0
    return FitResult(config, learn.model, ips, seconds, step[0])
