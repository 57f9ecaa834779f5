"""One training run's shared machinery: a :class:`Session` (logs, step counter, config, timing) builds the
fastai Learners and runs the phases of :mod:`dermdl.schedule`: monitoring, LR finder, AMP/channels_last,
per-phase throughput, checkpoint/resume hooks; :meth:`Session.result` gives the :class:`FitResult`.

Why a module of its own: :func:`dermdl.train.fit` is the entry (seeding, checkpoint store, rank order) and
:mod:`dermdl.weak_labels` chains learners; both drive a Session, which owns how one learner is trained.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from dermdl.callbacks import (
    Checkpointer,
    EpochLogger,
    EpochTable,
    Monitor,
    PhaseTimer,
    Plateau,
    RestoreEpochState,
    balanced_sampler,
    check_monitor,
    precision,
)
from dermdl.checkpoint import Checkpoints, EpochState, RoundState
from dermdl.console import live_bars, phase_start, phase_title
from dermdl.distributed import (
    DataParallel,
    alone,
    from_main,
    is_main,
    no_gather,
    shard_train_loader,
    unwrap,
    world_size,
)
from dermdl.models import ModelConfig
from dermdl.optimizers import opt_func
from dermdl.params import Params
from dermdl.records import Record
from dermdl.runlog import RunLog
from dermdl.schedule import Phase, fit_plan, phases
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
    phases: list[dict] = field(default_factory=list)  # PhaseTimer.summary() of every phase run


def scaled(params: Params, factor: float) -> Params:
    """Params for one progressive-resizing stage: smaller images, proportionally larger batches."""
    if factor == 1.0:
        return params
    size = max(32, round(params.train.input_size * factor / 32) * 32)
    bs = max(1, round(params.train.bs / factor**2))
    return params.override({"train.input_size": size, "train.bs": bs})


class Session:
    """What every learner of one training run shares: the logs, the step counter, timing, the config."""

    def __init__(
        self, task: Task, params: Params, classes: list[str], out: Path, checkpoints: Checkpoints, context: str = ""
    ):
        self.task, self.params, self.classes, self.out = task, params, list(classes), out
        self.context = context  # printed before each phase's name, e.g. "fold 2/5"
        train = params.train
        self.config = ModelConfig(
            task=task.name,
            arch=params.model,
            classes=list(classes),
            input_size=train.input_size,
            mean=[],
            std=[],
            preprocess_size=params.preprocess.size,
            resize=params.preprocess.resize,
            color_constancy=params.preprocess.color_constancy,
            extra={"exp_name": train.exp_name, "pretrained": train.pretrained, **task.config_extra(params)},
        )
        self.checkpoints = checkpoints
        self.resume: EpochState | None = checkpoints.load()
        # self-training: the state after the last finished round (the epoch checkpoint may be older)
        self.round_resume: RoundState | None = checkpoints.load_round()
        if self.round_resume and self.resume and self.resume.epochs_done <= self.round_resume.epochs_done:
            self.resume = None
        resuming = self.resume or self.round_resume
        self.log = RunLog(out, train.exp_name, int(resuming.step) if resuming else None, is_main())
        self.seconds = 0.0
        self.image_epochs = 0
        self.phases: list[dict] = []  # per phase: training images/s and the data-loading share
        self.lr = train.lr
        self.lr_plot: bytes | None = None
        self.precision = "off"
        self.monitor: Monitor | None = None
        self.plateau: Plateau | None = None  # the current phase's
        self.lr_ready = not params.train.auto_lr
        self.tune = 0  # fine_tune calls so far (a checkpoint's monitor state belongs to one)
        self.epochs_done = 0  # over the whole run, fast-forwarded ones included (checkpoint position)
        if resuming:
            self.lr, self.lr_ready = float(resuming.lr), True

    def close(self) -> None:
        self.log.close()

    def dataloaders(self, train_records: list[Record], valid_records: list[Record], params: Params, norm: Any):
        world = world_size()
        if world > 1:  # train.bs is the global batch
            if params.train.bs < world:
                raise ValueError(f"train.bs={params.train.bs} is smaller than the {world} processes; raise train.bs")
            params = params.override({"train.bs": params.train.bs // world})
        dls = self.task.dataloaders(train_records, valid_records, self.classes, params, norm)
        if params.train.oversample or world > 1:
            draw = balanced_sampler([r["stratum"] for r in train_records]) if params.train.oversample else None
            shard_train_loader(dls.train, draw)
        if world > 1:
            no_gather(dls)
        return dls

    def learner(
        self, train_records: list[Record], valid_records: list[Record], loss_records: list[Record] | None = None
    ):
        """A fresh learner (pretrained body, new head) on these records; ``loss_records`` set class weights."""
        import fastai.callback.all  # noqa: F401  patches Learner (fit_one_cycle, lr_find, to_fp16)
        from fastai.callback.progress import ProgressCallback
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
        if world_size() > 1:
            cbs.append(DataParallel())
        learn = Learner(
            dls,
            model,
            loss_func=loss,
            metrics=metrics,
            splitter=self.task.splitter,
            opt_func=opt_func(self.params.train),
            cbs=cbs,
            path=self.out,
        )
        learn.remove_cb(ProgressCallback)  # EpochTable prints each phase's epochs (and bars on a terminal)
        learn.dermdl_norm = norm
        self._accelerate(learn)
        return learn

    def _accelerate(self, learn) -> None:
        """AMP on CUDA (CPU stays fp32: CPU autocast is slower and less accurate here); channels_last on
        every device (on CPU, oneDNN's NHWC convolutions train EfficientNet ~1.6x faster)."""
        from fastai.torch_core import default_device

        device = default_device()
        self.precision = precision(device, self.params.train.mixed_precision)
        if self.precision == "bf16":
            learn.to_bf16()
        elif self.precision == "fp16":
            learn.to_fp16()
        if self.params.train.channels_last and self.task.capabilities.supports("channels_last"):
            learn.model.to(memory_format=torch.channels_last)

    def find_lr(self, learn) -> float:
        """fastai LR finder, valley suggestion; the curve is kept as a PNG for the model folder."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from fastai.callback.schedule import valley

        if world_size() > 1:  # rank 0 alone, on its shard; every rank then uses its suggestion
            lr = None
            if is_main():
                with learn.removed_cbs(learn.data_parallel), alone():
                    lr = self._lr_find_plot(learn, valley, plt)
            return float(from_main(lr))
        return self._lr_find_plot(learn, valley, plt)

    def _lr_find_plot(self, learn, valley: Any, plt: Any) -> float:
        suggestion = learn.lr_find(suggest_funcs=(valley,), show_plot=True)  # draws on a new Agg figure
        figure = plt.gcf()
        figure.suptitle(f"LR finder: valley = {suggestion.valley:.2e}")
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100)
        plt.close(figure)
        self.lr_plot = buffer.getvalue()
        return float(suggestion.valley)

    # -- resume -------------------------------------------------------------------------------
    def _position(self, model: torch.nn.Module, dls: Any = None) -> dict:
        """Where the run stands: the :class:`~dermdl.checkpoint.Position` fields of both checkpoint kinds."""
        from dermdl.checkpoint import capture_rng

        return {
            "epochs_done": self.epochs_done,
            "step": self.log.step,
            "lr": self.lr,
            "tune": self.tune,
            "model": {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()},
            "rng": capture_rng(dls),
        }

    def _save_checkpoint(self, learn) -> None:
        from dermdl.checkpoint import plain_optimizer_state

        self.epochs_done += 1
        if not is_main():
            return
        self.checkpoints.save(
            EpochState(
                **self._position(learn.model, learn.dls),
                opt=plain_optimizer_state(learn.opt),
                monitor=self.monitor.state() if self.monitor else None,
                plateau=self.plateau.state() if self.plateau else None,
                smooth_loss=[learn.recorder.smooth_loss.count, learn.recorder.smooth_loss.val],
            )
        )

    def save_round(self, index: int, model: torch.nn.Module, rows: list[dict]) -> None:
        """Self-training: everything the next round needs, so a killed run need not redo this one."""
        if is_main():
            self.checkpoints.save_round(RoundState(**self._position(model), round=index, rows=rows))

    def resume_round(self, learn) -> tuple[int, list[dict]]:
        """Put the last finished round's teacher into ``learn`` and the run where that round ended;
        returns (that round's index, the per-round rows so far)."""
        from dermdl.checkpoint import restore_rng

        state, self.round_resume = self.round_resume, None
        if state is None:
            raise RuntimeError("resume_round: no self-training round checkpoint to resume from")
        unwrap(learn.model).load_state_dict(state.model)
        self.epochs_done, self.tune = int(state.epochs_done), int(state.tune)
        restore_rng(state.rng)
        return int(state.round), list(state.rows)

    def _resumed(self) -> EpochState:
        """The checkpoint being resumed from; asked only while one is pending (a resumed phase, a boundary)."""
        if self.resume is None:
            raise RuntimeError("no epoch checkpoint to resume from")
        return self.resume

    def _restore_rng(self, learn) -> None:
        from dermdl.checkpoint import restore_rng

        restore_rng(self._resumed().rng, learn.dls)

    def _restore_epoch(self, learn) -> None:
        self._restore_rng(learn)
        smooth = learn.recorder.smooth_loss  # fastai's train_loss: a running mean over the whole fit
        resume = self._resumed()
        smooth.count, smooth.val = int(resume.smooth_loss[0]), resume.smooth_loss[1]

    def _resume_point(self, learn, epochs: int) -> int | None:
        """Epochs of the next phase already done (None: phase untouched by the checkpoint); restores state
        that must be in place before the phase starts (at a phase boundary: generators and weights)."""
        if not self.resume:
            return None
        done = int(self.resume.epochs_done)
        if done >= self.epochs_done + epochs:  # whole phase finished before the interruption
            return epochs
        if done == self.epochs_done:  # boundary: the uninterrupted run saved just before this point
            self._at_boundary(learn)
            return 0
        self._load_weights(learn)
        return done - self.epochs_done

    def _load_weights(self, learn) -> None:
        resume = self._resumed()
        if self.monitor and resume.monitor and resume.tune == self.tune:
            self.monitor.load(resume.monitor)
        learn.model.load_state_dict(resume.model)

    def _at_boundary(self, learn) -> None:
        """Resume exactly where the checkpoint was taken, before anything draws a random number."""
        if self.resume and int(self.resume.epochs_done) == self.epochs_done:
            self._load_weights(learn)
            self._restore_rng(learn)
            self.resume = None

    # -- the schedule ------------------------------------------------------------------------
    def fine_tune(self, learn, train_records: list[Record], valid_records: list[Record], label: str = "") -> None:
        """Frozen then unfrozen phases, once per size factor, with monitoring callbacks."""
        train = self.params.train
        self.tune += 1
        if not self.lr_ready:
            self.lr, self.lr_ready = self.find_lr(learn), True
            print(f"train: LR finder (valley) suggests lr = {self.lr:.2e}")
        monitored = bool(valid_records) and (train.early_stopping or train.keep_best)
        self.monitor = (
            Monitor(train.monitor, train.min_delta, train.early_stopping, train.keep_best) if monitored else None
        )
        start = time.perf_counter()
        factor = None
        for phase in phases(train, label):
            if phase.size_factor != factor:  # a new progressive-resizing stage: loaders at its input size
                factor = phase.size_factor
                self._at_boundary(learn)  # before this stage's data loaders draw their generators
                sized = scaled(self.params, factor)
                learn.dls = self.dataloaders(train_records, valid_records, sized, learn.dermdl_norm)
            if self.monitor and self.monitor.stopped:
                continue
            skip = self._resume_point(learn, phase.epochs) or 0
            if skip == phase.epochs:
                self.epochs_done += phase.epochs
                continue
            before = self.log.step
            self._run_phase(learn, phase, valid_records, skip)
            self.image_epochs += len(train_records) * (self.log.step - before)
        self._at_boundary(learn)  # killed after this schedule's last epoch: its weights are in the checkpoint
        self.seconds += time.perf_counter() - start
        if self.monitor:
            self.monitor.restore_best(learn.model)

    def _callbacks(self, phase: str, valid_records: list[Record], skip: int) -> list:
        train = self.params.train
        cbs: list = [EpochLogger(self.log, phase, skip), Checkpointer(self._save_checkpoint, skip)]
        if self.monitor:
            self.monitor.skip = skip
            cbs.append(self.monitor)
        self.plateau = None
        if train.plateau and valid_records:
            self.plateau = Plateau(
                monitor=train.monitor,
                patience=train.plateau,
                factor=train.plateau_factor,
                min_delta=train.min_delta,
                skip=skip,
                resume=self._resumed().plateau if skip else None,
            )
            cbs.append(self.plateau)
        if skip:
            cbs.append(RestoreEpochState(skip, self._restore_epoch))
        return cbs

    def _run_phase(self, learn, phase: Phase, valid_records: list[Record], skip: int) -> None:
        # fastai steps every parameter that HAS a gradient: stale zero gradients of an earlier unfrozen
        # phase would let weight decay shrink a "frozen" body (and a resumed run, which has none, differ).
        learn.model.zero_grad(set_to_none=True)
        if phase.frozen:  # both clear the optimiser state, as fastai's fine_tune does
            learn.freeze()
        else:
            learn.unfreeze()
        if skip:  # resume mid-phase: the optimiser state saved after the last completed epoch
            from dermdl.checkpoint import load_optimizer_state

            resume = self._resumed()
            load_optimizer_state(learn.opt, resume.opt)
            self.epochs_done = int(resume.epochs_done)
        timer = PhaseTimer()
        table = EpochTable(phase_title(phase.name, self.context), skip, live_bars(), is_main())
        cbs = self._callbacks(phase.name, valid_records, skip) + [timer, table]
        plan = fit_plan(self.params.train, phase, self.lr)
        if is_main():
            print(phase_start(self.context, phase, skip, plan.description), flush=True)
        getattr(learn, plan.method)(phase.epochs, plan.lrs, cbs=cbs, start_epoch=skip, **plan.options)
        self.phases.append(timer.summary(phase.name))
        if skip:
            self.resume = None

    def result(self, learn, rounds: list[dict] | None = None) -> FitResult:
        learn.model.eval()
        ips = self.image_epochs / self.seconds if self.seconds else 0.0
        monitor = self.monitor
        return FitResult(
            self.config,
            learn.model,
            ips,
            self.seconds,
            self.log.step,
            self.lr,
            self.precision,
            rounds or [],
            self.lr_plot,
            monitor.best_epoch if monitor and monitor.keep_best else None,
            bool(monitor and monitor.stopped),
            self.phases,
        )
