"""Resume an interrupted training run from its last completed epoch.

After every epoch the core writes ``<out>/checkpoint/last.pt`` (atomically): model and optimiser
state, every random generator the run draws from (torch, numpy, Python, each DataLoader's own),
the step counters and the monitor state. A new run with the same parameters and data continues
from there; in deterministic mode it ends with the same weights and metrics as an uninterrupted run
(``tests/test_resume.py``). The file holds tensors, numbers and strings only and is read with
``torch.load(weights_only=True)``. A finished run replaces it with ``status.json`` so the next run
starts fresh; a checkpoint of other parameters or data, or one that cannot be read, is set aside (renamed,
never deleted) with a message.

Self-training also writes ``round.pt`` after each finished round (the teacher for the next round,
the per-round test rows, generators): a resumed run skips finished rounds, re-derives the next
round's pseudo-labels from that teacher and resumes inside the round from ``last.pt``. Cross-
validation keeps each fold's checkpoint and finished model under ``<out>/checkpoint/cv``.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dermdl.io import atomic_file, atomic_write_json
from dermdl.launch import LAUNCH_KEYS
from dermdl.models import read_state_dict
from dermdl.records import Record

CHECKPOINT = "last.pt"
ROUND = "round.pt"
STATUS = "status.json"


def fingerprint(params_dict: dict, train_records: list[Record], valid_records: list[Record]) -> str:
    """Everything that shapes the trajectory: parameters that train reads and the exact split."""
    relevant = {k: v for k, v in params_dict.items() if k not in ("infer", "analyze", "demo", "out_dir", "threads")}
    if isinstance(relevant.get("train"), dict):  # where processes run (node_rank differs per node): not the recipe
        relevant["train"] = {k: v for k, v in relevant["train"].items() if k not in LAUNCH_KEYS}
    text = json.dumps(
        [relevant, [r["path"] for r in train_records], [r["path"] for r in valid_records]], sort_keys=True
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _python_state(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _python_restore(saved: list) -> tuple:
    return (int(saved[0]), tuple(int(v) for v in saved[1]), saved[2])


def _loaders(dls: Any) -> list:
    return [dl for dl in dls.loaders if hasattr(dl, "rng")] if dls is not None else []


def capture_rng(dls: Any = None) -> dict:
    """Every generator a run draws from; ``dls``: also those of a learner's data loaders."""
    numpy_state = np.random.get_state(legacy=True)  # the global generator is MT19937: always the legacy tuple
    if not isinstance(numpy_state, tuple):
        raise TypeError(f"numpy's global generator is not MT19937: {numpy_state.get('bit_generator')!r}")
    rng = {
        "torch": torch.get_rng_state(),
        "python": _python_state(random.getstate()),
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *map(float, numpy_state[2:])],
        "loaders": [_python_state(dl.rng.getstate()) for dl in _loaders(dls)],
    }
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def restore_rng(rng: dict, dls: Any = None) -> None:
    torch.set_rng_state(rng["torch"])
    random.setstate(_python_restore(rng["python"]))
    name, keys, pos, has_gauss, cached = rng["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), cached))
    for dl, state in zip(_loaders(dls), rng["loaders"]):
        dl.rng = random.Random()
        dl.rng.setstate(_python_restore(state))
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def plain(value: Any) -> Any:
    """Containers as dict/list, numpy scalars as Python numbers: what ``weights_only`` loading accepts."""
    if isinstance(value, torch.Tensor):
        return value.as_subclass(torch.Tensor).detach().cpu()  # fastai's TensorBase is not loadable
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "L":
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def plain_optimizer_state(opt: Any) -> dict:
    """fastai's optimiser state (``L`` lists, numpy hyper-parameters) as plain containers."""
    state = opt.state_dict()
    return {"state": plain(list(state["state"])), "hypers": plain(list(state["hypers"]))}


def load_optimizer_state(opt: Any, state: dict) -> None:
    from fastcore.foundation import L

    opt.load_state_dict({"state": list(state["state"]), "hypers": L(state["hypers"])})


@dataclass
class Position:
    """Where a run stands (counters, weights, every generator): what both kinds of checkpoint hold."""

    epochs_done: int  # over the whole run, fast-forwarded ones included
    step: int  # the run log's step (one per epoch and per self-training round)
    lr: float  # train.lr, or the LR finder's suggestion
    tune: int  # schedules run so far (a monitor state belongs to one)
    model: dict
    rng: dict

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # not asdict(): it deep-copies tensors

    @classmethod
    def from_dict(cls, state: dict) -> Any:
        return cls(**{f.name: state[f.name] for f in fields(cls)})


@dataclass
class EpochState(Position):
    """After an epoch (``last.pt``): also the optimiser, the monitor/plateau progress, fastai's smoothed loss."""

    opt: dict
    monitor: dict | None
    plateau: dict | None
    smooth_loss: list


@dataclass
class RoundState(Position):
    """After a self-training round (``round.pt``): the teacher is ``model``; ``rows`` its test metrics so far."""

    round: int
    rows: list


class Checkpoints:
    """Where a run's checkpoint lives; loads a matching one, saves one per epoch, clears on success."""

    def __init__(self, out: Path, key: str):
        self.folder, self.key = out / "checkpoint", key

    def _read(self, name: str) -> dict | None:
        path = self.folder / name
        if not path.is_file():
            return None
        try:
            state = read_state_dict(path, "it is set aside")
        except ValueError as exc:
            self._set_aside(path, str(exc))
            return None
        if state.get("key") != self.key:
            aside = path.with_name(f"{path.name}.other-run-{time.strftime('%Y%m%d-%H%M%S')}")
            path.replace(aside)  # kept, never deleted: it may be the only copy of a long run
            print(f"train: {path} is from other parameters or data; starting from the beginning (kept as {aside})")
            return None
        return state

    def _set_aside(self, path: Path, why: str) -> None:
        """A checkpoint that cannot be resumed is kept (renamed), never deleted: training starts fresh."""
        aside = path.with_name(f"{path.name}.unusable-{time.strftime('%Y%m%d-%H%M%S')}")
        path.replace(aside)
        print(
            f"train: warning: {why.removesuffix('; it is set aside')}; moved to {aside}, starting from the beginning",
            file=sys.stderr,
        )

    def _resume(self, name: str, kind: Any) -> Any:
        """The state in ``name`` as ``kind`` (EpochState/RoundState), or None; an incomplete one is set aside."""
        state = self._read(name)
        if not state:
            return None
        try:
            return kind.from_dict(state)
        except (KeyError, TypeError, ValueError) as exc:
            self._set_aside(self.folder / name, f"{self.folder / name}: incomplete checkpoint ({exc!r})")
            return None

    def load(self) -> EpochState | None:
        resumed = self._resume(CHECKPOINT, EpochState)
        if resumed:
            print(f"train: resuming from {self.folder / CHECKPOINT} after epoch {resumed.epochs_done}")
        return resumed

    def load_round(self) -> RoundState | None:
        resumed = self._resume(ROUND, RoundState)
        if resumed:
            print(f"train: self-training resumes after round {resumed.round} ({self.folder / ROUND})")
        return resumed

    def _write(self, name: str, state: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / STATUS).unlink(missing_ok=True)
        with atomic_file(self.folder / name) as tmp:
            torch.save(plain({**state, "key": self.key}), tmp)

    def save(self, state: EpochState) -> None:
        self._write(CHECKPOINT, state.to_dict())

    def save_round(self, state: RoundState) -> None:
        self._write(ROUND, state.to_dict())

    def finish(self) -> None:
        """Training completed: a later run must start fresh, not resume."""
        for name in (CHECKPOINT, ROUND):
            (self.folder / name).unlink(missing_ok=True)
        atomic_write_json(self.folder / STATUS, {"complete": True, "key": self.key})
