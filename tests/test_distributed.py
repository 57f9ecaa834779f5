"""Data-parallel training: 2 CPU processes (gloo) under torchrun, launched by train.launcher; global rank 0
writes; a lost peer is one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import yaml

from dermdl import distributed, launch, pipeline
from dermdl.demo import generate_demo
from dermdl.params import params_from_dict


@pytest.mark.parametrize("total, world, shuffle", [(10, 2, False), (11, 2, True), (7, 3, True), (5, 1, True)])
def test_ranks_share_one_epoch_order(monkeypatch, total, world, shuffle):
    """Rank r takes items r, r+N, ... of the common order: together they cover it once (plus padding)."""
    seen = []
    for rank in range(world):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(world))
        dl = SimpleNamespace(dataset=list(range(total)), shuffle=shuffle, shuffle_fn=lambda idxs: list(reversed(idxs)))
        distributed.shard_train_loader(dl)
        idxs = dl.get_idxs()
        assert len(idxs) == dl.n == -(-total // world)
        seen.append(idxs)
    order = list(reversed(range(total))) if shuffle else list(range(total))
    interleaved = [seen[r][i] for i in range(len(seen[0])) for r in range(world)]
    assert interleaved[:total] == order


def test_launch_only_outside_torchrun(monkeypatch):
    params = params_from_dict({"train": {"launcher": "torchrun", "nproc": 2}})
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    assert launch.should_launch(params)
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert not launch.should_launch(params)
    assert not launch.should_launch(params_from_dict({}))


@pytest.mark.parametrize(
    "env, main",
    [({"RANK": "0", "LOCAL_RANK": "0"}, True), ({"RANK": "1", "LOCAL_RANK": "0"}, False), ({}, True)],
)
def test_rank_zero_is_the_global_rank(monkeypatch, env, main):
    """Each node has a LOCAL_RANK 0; only global RANK 0 writes."""
    for name in ("RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert distributed.is_main() is main


GLOO_CLOSED = (
    "[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection closed by peer [10.1.2.3]:27544. "
    "This is typically caused by a remote worker crashing."
)
GLOO_TIMEOUT = "[/pytorch/third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 3000ms for recv"


@pytest.mark.parametrize(
    "world, exc, says",
    [
        ("2", RuntimeError(GLOO_CLOSED), ["rank 1 of 2", "peer 10.1.2.3 closed the connection", "other node's log"]),
        ("2", RuntimeError(GLOO_TIMEOUT), ["rank 1 of 2", "no answer within 45 s"]),
        ("2", RuntimeError("Application timeout caused pair closure"), ["no answer within 45 s"]),  # the op after
        ("2", ValueError("data.metadata: no column 'age'"), None),  # not a communication failure: untouched
        ("1", RuntimeError(GLOO_CLOSED), None),  # one process has no peers
    ],
)
def test_lost_peer_is_one_line_naming_the_timeout_key(monkeypatch, world, exc, says):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", world)
    message = distributed.lost_peer(exc, 45)
    if says is None:
        assert message is None
        return
    assert message is not None and "\n" not in message
    assert all(part in message for part in [*says, "train.dist_timeout=45"])


def _files(root) -> set[str]:
    skip = ("tensorboard/", "prepared/")
    return {
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and not p.relative_to(root).as_posix().startswith(skip)
    }


@pytest.mark.slow
@pytest.mark.xdist_group("train_core")
def test_two_gloo_processes_match_one_process(tmp_path):
    generate_demo(tmp_path / "demo", n_train=10, n_test=2, n_weak=0, size=64)
    raw = {
        "data": {"root": str(tmp_path / "demo" / "classification"), "wl_train": [], "sl_tests": ["sl_test"]},
        "preprocess": {"size": 64, "workers": 1},
        "train": {
            "input_size": 64,
            "bs": 8,
            "fepochs": 1,
            "epochs": 2,
            "augment": False,
            "recipe": "thesis",
            "lr": 0.002,
        },  # the schedule this test was written for
    }
    outs = {}
    for name, extra in (("single", {}), ("ddp", {"launcher": "torchrun", "nproc": 2})):
        config = {**raw, "out_dir": str(tmp_path / name), "train": {**raw["train"], **extra}}
        params_file = tmp_path / f"{name}.yaml"
        params_file.write_text(yaml.safe_dump(config))
        pipeline.preprocess(params_from_dict(config))
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        done = subprocess.run(
            [sys.executable, "-m", "dermdl.cli", "train", "--params", str(params_file)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        outs[name] = tmp_path / name
    assert "launching 2 processes" in done.stdout
    assert _files(outs["ddp"]) == _files(outs["single"])  # same layout; rank 1 wrote nothing extra
    single, ddp = (json.loads((outs[n] / "dvclive" / "metrics.json").read_text()) for n in ("single", "ddp"))
    assert ddp["step"] == single["step"] == 2  # 3 epochs logged, steps 0..2
    # same global batches and learning rates; per-rank BatchNorm statistics (4 vs 8 images) differ, and both
    # ranks draw the same dropout masks (one torch stream). Gap measured with the array loader at seeds
    # 42/1/2: 0.25/0.14/0.15 (0.07 at seed 42 with the old fastai loader, which drew other random numbers).
    assert ddp["valid"]["loss"] == pytest.approx(single["valid"]["loss"], abs=0.3)
    assert json.loads((outs["ddp"] / "model" / "train.json").read_text())["processes"] == 2
