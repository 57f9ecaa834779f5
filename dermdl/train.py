"""The one training core: a fastai ``Learner`` around whatever model and data a task provides.

The schedule (``train.recipe``: one-cycle over all layers, or the thesis' frozen-then-discriminative
fine-tuning) is a pure function of params in :mod:`dermdl.schedule`; batches come from the prepared
arrays (:mod:`dermdl.batches`). Every epoch of every phase and learner is logged, with one
continuous step counter, to DVCLive (``dvc plots show``) and TensorBoard. How the learners of one
run are chained (weak labels, self-training rounds) lives in :mod:`dermdl.weak_labels`.

:func:`fit` here is the entry (seeding, the checkpoint store, which rank goes first); the
:class:`~dermdl.session.Session` it drives, which builds and trains each learner, is :mod:`dermdl.session`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from dermdl.checkpoint import Checkpoints, fingerprint
from dermdl.distributed import is_main, main_first
from dermdl.models import ModelConfig
from dermdl.params import Params
from dermdl.records import Record
from dermdl.session import FitResult, Session
from dermdl.tasks import Task


def seed_everything(params: Params) -> None:
    from fastai.torch_core import set_seed

    set_seed(params.train.seed, reproducible=params.train.deterministic)
    if params.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)  # warn, not fail, on GPU ops without one


def fit(
    task: Task,
    params: Params,
    train_records: list[Record],
    valid_records: list[Record],
    classes: list[str],
    out: Path,
    weak_records: list[Record] | None = None,
    evaluate: Callable[[Any, ModelConfig, int], dict] | None = None,
    context: str = "",
) -> FitResult:
    """Train a model for ``task``; logs go to ``out/dvclive`` and ``out/tensorboard``.

    ``evaluate(model, config, round)`` scores a self-training round on the test sets. A checkpoint
    in ``out/checkpoint`` is written after every epoch (and self-training round) and a matching one
    is resumed from. ``context`` (e.g. ``fold 2/5``) prefixes the phase names on the console.
    """
    from dermdl.weak_labels import train_with_weak_labels

    seed_everything(params)
    checkpoints = Checkpoints(out, fingerprint(params.to_dict(), train_records, valid_records))
    with main_first():  # rank 0 sets aside an unusable checkpoint before the others look for one
        session = Session(task, params, classes, out, checkpoints, context)
    try:
        learn, rounds = train_with_weak_labels(session, train_records, valid_records, weak_records or [], evaluate)
    finally:
        session.close()
    if is_main():
        checkpoints.finish()
    return session.result(learn, rounds)
