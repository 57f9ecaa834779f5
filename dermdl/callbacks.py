"""fastai callbacks and data-loader tweaks the training core adds on top of fastai's own.

fastai's trackers (early stopping, SaveModelCallback) reset on every ``fit``; a dermdl schedule is
several fits (frozen, unfrozen, per size factor), so :class:`Monitor` keeps its best value and
patience across all of them. Logging is owned by the core's DVCLive run for the same reason.
"""

from __future__ import annotations

import time
import warnings
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from fastai.callback.core import Callback, CancelFitException
from fastai.callback.tracker import ReduceLROnPlateau, TrackerCallback

from dermdl.distributed import unwrap


class EpochLogger(Callback):
    """Log fastai's per-epoch metrics to DVCLive and TensorBoard across all training phases.

    dvclive's own fastai callback ends its run after one ``fine_tune``; a schedule runs several,
    so the core owns the run and this callback only logs into it.
    """

    order = 60  # after the Recorder has written the epoch's values

    def __init__(self, log: Any, phase: str, skip: int = 0):
        self.log, self.phase, self.skip = log, phase, skip

    def after_batch(self) -> None:
        if self.training and not hasattr(self.learn, "lr_finder") and self.epoch >= self.skip:
            self.log.batch_loss(float(self.learn.smooth_loss), self.learn.train_iter)

    def after_epoch(self) -> None:
        if self.epoch < self.skip:  # fast-forwarded on resume: done before the interruption
            return
        names, values = self.learn.recorder.metric_names, self.learn.recorder.log
        for name, value in zip(names, values):
            if name in ("epoch", "time") or value is None:
                continue
            # fastai names: train_loss, valid_loss, <metric>; with Recorder.train_metrics (detection's
            # per-component losses) also train_<metric> / valid_<metric>.
            prefix, _, rest = name.partition("_")
            key = f"{prefix}/{rest}" if prefix in ("train", "valid") and rest else f"valid/{name}"
            self.log.log(key, float(value))
        frozen = self.phase.endswith("frozen") and not self.phase.endswith("unfrozen")
        self.log.log("frozen", int(frozen), tensorboard=False)
        self.log.log("lr", float(self.learn.opt.hypers[-1]["lr"]), tensorboard=False)
        self.log.next_step()


class EpochTable(Callback):
    """fastai's epoch table with the phase in every row, replacing its ProgressCallback.

    fastai titles each epoch "Epoch 1/1" whatever the phase, and fastprogress draws its batch bars
    (carriage-return frames) into a piped log as well; here each epoch is one row naming its phase,
    and the batch bar, titled with the phase too, is drawn only on a terminal (``bars``).
    """

    order = 60  # as ProgressCallback: after the Recorder has the epoch's values

    def __init__(self, title: str, skip: int = 0, bars: bool = False, show: bool = True):
        self.title, self.skip, self.bars, self.show = title, skip, bars, show
        self.pbar: Any = None

    def before_fit(self) -> None:
        from dermdl.console import table_line

        self.old_logger, self.learn.logger = self.learn.logger, self._row
        names = ["phase", "epoch", *self.learn.recorder.metric_names[1:]]  # Recorder's first name: epoch
        self.widths = [max(len(self.title), 5), max(len(f"{self.n_epoch}/{self.n_epoch}"), 5)]
        self.widths = [*self.widths, *(max(len(n), 8) for n in names[2:])]
        self._print(table_line(names, self.widths))

    def _print(self, line: str) -> None:
        if self.show:
            print(line, flush=True)

    def _row(self, log: list) -> None:
        from dermdl.console import cell, table_line

        if self.epoch >= self.skip:  # fast-forwarded on resume: printed by the interrupted run
            cells = [self.title, f"{self.epoch + 1}/{self.n_epoch}", *(cell(v) for v in log[1:])]
            self._print(table_line(cells, self.widths))

    def _launch(self, what: str) -> None:
        if not (self.bars and self.show and self.epoch >= self.skip and len(self.dl)):
            return
        from fastprogress.fastprogress import progress_bar

        self.pbar = progress_bar(self.dl, leave=False)
        self.pbar.prefix = f"{self.title} {self.epoch + 1}/{self.n_epoch} {what}"
        self.pbar.update(0)

    def before_train(self) -> None:
        self._launch("train")

    def before_validate(self) -> None:
        self._launch("valid")

    def after_batch(self) -> None:
        if self.pbar is not None:
            self.pbar.update(self.iter + 1)

    def _close_bar(self) -> None:
        if self.pbar is not None:
            self.pbar.on_iter_end()
            self.pbar = None

    def after_train(self) -> None:
        self._close_bar()

    def after_validate(self) -> None:
        self._close_bar()

    def after_fit(self) -> None:
        self._close_bar()
        self.learn.logger = self.old_logger


class Monitor(TrackerCallback):
    """Early stopping and best-epoch weights over a whole schedule (``reset_on_fit=False``)."""

    order = TrackerCallback.order + 1

    def __init__(self, monitor: str, min_delta: float, patience: int, keep_best: bool):
        super().__init__(monitor=monitor, min_delta=min_delta, reset_on_fit=False)
        self.patience, self.keep_best = patience, keep_best
        self.wait, self.stopped, self.epochs_seen = 0, False, 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_epoch: int | None = None
        self.skip = 0  # epochs of the current fit fast-forwarded on resume

    STATE = ("best", "wait", "stopped", "best_state", "best_epoch", "epochs_seen")

    def state(self) -> dict:
        return {k: getattr(self, k) for k in self.STATE}

    def load(self, state: dict) -> None:
        for key in self.STATE:
            setattr(self, key, state[key])

    def after_epoch(self) -> None:
        if self.epoch < self.skip:
            return
        super().after_epoch()
        self.epochs_seen += 1
        if self.new_best:
            self.wait, self.best_epoch = 0, self.epochs_seen
            if self.keep_best:
                model = unwrap(self.learn.model)  # DDP wraps the model during a fit
                self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return
        self.wait += 1
        if self.patience and self.wait >= self.patience:
            self.stopped = True
            raise CancelFitException()

    def restore_best(self, model: torch.nn.Module) -> None:
        if self.keep_best and self.best_state is not None:
            model.load_state_dict(self.best_state)


class Plateau(ReduceLROnPlateau):
    """fastai's reduce-LR-on-plateau whose progress (best value, patience used, reduced LRs) is saved
    in each checkpoint and put back on resume; ``fit`` would otherwise restart it at the initial LR."""

    def __init__(self, *args: Any, skip: int = 0, resume: dict | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.skip, self.resume = skip, resume  # epochs fast-forwarded on resume, and the state after them

    def before_fit(self) -> None:
        super().before_fit()  # runs after fit() has set the initial LRs
        if self.resume:
            self.best, self.wait = self.resume["best"], self.resume["wait"]
            for hyper, lr in zip(self.opt.hypers, self.resume["lrs"]):
                hyper["lr"] = lr

    def after_epoch(self) -> None:
        if self.epoch >= self.skip:
            super().after_epoch()

    def state(self) -> dict:
        return {"best": float(self.best), "wait": int(self.wait), "lrs": [float(h["lr"]) for h in self.opt.hypers]}


class Checkpointer(Callback):
    """After each real (not fast-forwarded) epoch: count it and let the session save a checkpoint."""

    order = Plateau.order + 1  # after the monitor and the plateau have updated their state

    def __init__(self, save: Any, skip: int = 0):
        self.save, self.skip = save, skip

    def after_epoch(self) -> None:
        if self.epoch >= self.skip:
            self.save(self.learn)


class RestoreEpochState(Callback):
    """Resume mid-phase: when epoch ``epoch`` begins, put back every generator and the running
    (smoothed) training loss as they were when that epoch began in the interrupted run."""

    order = -100

    def __init__(self, epoch: int, restore: Any):
        self.at, self.restore = epoch, restore

    def before_epoch(self) -> None:
        if self.epoch == self.at:
            self.restore(self.learn)


class PhaseTimer(Callback):
    """Training throughput of one phase (training batches only, validation excluded) and the share of
    that time spent making batches: the two numbers that tell a slow data path from a slow model."""

    def __init__(self):
        self.seconds = self.load_seconds = 0.0
        self.images = self.epochs = 0

    def _loaded(self) -> float:
        return float(getattr(self.learn.dls.train, "load_seconds", 0.0))

    def before_train(self) -> None:
        self.began, self.load_began = time.perf_counter(), self._loaded()

    def after_batch(self) -> None:
        if self.training:
            self.images += len(self.learn.xb[0])

    def after_train(self) -> None:
        self.seconds += time.perf_counter() - self.began
        self.load_seconds += self._loaded() - self.load_began
        self.epochs += 1

    def summary(self, phase: str) -> dict:
        return {
            "phase": phase,
            "epochs": self.epochs,
            "images": self.images,
            "seconds": round(self.seconds, 2),
            "images_per_second": round(self.images / self.seconds, 2) if self.seconds else 0.0,
            "data_loading_share": round(self.load_seconds / self.seconds, 4) if self.seconds else 0.0,
        }


def metric_names(metrics: list) -> list[str]:
    """The names fastai's Recorder will use, known before training starts (to check ``monitor``)."""
    from fastai.learner import AvgMetric
    from fastai.metrics import Metric

    names = ["train_loss", "valid_loss"]
    for metric in metrics:
        names.append(metric.name if isinstance(metric, Metric) else AvgMetric(metric).name)
    return names


def check_monitor(monitor: str, metrics: list) -> None:
    names = metric_names(metrics)[1:]
    if monitor not in names:
        raise ValueError(f"train.monitor: {monitor!r} is not logged for this task; use one of {names}")


def balanced_sampler(strata: Sequence[str | None]):
    """``get_idxs`` for a fastai DataLoader: n draws with replacement, each class equally likely.

    Draws use numpy's global generator, which fastai's ``set_seed`` seeds, so runs stay reproducible.
    """
    counts = Counter(strata)
    weights = np.array([1.0 / counts[s] for s in strata])
    weights /= weights.sum()

    def get_idxs() -> list[int]:
        return np.random.choice(len(strata), len(strata), replace=True, p=weights).tolist()

    return get_idxs


def precision(device: torch.device, mode: str) -> str:
    """Mixed precision actually used: ``off`` on CPU; ``auto`` = bf16 where the GPU has it, else fp16."""
    if device.type != "cuda":
        if mode in ("bf16", "fp16"):
            warnings.warn(
                f"train.mixed_precision={mode} applies on CUDA only; training in fp32 on {device.type}", stacklevel=2
            )
        return "off"
    if mode == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return mode
