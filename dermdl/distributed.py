"""Data-parallel training under ``torchrun`` (one process per GPU, or CPU processes with gloo), on one node or several.

The train stage runs unchanged under ``torchrun --nproc_per_node N [--nnodes M ...]``; with
``train.launcher: torchrun`` the stage starts torchrun itself (:mod:`dermdl.launch`, which imports no
torch), so ``dvc repro`` needs no other command. How it works, kept deliberately small:

- every rank seeds identically, so all ranks draw the same shuffled order and each takes every
  N-th item of it: global batch j is exactly the single-process batch j (``train.bs`` is the
  global batch size; each rank loads ``bs / N``);
- the model is wrapped in torch ``DistributedDataParallel`` for each fit (gradients are averaged
  across ranks; NCCL on GPU, gloo on CPU);
- every rank validates on the whole validation set, so validation metrics need no gathering and
  equal a single-process evaluation of the same weights;
- only global rank 0 (``RANK``, never ``LOCAL_RANK``: every node has a local rank 0) writes logs,
  checkpoints, models and reports; a decision read from those files (a finished CV fold) is rank 0's,
  broadcast to the others;
- every collective waits at most ``train.dist_timeout`` seconds; a lost peer (a killed node) ends the
  surviving ranks with one line (:func:`lost_peer`) instead of a hang.

Several nodes: docs/distributed.md (the data and ``out_dir`` on a shared file system).
"""

from __future__ import annotations

import math
import os
import re
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


def init(timeout_s: int = 600) -> None:
    """Join the process group torchrun set up (no-op for a single process); every collective then fails
    after ``timeout_s`` seconds instead of waiting forever for a peer that is gone."""
    from datetime import timedelta

    if world_size() <= 1 or torch.distributed.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "nccl"
    else:
        backend = "gloo"
    torch.distributed.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))


def _joined() -> bool:
    return world_size() > 1 and torch.distributed.is_available() and torch.distributed.is_initialized()


def shutdown() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def from_main(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (itself when alone): a decision only rank 0 can make (it read a file
    it alone writes, or ran the LR finder) taken by all. Pickled, so it works on NCCL (GPU) and gloo alike."""
    if not _joined():
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


@contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block before the others (e.g. sets aside an unusable checkpoint that they then no
    longer see), so no rank reads a file while rank 0 renames it."""
    if _joined() and not is_main():
        torch.distributed.barrier()
    yield
    if _joined() and is_main():
        torch.distributed.barrier()


def lost_peer(exc: BaseException, timeout_s: int) -> str | None:
    """One line for a failed collective — a peer process or node gone (killed, crashed, out of memory) or
    silent past ``train.dist_timeout``; None for any other error (and for a single process)."""
    if world_size() <= 1:
        return None
    text = str(exc)
    closed = any(marker in text for marker in _CLOSED)
    silent = any(marker in text for marker in _SILENT)
    if not (closed or silent or isinstance(exc, getattr(torch.distributed, "DistError", ()))):
        return None
    peer = re.search(r"by peer \[([^\]\s]+)\]", text)  # gloo names the peer's address, not its rank
    if closed:
        what = f"{'peer ' + peer[1] if peer else 'a peer'} closed the connection (its process or node stopped)"
    elif silent:
        what = f"no answer within {timeout_s} s (a node stopped, hung or lost the network)"
    else:
        what = f"{type(exc).__name__}: {text.splitlines()[0] if text else 'no message'}"
    return (
        f"train: rank {rank()} of {world_size()} lost contact with the other training processes: {what}; "
        f"check the other node's log for its error (train.dist_timeout={timeout_s} s bounds every wait)"
    )


#: what gloo, NCCL and the TCP store say when a peer is gone; torch raises most as a plain RuntimeError
_CLOSED = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "NCCL communicator was aborted")
_SILENT = (
    "Timed out waiting",  # gloo
    "Application timeout caused pair closure",  # gloo, the operation after a timed-out one
    "Watchdog caught collective operation timeout",
)


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
