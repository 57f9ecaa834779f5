"""Parallel experiments: DVC's queue runs a grid side by side, each run pinned to its own threads (dermdl.threads).

The rule is checked against a hand-made table; the pinning in fresh interpreters (interop threads can be set
once per process); the queue end to end on the demo: `dvc exp run --queue` with a 2 x 2 grid, `dvc queue start
-j 2`, then `dvc exp show --json` lists every run with its own params, metrics and threads.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from project_copy import copy_project

from dermdl.checkpoint import fingerprint
from dermdl.errors import ParamsError
from dermdl.params import params_from_dict
from dermdl.threads import resolve_threads

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("requested", "env", "cores", "expected"),
    [
        (3, {}, 8, 3),  # asked for: used as is
        (3, {"OMP_NUM_THREADS": "1"}, 8, 3),  # the params key wins over an inherited environment
        (0, {}, 8, None),  # automatic, one process: the libraries' defaults, untouched
        (0, {"OMP_NUM_THREADS": "2"}, 8, 2),  # a scheduler's or the user's setting
        (0, {"OMP_NUM_THREADS": "4,2"}, 8, 4),  # OpenMP's nested form: the outer level
        (0, {"OMP_NUM_THREADS": ""}, 8, None),
        (0, {"OMP_NUM_THREADS": "0"}, 8, None),  # not a count: ignored
        (0, {"LOCAL_WORLD_SIZE": "1"}, 8, None),
        (0, {"LOCAL_WORLD_SIZE": "4"}, 8, 2),  # torchrun without OMP_NUM_THREADS: the cores shared
        (0, {"LOCAL_WORLD_SIZE": "3"}, 8, 2),
        (0, {"LOCAL_WORLD_SIZE": "16"}, 8, 1),
        (0, {"LOCAL_WORLD_SIZE": "4", "OMP_NUM_THREADS": "1"}, 8, 1),  # torchrun's own choice for P > 1
    ],
)
def test_thread_count_rule(requested, env, cores, expected):
    assert resolve_threads(requested, env, cores) == expected


def test_negative_threads_are_refused():
    with pytest.raises(ParamsError, match="threads"):
        params_from_dict({"threads": -1})
    with pytest.raises(ValueError, match="threads: -2; use 0"):
        resolve_threads(-2, {}, 4)


def test_threads_do_not_change_the_checkpoint_fingerprint():
    """A killed run resumed with another thread count is the same run (it resumes, not restarts)."""
    records = [{"path": "a.jpg"}]
    one, four = (params_from_dict({"threads": n}).to_dict() for n in (1, 4))
    assert fingerprint(one, records, []) == fingerprint(four, records, [])
    other_lr = params_from_dict({"threads": 1, "train": {"lr": 0.5}}).to_dict()
    assert fingerprint(one, records, []) != fingerprint(other_lr, records, [])


PIN = """
import json, os, subprocess, sys
from dermdl.threads import pin_threads
first = pin_threads({requested})
import cv2, torch
child = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                       capture_output=True, text=True, check=True).stdout
second = pin_threads({again})
print(json.dumps({{"first": first, "second": second, "torch": torch.get_num_threads(),
    "interop": torch.get_num_interop_threads(), "cv2": cv2.getNumThreads(), "child": int(child),
    "omp": os.environ.get("OMP_NUM_THREADS"), "mkl": os.environ.get("MKL_NUM_THREADS")}}))
"""


def _pin(requested: int, again: int, env: dict[str, str]) -> dict:
    """pin_threads twice in a fresh interpreter (torch's interop count can be set once per process)."""
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "LOCAL_WORLD_SIZE")}
    script = PIN.format(requested=requested, again=again)
    result = subprocess.run([sys.executable, "-c", script], env=clean | env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.splitlines()[-1])


def test_pinned_threads_reach_torch_opencv_and_child_processes():
    got = _pin(1, 2, {})
    assert got["first"] == 1 and got["child"] == 1  # a preprocess worker or torchrun process inherits the pin
    assert got["interop"] == 1  # set once, by the first call; the second call does not fail on it
    assert got["second"] == got["torch"] == got["cv2"] == 2 and got["omp"] == got["mkl"] == "2"


def test_automatic_threads_honour_torchrun_and_export_nothing():
    """threads: 0 under torchrun with 2 processes per node (it sets OMP_NUM_THREADS=1): one thread each."""
    got = _pin(0, 0, {"OMP_NUM_THREADS": "1", "LOCAL_WORLD_SIZE": "2"})
    assert got["first"] == got["torch"] == got["cv2"] == got["child"] == 1
    alone = _pin(0, 0, {})
    assert alone["first"] is None and alone["torch"] == _default_threads()  # torch's own default, untouched
    assert alone["omp"] is None and alone["mkl"] is None  # a torchrun started later still makes its own choice


def _default_threads() -> int:
    """torch's thread count in a fresh interpreter that nothing pinned."""
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    script = "import torch; print(torch.get_num_threads())"
    return int(subprocess.run([sys.executable, "-c", script], env=clean, capture_output=True, text=True).stdout)


RANK_SCRIPT = """
import json, os, sys
import torch
from dermdl.threads import pin_threads
pin_threads(0)
with open(os.path.join(sys.argv[1], os.environ["RANK"]), "w") as f:
    json.dump({"threads": torch.get_num_threads(), "omp": os.environ.get("OMP_NUM_THREADS")}, f)
"""


@pytest.mark.parametrize("processes", [1, 2])
def test_automatic_threads_under_a_real_torchrun(tmp_path, processes):
    """torchrun sets OMP_NUM_THREADS=1 for several processes per node, none for one: threads: 0 follows it."""
    (tmp_path / "rank.py").write_text(RANK_SCRIPT)
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    result = subprocess.run(
        [*command, str(tmp_path / "rank.py"), str(tmp_path)], env=clean, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    ranks = [json.loads((tmp_path / str(rank)).read_text()) for rank in range(processes)]
    expected = (1, "1") if processes > 1 else (_default_threads(), None)
    assert [(r["threads"], r["omp"]) for r in ranks] == [expected] * processes


def test_a_torch_free_pin_leaves_torch_unimported_and_a_later_torch_follows_it():
    """validate, preprocess and ONNX predict pin without importing torch (seconds); torch imported afterwards
    still computes with the pinned count (through OMP_NUM_THREADS, which torch reads when it loads)."""
    script = (
        "import sys; from dermdl.threads import pin_threads; pin_threads(1, torch_now=False); "
        "print('torch' in sys.modules); import torch; print(torch.get_num_threads())"
    )
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    result = subprocess.run([sys.executable, "-c", script], env=clean, capture_output=True, text=True)
    assert result.stdout.split() == ["False", "1"], result.stderr[-2000:]


def test_predict_threads_flag_is_checked_before_any_work(capsys):
    from dermdl.cli import main

    assert main(["predict", "--threads", "-1", "--model", "no-such-model", "no-such-image.jpg"]) == 1
    assert "threads: -1; use 0 (automatic)" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# The queue, end to end on the demo

GRID = {"train.lr": ["1e-3", "3e-3"], "classification.loss": ["ce", "focal"]}
PROJECT_FILES = ["dvc.yaml", "params.yaml", ".dvcignore", ".gitignore", ".dvc", "stages", "dermdl"]
HEADLINE = ("balanced_accuracy", "macro_auc", "accuracy", "ece")
QUEUE_TIMEOUT = 900  # seconds for the whole grid; a free machine needs about 2 minutes


def _run(args: list[str], cwd: Path, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def _unfinished(status: str) -> list[str]:
    """Tasks of `dvc queue status` still queued or running (its last column is the state)."""
    return [line for line in status.splitlines() if re.search(r"\s(Queued|Running)\s*$", line)]


def _stop_workers(repo: Path, env: dict[str, str]) -> None:
    """Leave no queue worker behind the test (they idle ~10 s, then exit; a deleted repo would confuse them)."""
    _run(["dvc", "queue", "stop", "--kill"], repo, env, check=False)
    deadline = time.time() + 60
    while time.time() < deadline:
        status = _run(["dvc", "queue", "status"], repo, env, check=False).stdout
        if "Worker status: 0 active, 0 idle" in status:
            return
        time.sleep(1)


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """The project's pipeline in a new git repo, demo prepared and committed, then a 2 x 2 grid run by the queue."""
    repo = tmp_path_factory.mktemp("queue") / "project"
    copy_project(repo, *PROJECT_FILES)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["preprocess"]["size"] = 64
    params["train"].update(input_size=64, fepochs=1, epochs=1, bs=32)
    params["infer"]["tta"] = "none"
    params["analyze"].update(n_boot=200, explain=0)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    # An inherited thread count that is NOT the one asked for: the runs must record threads: 1 from the params.
    env.update(OMP_NUM_THREADS="2", MKL_NUM_THREADS="2")
    _run(["git", "init", "-q"], repo, env)
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "init"], repo, env)
    # The baseline as a user has it: demo data, validation and prepared arrays in the DVC cache, so each
    # experiment only trains, predicts and analyzes (dvc.lock says the earlier stages are up to date).
    _run(["dvc", "repro", "preprocess"], repo, env)
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "prepared demo"], repo, env)
    sweeps = [["-S", f"{key}={','.join(values)}"] for key, values in GRID.items()]  # comma: one run per value
    queued = _run(
        ["dvc", "exp", "run", "--queue", "-n", "grid", *itertools.chain(*sweeps), "-S", "threads=1"], repo, env
    )
    started = time.time()
    try:
        _run(["dvc", "queue", "start", "-j", "2"], repo, env)
        status = ""
        while time.time() - started < QUEUE_TIMEOUT:
            time.sleep(3)
            status = _run(["dvc", "queue", "status"], repo, env).stdout
            if not _unfinished(status):
                break
        else:
            raise AssertionError(f"the queue did not finish in {QUEUE_TIMEOUT} s:\n{status}")
        rows = json.loads(_run(["dvc", "exp", "show", "--json"], repo, env).stdout)
    finally:
        _stop_workers(repo, env)
    return repo, env, rows, queued.stdout, time.time() - started


def _experiments(rows: list[dict]) -> list[dict]:
    return [exp for row in rows for exp in (row.get("experiments") or [])]


def _logs(repo: Path, env: dict[str, str], name: str) -> str:
    return _run(["dvc", "queue", "logs", name], repo, env, check=False).stdout[-4000:]


@pytest.mark.slow
@pytest.mark.xdist_group("train_core")
def test_queue_runs_the_grid_and_exp_show_lists_every_run(grid):
    repo, env, rows, queued, seconds = grid
    experiments = _experiments(rows)
    assert queued.count("Queued experiment") == 4, queued
    failed = [exp["name"] for exp in experiments if exp["executor"]["state"] != "success"]
    assert not failed, "\n\n".join(f"{name}:\n{_logs(repo, env, name)}" for name in failed)
    assert sorted(exp["name"] for exp in experiments) == ["grid-1", "grid-2", "grid-3", "grid-4"]
    combos, models = set(), set()
    for exp in experiments:
        rev = exp["revs"][0]
        params = rev["data"]["params"]["params.yaml"]["data"]
        assert params["threads"] == 1
        combos.add((params["train"]["lr"], params["classification"]["loss"]))
        # dvc exp show's metrics are the run's metrics.json, which holds report.json's headline point values
        shown = rev["data"]["metrics"]["outputs/metrics.json"]["data"]["sl_test"]
        committed = json.loads(_git_show(repo, env, rev["rev"], "outputs/metrics.json"))["sl_test"]
        report = json.loads(_git_show(repo, env, rev["rev"], "outputs/report.json"))["sl_test"]
        assert shown == committed and set(HEADLINE) <= set(shown)
        assert shown["accuracy"] == report["overall"]["accuracy"]["value"]
        assert shown["macro_auc"] == report["macro"]["auc"]["value"]
        # each run trained its own model with its own lr and recorded the threads it computed with
        train = json.loads(_dvc_read(repo, rev["rev"], "outputs/model/train.json"))
        assert train["lr"] == params["train"]["lr"] and train["threads"] == 1 and train["processes"] == 1
        outs = yaml.safe_load(_git_show(repo, env, rev["rev"], "dvc.lock"))["stages"]["train"]["outs"]
        models.add(next(out["md5"] for out in outs if out["path"] == "outputs/model"))
    assert combos == {(lr, loss) for lr in (1e-3, 3e-3) for loss in ("ce", "focal")}
    assert len(models) == 4  # four models, none overwritten by a neighbour
    print(f"4 experiments, 2 at a time: {seconds:.0f} s")


@pytest.mark.slow
@pytest.mark.xdist_group("train_core")
def test_each_run_wrote_only_its_own_workspace(grid):
    """Runs happen in DVC's temporary workspaces: the shared one gains no outputs and stays clean, and the
    temporary ones are gone; only the DVC cache (content-addressed) and git refs are shared."""
    repo, env, _rows, _queued, _seconds = grid
    assert not (repo / "outputs" / "model").exists() and not (repo / "outputs" / "metrics.json").exists()
    assert _run(["git", "status", "--porcelain"], repo, env).stdout == ""
    assert not [p for p in (repo / ".dvc" / "tmp" / "exps").glob("tmp*") if p.is_dir()]


@pytest.mark.slow
@pytest.mark.xdist_group("train_core")
def test_threads_is_not_a_stage_dependency(grid):
    """`-S threads=N` is accepted (the key is in params.yaml) but reruns nothing: no stage tracks it."""
    repo, env, _rows, _queued, _seconds = grid
    params = yaml.safe_load((repo / "params.yaml").read_text())
    try:
        (repo / "params.yaml").write_text(yaml.safe_dump(params | {"threads": 3}, sort_keys=False))
        changed = json.loads(_run(["dvc", "status", "--json", "preprocess"], repo, env).stdout)
        assert changed == {}, changed
        params["preprocess"]["size"] = 48  # the check can fail: a tracked key does change the stage
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        assert "preprocess" in json.loads(_run(["dvc", "status", "--json", "preprocess"], repo, env).stdout)
    finally:
        _run(["git", "checkout", "--", "params.yaml"], repo, env)


def _git_show(repo: Path, env: dict[str, str], rev: str, path: str) -> str:
    return _run(["git", "show", f"{rev}:{path}"], repo, env).stdout


def _dvc_read(repo: Path, rev: str, path: str) -> str:
    """A DVC-cached output of an experiment's commit (outputs/model is not in git)."""
    import dvc.api

    return dvc.api.read(path, repo=str(repo), rev=rev)
