"""Several nodes, simulated on localhost: the torchrun command line, two-node training, a killed node, CV.

Two launcher processes on this machine act as two nodes (gloo on CPU, c10d rendezvous on 127.0.0.1). The
unit tests check the pure part (dermdl.launch: params + environment -> argv); the slow ones train the tiny
demo of tests/test_distributed.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from dermdl.checkpoint import fingerprint
from dermdl.demo import generate_demo
from dermdl.errors import ParamsError
from dermdl.launch import first_host, topology, torchrun_argv
from dermdl.params import params_from_dict

PY = "/py"  # stands for sys.executable in the expected command lines
TORCHRUN = [PY, "-m", "torch.distributed.run"]
TAIL = ["-m", "dermdl.cli", "train"]


def _c10d(nnodes: int, endpoint: str, rdzv_id: str, timeout: int, host: bool) -> list[str]:
    return [
        f"--nnodes={nnodes}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={endpoint}",
        f"--rdzv-id={rdzv_id}",
        f"--rdzv-conf=join_timeout={timeout},is_host={int(host)}",
    ]


SLURM4 = {"SLURM_NNODES": "4", "SLURM_NODEID": "2", "SLURM_JOB_NODELIST": "gpu[03-06]", "SLURM_JOB_ID": "77"}


@pytest.mark.parametrize(
    "train, env, expected",
    [
        ({}, {}, [*TORCHRUN, "--standalone", "--nproc-per-node=2", *TAIL]),
        (
            {"nproc": 8},
            {"SLURM_NNODES": "1", "SLURM_NODEID": "0"},
            [*TORCHRUN, "--standalone", "--nproc-per-node=8", *TAIL],
        ),
        (
            {"nnodes": 2, "node_rank": 1, "rdzv_endpoint": "10.0.0.1:29400", "nproc": 1, "dist_timeout": 30},
            {},
            [*TORCHRUN, *_c10d(2, "10.0.0.1:29400", "dermdl", 30, False), "--nproc-per-node=1", *TAIL],
        ),
        (  # SLURM alone: rendezvous on the job's first host, id = job id
            {"nproc": 4},
            SLURM4,
            [*TORCHRUN, *_c10d(4, "gpu03:29500", "77", 600, False), "--nproc-per-node=4", *TAIL],
        ),
        (  # MASTER_ADDR/MASTER_PORT (set by the sbatch script) beat the node list
            {"nproc": 4},
            {**SLURM4, "SLURM_NODEID": "0", "MASTER_ADDR": "head", "MASTER_PORT": "29999"},
            [*TORCHRUN, *_c10d(4, "head:29999", "77", 600, True), "--nproc-per-node=4", *TAIL],
        ),
        (  # a key set in params wins over the scheduler's variable; the others still come from SLURM
            {"nnodes": 2, "rdzv_endpoint": "n0:1234"},
            {**SLURM4, "SLURM_NODEID": "1"},
            [*TORCHRUN, *_c10d(2, "n0:1234", "77", 600, False), "--nproc-per-node=2", *TAIL],
        ),
        (  # an explicit endpoint on one node: c10d on it instead of --standalone
            {"rdzv_endpoint": "[::1]:29500"},
            {},
            [*TORCHRUN, *_c10d(1, "[::1]:29500", "dermdl", 600, True), "--nproc-per-node=2", *TAIL],
        ),
    ],
)
def test_torchrun_command_line(train, env, expected):
    params = params_from_dict({"train": {"launcher": "torchrun", **train}})
    assert torchrun_argv(params.train, env, ["train"], PY) == expected


@pytest.mark.parametrize(
    "train, env, names",
    [
        ({}, {"SLURM_NNODES": "2", "SLURM_NODEID": "2", "MASTER_ADDR": "h"}, ["SLURM_NODEID=2", "SLURM_NNODES=2"]),
        ({}, {"SLURM_NNODES": "2"}, ["SLURM_NNODES=2", "train.rdzv_endpoint", "MASTER_ADDR"]),
        ({"nnodes": 3, "rdzv_endpoint": "h:1"}, {"SLURM_NODEID": "5"}, ["SLURM_NODEID=5", "train.nnodes=3"]),
        ({}, {"SLURM_NNODES": "two"}, ["SLURM_NNODES='two'"]),
        ({}, {"SLURM_NNODES": "2", "MASTER_ADDR": "h", "MASTER_PORT": "http"}, ["MASTER_ADDR:MASTER_PORT"]),
    ],
)
def test_inconsistent_environment_is_one_line_naming_the_variable(train, env, names):
    params = params_from_dict({"train": train})
    with pytest.raises(ValueError) as caught:
        topology(params.train, env)
    message = str(caught.value)
    assert "\n" not in message and all(name in message for name in names)


@pytest.mark.parametrize(
    "train, names",
    [
        ({"nnodes": 2, "node_rank": 2, "rdzv_endpoint": "h:1"}, ["node_rank=2", "nnodes=2"]),
        ({"nnodes": 2}, ["nnodes=2", "rdzv_endpoint"]),
        ({"rdzv_endpoint": "node0"}, ["train.rdzv_endpoint", "host:port"]),
        ({"rdzv_endpoint": "node0:99999"}, ["train.rdzv_endpoint"]),
        ({"dist_timeout": 0}, ["train.dist_timeout"]),
    ],
)
def test_params_refuse_an_impossible_topology(train, names):
    with pytest.raises(ParamsError) as caught:
        params_from_dict({"train": train})
    assert all(name in str(caught.value) for name in names)


@pytest.mark.parametrize(
    "nodelist, host",
    [("gpu[03-06]", "gpu03"), ("a1,b2", "a1"), ("n[007,010-012],m1", "n007"), ("rack[2-3]-node[5-6]", "rack2-node5")],
)
def test_first_host_of_a_slurm_node_list(nodelist, host):
    assert first_host(nodelist) == host


def test_checkpoints_resume_across_nodes_and_process_counts():
    """node_rank differs per node and must not change the checkpoint key; the recipe does."""
    base = params_from_dict({}).to_dict()
    key = fingerprint(base, [], [])
    elsewhere = {**base, "train": {**base["train"], "node_rank": 1, "nnodes": 2, "nproc": 8, "launcher": "torchrun"}}
    assert fingerprint(elsewhere, [], []) == key
    assert fingerprint({**base, "train": {**base["train"], "lr": 0.5}}, [], []) != key


# -- trained on the demo ------------------------------------------------------------------------------------

SCHEDULE = {"input_size": 64, "bs": 8, "fepochs": 1, "epochs": 2, "augment": False, "recipe": "thesis", "lr": 0.002}


def _env() -> dict[str, str]:
    """This machine's environment without any scheduler's or launcher's variables (a CI runner in a SLURM job)."""
    launcher = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLURM_", "TORCHELASTIC_", "PET_")) and k not in launcher
    }
    return {**env, "OMP_NUM_THREADS": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _files(root: Path) -> set[str]:
    """Files below ``root``; TensorBoard event files are named by time and host, so only their folders count."""
    names = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    return {n.rsplit("/", 1)[0] if "tensorboard/" in n else n for n in names if not n.startswith("prepared/")}


def _node(base: Path, demo: Path, train: dict, name: str) -> Path:
    """A folder standing for one node: its params.yaml (out_dir relative to it) and the shared prepared data."""
    folder = base / name
    (folder / "out").mkdir(parents=True)
    (folder / "out" / "prepared").symlink_to(demo / "prepared", target_is_directory=True)
    config = {
        "data": {"root": str(demo / "classification"), "wl_train": [], "sl_tests": ["sl_test"]},
        "preprocess": {"size": 64, "workers": 1},
        "out_dir": "out",
        "train": {**SCHEDULE, **train},
    }
    (folder / "params.yaml").write_text(yaml.safe_dump(config))
    return folder


def _start(command: list[str], cwd: Path) -> subprocess.Popen:
    with open(cwd / "stdout.txt", "w") as out, open(cwd / "stderr.txt", "w") as err:
        return subprocess.Popen(command, cwd=cwd, env=_env(), stdout=out, stderr=err, start_new_session=True)


def _tree(process: subprocess.Popen) -> list[psutil.Process]:
    """A node's processes: torchrun starts its workers in sessions of their own, so a process group is not all."""
    try:
        root = psutil.Process(process.pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _kill(process: subprocess.Popen) -> None:
    for p in _tree(process):
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    process.wait(timeout=60)


def _finish(processes: list[subprocess.Popen], folders: list[Path]) -> list[str]:
    """Wait for every node; one failing ends the others (they would wait for it until the timeout)."""
    deadline = time.monotonic() + 600
    try:
        while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
            failed = [f for p, f in zip(processes, folders) if p.poll() not in (None, 0)]
            assert not failed, (failed[0] / "stderr.txt").read_text()[-3000:]
            time.sleep(0.2)
    finally:
        for p in processes:
            if p.poll() is None:
                _kill(p)
    for p, folder in zip(processes, folders):
        assert p.returncode == 0, (folder / "stderr.txt").read_text()[-3000:]
    return [(folder / "stdout.txt").read_text() for folder in folders]


DERMDL = [sys.executable, "-m", "dermdl.cli", "train", "--params", "params.yaml"]


def _dermdl_node(rank: int, port: int, *extra: str) -> list[str]:
    """`dermdl train` with train.launcher torchrun as one of two nodes."""
    sets = ["train.launcher=torchrun", "train.nproc=1", "train.nnodes=2", f"train.node_rank={rank}"]
    sets += [f"train.rdzv_endpoint=127.0.0.1:{port}", *extra]
    return [*DERMDL, *(arg for s in sets for arg in ("-S", s))]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo, preprocessed once; every run below links its prepared data."""
    from dermdl import pipeline

    demo = tmp_path_factory.mktemp("multinode") / "demo"
    generate_demo(demo, n_train=10, n_test=2, n_weak=0, size=64)
    config = {
        "data": {"root": str(demo / "classification"), "wl_train": [], "sl_tests": ["sl_test"]},
        "preprocess": {"size": 64, "workers": 1},
        "out_dir": str(demo),
    }
    pipeline.preprocess(params_from_dict(config))
    return demo


@pytest.fixture(scope="module")
def single(demo):
    """One process, 2-fold cross-validation then the final model: the layout and metrics to match."""
    folder = _node(demo.parent, demo, {"cv_folds": 2}, "single")
    _finish([_start(DERMDL, folder)], [folder])
    return folder / "out"


def _metrics(out: Path) -> tuple[dict, list[dict]]:
    """The final model's validation metrics and each CV fold's held-out metrics."""
    final = json.loads((out / "dvclive" / "metrics.json").read_text())
    return final, json.loads((out / "model" / "cv" / "metrics.json").read_text())["per_fold"]


@pytest.fixture(scope="module")
def two_processes(demo):
    """The same on one node with two gloo processes (train.launcher torchrun, nproc 2): (out_dir, its log)."""
    folder = _node(demo.parent, demo, {"cv_folds": 2, "launcher": "torchrun", "nproc": 2}, "cv_two_processes")
    (log,) = _finish([_start(DERMDL, folder)], [folder])
    return folder / "out", log


def _assert_same_training(out: Path, reference: Path) -> None:
    """The same files as one process and metrics within a tolerance: per-rank BatchNorm statistics (4 vs 8
    images) make the runs differ. Measured at seed 42: final validation loss 1.27 vs 1.04 (the 0.3 of
    tests/test_distributed.py), held-out accuracy of the folds 0.333/0.533 vs 0.333/0.600 (15 images each)."""
    assert _files(out) == _files(reference)
    (final, folds), (final_one, folds_one) = _metrics(out), _metrics(reference)
    assert final["step"] == final_one["step"] == 2
    assert final["valid"]["loss"] == pytest.approx(final_one["valid"]["loss"], abs=0.3)
    assert len(folds) == len(folds_one) == 2
    for fold, fold_one in zip(folds, folds_one):
        assert fold.keys() == fold_one.keys()
        assert fold["accuracy"] == pytest.approx(fold_one["accuracy"], abs=0.2)  # 3 of 15 images
    report = json.loads((out / "model" / "cv" / "report.json").read_text())
    assert report["folds"] == 2 and len(report["per_fold"]) == 2


@pytest.mark.slow
@pytest.mark.xdist_group("train_core")
def test_two_nodes_on_localhost_match_one_process(demo, single, two_processes):
    """Node A: plain `torchrun --nnodes 2 --node_rank 0 --rdzv-backend c10d ...` (train.launcher none); node B:
    `dermdl train` with train.launcher torchrun, nnodes 2, node_rank 1. Each node has its own out_dir, so
    whatever a rank other than global rank 0 wrote would show up in its node's folder."""
    port = _free_port()
    nodes = [_node(demo.parent / "two_nodes", demo, {"cv_folds": 2}, f"node{i}") for i in (0, 1)]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", "0"]
    torchrun += ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "dermdl"]
    torchrun += ["--nproc_per_node", "1", "-m", "dermdl.cli", "train", "--params", "params.yaml"]
    started = [_start(torchrun, nodes[0]), _start(_dermdl_node(1, port), nodes[1])]
    logs = _finish(started, nodes)
    assert "train: node 1 of 2: launching 1 processes (rendezvous 127.0.0.1:" in logs[1]
    writers = [i for i in (0, 1) if (nodes[i] / "out" / "model").exists()]
    assert len(writers) == 1  # torchrun's c10d rendezvous picks which node holds global rank 0
    main, other = writers[0], 1 - writers[0]
    assert sorted(p.name for p in (nodes[other] / "out").iterdir()) == ["prepared"]  # rank 1 wrote nothing
    assert "unfrozen" in logs[main] and "unfrozen" not in logs[other]  # nor printed the epoch table
    _assert_same_training(nodes[main] / "out", single)
    # and equal two processes on one node: the same shards, and a sum of two gradients is exact in any order
    (final, folds), (final_two, folds_two) = _metrics(nodes[main] / "out"), _metrics(two_processes[0])
    assert final["valid"] == pytest.approx(final_two["valid"], rel=1e-5)
    for fold, fold_two in zip(folds, folds_two):
        assert {k: v for k, v in fold.items() if v is not None} == pytest.approx(
            {k: v for k, v in fold_two.items() if v is not None}, rel=1e-5
        )
    assert json.loads((nodes[main] / "out" / "model" / "train.json").read_text())["processes"] == 2


@pytest.mark.slow
@pytest.mark.xdist_group("train_core")
def test_cross_validation_with_two_processes_matches_one_process(two_processes, single):
    """train.cv_folds under torchrun: folds one after another, each data-parallel; rank 0 writes the report."""
    out, log = two_processes
    assert "launching 2 processes" in log and "2-fold cross-validation" in log
    _assert_same_training(out, single)


@pytest.mark.slow
@pytest.mark.xdist_group("train_core")
@pytest.mark.parametrize(
    "how, says",
    [
        (signal.SIGKILL, "closed the connection"),  # a killed node: its sockets close, the survivors know at once
        (signal.SIGSTOP, "no answer within 10 s"),  # a silent node (power, network): bounded by train.dist_timeout
    ],
    ids=["killed", "silent"],
)
def test_a_lost_node_fails_the_survivors_with_one_line(demo, how, says):
    """Two `dermdl train` nodes; once an epoch is done, node 1's processes (the launcher, torchrun and the
    worker, which torchrun puts in a session of its own) are killed or frozen: node 0 must end non-zero
    within train.dist_timeout (+ start-up slack) with one line from its rank and one from its launcher."""
    folder = _node(demo.parent / f"lost_{how.name}", demo, {"epochs": 300, "dist_timeout": 10}, "shared")
    port = _free_port()
    node0 = _start(_dermdl_node(0, port), folder)
    (folder / "node1").mkdir()  # its own log files, the same (shared) out_dir
    with open(folder / "node1" / "stdout.txt", "w") as out:
        node1 = subprocess.Popen(
            _dermdl_node(1, port), cwd=folder, env=_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 300
        while not (folder / "out" / "checkpoint" / "last.pt").exists():  # training is under way
            assert node0.poll() is None and node1.poll() is None, (folder / "stderr.txt").read_text()[-3000:]
            assert time.monotonic() < deadline, "no epoch finished in 300 s"
            time.sleep(0.1)
        for p in _tree(node1):
            p.send_signal(how)
        lost = time.monotonic()
        node0.wait(timeout=10 + 60)
        waited = time.monotonic() - lost
    finally:
        for process in (node0, node1):
            if process.poll() is None:
                _kill(process)
    stderr = (folder / "stderr.txt").read_text()
    assert node0.returncode != 0 and waited < 10 + 45, stderr[-3000:]
    survivor = [line for line in stderr.splitlines() if "lost contact with the other training processes" in line]
    assert len(survivor) == 1 and survivor[0].startswith("dermdl: error: train: rank ")
    assert (
        says in survivor[0] and "check the other node's log" in survivor[0] and "train.dist_timeout=10" in survivor[0]
    )
    last = stderr.rstrip().splitlines()[-1]  # the launcher's own last word, after torchrun's report
    assert last.startswith("dermdl: error: torchrun ended with exit code") and "node 0 of 2" in last
