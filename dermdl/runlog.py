"""One training run's curves: DVCLive (``dvc plots``) and TensorBoard behind one object that owns the
step counter, so every learner, phase and self-training round of a run continues the same x-axis.

A resumed run continues the curves it left (DVCLive resume, TensorBoard folder kept); a fresh run
clears the TensorBoard folder, which persists between DVC runs. Ranks other than 0 log nothing.

Every key is a curve (``dvclive/plots/metrics``), but only the final training loss and validation
values go into ``dvclive/metrics.json`` (a DVC metric: ``dvc exp show`` columns) — see :func:`in_summary`;
the LR, the frozen flag, a detector's per-component training losses and the self-training rounds' test
metrics (in ``model/rounds``) would only crowd the experiment table. ``step`` stays: resuming reads it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from dermdl.distributed import NoLog

if TYPE_CHECKING:
    from dvclive import Live
    from torch.utils.tensorboard import SummaryWriter


def in_summary(key: str) -> bool:
    """Whether ``key``'s last value belongs in the DVC metrics file (the rest are curves only)."""
    return key == "train/loss" or key.startswith("valid/")


def _drop(summary: dict, key: str) -> None:
    """Remove ``a/b/c`` (DVCLive nests keys at "/") and the groups it leaves empty."""
    head, _, rest = key.partition("/")
    if rest and isinstance(summary.get(head), dict):
        _drop(summary[head], rest)
        if not summary[head]:
            del summary[head]
    elif not rest:
        summary.pop(head, None)


class RunLog:
    def __init__(self, out: Path, exp_name: str, resume_step: int | None, main: bool = True):
        self.live: Live | NoLog
        self.writer: SummaryWriter | NoLog
        if main:
            from dvclive import Live
            from torch.utils.tensorboard import SummaryWriter

            resuming = resume_step is not None
            self.live = Live(dir=str(out / "dvclive"), save_dvc_exp=False, dvcyaml=False, resume=resuming)
            tensorboard = out / "tensorboard" / exp_name
            if not resuming:  # the folder persists (resume); a fresh run must not mix in old curves
                shutil.rmtree(tensorboard, ignore_errors=True)
            self.writer = SummaryWriter(log_dir=str(tensorboard))
        else:
            self.live, self.writer = NoLog(), NoLog()
        self.step = int(resume_step or 0)
        self.live.step = self.step

    def log(self, key: str, value: float, tensorboard_step: int | None = None, tensorboard: bool = True) -> None:
        """``key`` at the current step (DVCLive) and at ``tensorboard_step`` (default: the same)."""
        self.live.log_metric(key, float(value))
        if not in_summary(key) and isinstance(self.live.summary, dict):  # NoLog (other ranks) has none
            _drop(self.live.summary, key)
        if tensorboard:
            self.writer.add_scalar(key, float(value), self.step if tensorboard_step is None else tensorboard_step)

    def batch_loss(self, value: float, iteration: int) -> None:
        self.writer.add_scalar("train/batch_loss", float(value), iteration)

    def next_step(self) -> None:
        self.live.next_step()
        self.step += 1

    def close(self) -> None:
        self.writer.close()
        self.live.end()
