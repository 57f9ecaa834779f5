"""Kill-and-resume: a SIGKILLed train stage continues from its last completed epoch and, in
deterministic mode, ends with the same weights and metrics as a run that was never interrupted."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from dermdl import pipeline
from dermdl.demo import generate_demo
from dermdl.params import params_from_dict

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("train_core")]

CASES = {  # name -> (train params, kill once this many epochs are checkpointed, total epochs)
    "mid_phase": ({"fepochs": 1, "epochs": 3}, 2, 4),
    "phase_boundary": ({"fepochs": 1, "epochs": 3}, 1, 4),
    "progressive_stage_boundary_keep_best": (
        {"fepochs": 1, "epochs": 1, "progressive_resizing": [0.5, 1.0], "keep_best": True}, 2, 4),
    "progressive_stage_boundary": ({"fepochs": 1, "epochs": 1, "progressive_resizing": [0.5, 1.0]}, 2, 4),
    "progressive_mid_phase": ({"fepochs": 0, "epochs": 2, "progressive_resizing": [0.5, 1.0]}, 1, 4),
    # min_delta 100: nothing counts as better after epoch 1, so the LR drops after epochs 2 and 3
    "plateau_mid_phase": ({"fepochs": 0, "epochs": 4, "plateau": 1, "min_delta": 100.0}, 2, 4),
}


def _raw(base, out: str, train: dict) -> dict:
    return {
        "out_dir": str(base / out),
        "data": {"root": str(base / "demo" / "classification"), "wl_train": [], "sl_tests": ["sl_test"]},
        "preprocess": {"size": 64, "workers": 1},
        "train": {"input_size": 64, "bs": 8, "deterministic": True, **train},
    }


def _result(out) -> tuple[dict, dict]:
    state = torch.load(out / "model" / "model.pt", weights_only=True)
    return state, json.loads((out / "dvclive" / "metrics.json").read_text())


def _epochs_done(checkpoint) -> int:
    try:
        return torch.load(checkpoint, weights_only=True)["epochs_done"]
    except (FileNotFoundError, RuntimeError, EOFError):
        return 0


def _kill_after(base, raw: dict, epochs: int) -> int:
    """Run `dermdl train` in a subprocess and SIGKILL it once ``epochs`` epochs are checkpointed."""
    params_file = base / "killed.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    log = base / "killed.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "dermdl.cli", "train", "--params", str(params_file)],
                                env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    checkpoint = base / "killed" / "checkpoint" / "last.pt"
    deadline = time.time() + 300
    while _epochs_done(checkpoint) < epochs and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert checkpoint.exists(), f"the train subprocess ended before writing a checkpoint:\n{log.read_text()[-3000:]}"
    return torch.load(checkpoint, weights_only=True)["epochs_done"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    # Float sums depend on the thread count: the in-process runs use the subprocess's single thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("resume")
    generate_demo(base / "demo", n_train=24, n_test=2, n_weak=0, size=64)  # ~1 s epochs: room to kill
    yield base
    torch.set_num_threads(threads)


@pytest.mark.parametrize("case", sorted(CASES))
def test_killed_training_resumes_to_the_same_result(base, case):
    train, kill_at, total = CASES[case]
    reference = params_from_dict(_raw(base, f"reference-{case}", train))
    pipeline.preprocess(reference)
    pipeline.train(reference)
    expected_state, expected_metrics = _result(reference.out)

    killed_dir = base / "killed"
    shutil.rmtree(killed_dir, ignore_errors=True)
    shutil.copytree(reference.out / "prepared", killed_dir / "prepared")
    raw = _raw(base, "killed", train)
    done = _kill_after(base, raw, kill_at)
    assert done == kill_at < total, f"killed after {done} of {total} epochs; expected after {kill_at}"
    assert not (killed_dir / "model" / "model.pt").exists()

    pipeline.train(params_from_dict(raw))  # the same command again resumes
    state, metrics = _result(killed_dir)
    assert metrics == expected_metrics
    assert all(torch.equal(state[k], expected_state[k]) for k in expected_state)
    assert json.loads((killed_dir / "checkpoint" / "status.json").read_text())["complete"] is True
    assert not (killed_dir / "checkpoint" / "last.pt").exists()


def test_checkpoint_of_other_parameters_is_not_resumed(base, capsys):
    raw = _raw(base, "other", {"fepochs": 1, "epochs": 1})
    params = params_from_dict(raw)
    pipeline.preprocess(params)
    pipeline.train(params)
    first, _ = _result(params.out)
    # a stale checkpoint from another learning rate must be ignored, not continued
    from dermdl.checkpoint import Checkpoints

    Checkpoints(params.out, "some-other-run").save({"epochs_done": 1, "step": 1, "lr": 1.0})
    pipeline.train(params)
    again, _ = _result(params.out)
    assert "from other parameters or data" in capsys.readouterr().out
    assert all(torch.equal(first[k], again[k]) for k in first)
