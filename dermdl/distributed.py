"""Data-parallel training under ``torchrun`` (one process per GPU, or CPU processes with gloo).

The train stage runs unchanged under ``torchrun --nproc_per_node N [--nnodes M ...]``; with
``train.launcher: torchrun`` the stage starts torchrun itself (single node, ``train.nproc``
processes), so ``dvc repro`` needs no other command. How it works, kept deliberately small:

- every rank seeds identically, so all ranks draw the same shuffled order and each takes every
  N-th item of it: global batch j is exactly the single-process batch j (``train.bs`` is the
  global batch size; each rank loads ``bs / N``);
- the model is wrapped in torch ``DistributedDataParallel`` for each fit (gradients are averaged
  across ranks; NCCL on GPU, gloo on CPU);
- every rank validates on the whole validation set, so validation metrics need no gathering and
  equal a single-process evaluation of the same weights;
- only rank 0 writes logs, checkpoints, models and reports.

Multi-node: start the same command on every node, e.g. ``torchrun --nnodes 2 --node_rank R
--master_addr HOST --master_port 29500 --nproc_per_node 8 stages/train.py`` (``train.launcher:
none``; the data and ``out_dir`` must be on a shared file system).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from fastai.callback.core import Callback


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return rank() == 0


def under_launcher() -> bool:
    return "LOCAL_RANK" in os.environ or "TORCHELASTIC_RUN_ID" in os.environ


def should_launch(params: Any) -> bool:
    return params.train.launcher == "torchrun" and not under_launcher()


def launch(params: Any, cli_args: list[str]) -> int:
    """Re-run this ``dermdl`` command under torchrun with ``train.nproc`` local processes."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={params.train.nproc}",
        "-m",
        "dermdl.cli",
        *cli_args,
    ]
    print(f"train: launching {params.train.nproc} processes: {' '.join(command[1:])}", flush=True)
    return subprocess.call(command)


def init() -> None:
    """Join the process group torchrun set up (no-op for a single process)."""
    if world_size() <= 1 or torch.distributed.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "nccl"
    else:
        backend = "gloo"
    torch.distributed.init_process_group(backend=backend)


def shutdown() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


@contextmanager
def alone() -> Iterator[None]:
    """Run fastai code on this rank only (e.g. the LR finder on rank 0): fastai decides whether to
    all-gather from WORLD_SIZE, and a collective that the other ranks never join would hang."""
    saved = os.environ.get("WORLD_SIZE")
    os.environ["WORLD_SIZE"] = "1"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("WORLD_SIZE", None)
        else:
            os.environ["WORLD_SIZE"] = saved


def no_gather(dls: Any) -> None:
    """fastai all-gathers predictions whenever WORLD_SIZE > 1; every rank here validates the whole
    validation set itself, so gathering would only duplicate it (and deadlock a rank-0-only fit)."""
    from fastai.torch_core import to_detach

    for dl in dls.loaders:
        dl.to_detach = lambda b, cpu=True, gather=True: to_detach(b, cpu, False)


def shard_train_loader(dl: Any, draw: Any = None) -> None:
    """Give this rank every N-th item of the (shared) epoch order; ``draw`` replaces the shuffle
    (class-balanced oversampling). Ranks get equally many items; the order is padded by wrapping."""
    n_rank, world = rank(), world_size()
    total = len(dl.dataset)
    per_rank = math.ceil(total / world) if world > 1 else total

    def get_idxs() -> list[int]:
        if draw is not None:
            idxs = list(draw())
        else:
            idxs = list(range(total))
            if dl.shuffle:
                idxs = dl.shuffle_fn(idxs)
        if world == 1:
            return idxs
        idxs += idxs[: per_rank * world - total]
        return idxs[n_rank::world]

    dl.get_idxs = get_idxs
    dl.n = per_rank


class DataParallel(Callback):
    """Wrap the model in ``DistributedDataParallel`` for one fit and unwrap it afterwards."""

    order = 11  # before callbacks that run the batch (as fastai's DistributedTrainer)

    def before_fit(self) -> None:
        from torch.nn.parallel import DistributedDataParallel

        self.inner = self.learn.model
        device_ids = [torch.cuda.current_device()] if torch.cuda.is_available() else None
        self.learn.model = DistributedDataParallel(self.inner, device_ids=device_ids)

    def after_fit(self) -> None:
        self.learn.model = self.inner


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


class NoLog:
    """DVCLive / TensorBoard stand-in for ranks other than 0: they train but write nothing."""

    step = 0

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None
