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

SELF_TRAIN = {"fepochs": 0, "epochs": 1, "weak_labels": "self_train", "nrepeats": 2}
CASES = {  # name -> (train params, kill once this many epochs are checkpointed, total epochs)
    "mid_phase": ({"fepochs": 1, "epochs": 3}, 2, 4),
    "phase_boundary": ({"fepochs": 1, "epochs": 3}, 1, 4),
    "progressive_stage_boundary_keep_best": (
        {"fepochs": 1, "epochs": 1, "progressive_resizing": [0.5, 1.0], "keep_best": True},
        2,
        4,
    ),
    "progressive_stage_boundary": ({"fepochs": 1, "epochs": 1, "progressive_resizing": [0.5, 1.0]}, 2, 4),
    "progressive_mid_phase": ({"fepochs": 0, "epochs": 2, "progressive_resizing": [0.5, 1.0]}, 1, 4),
    # min_delta 100: nothing counts as better after epoch 1, so the LR drops after epochs 2 and 3
    "plateau_mid_phase": ({"fepochs": 0, "epochs": 4, "plateau": 1, "min_delta": 100.0}, 2, 4),
    # self-training, 2 rounds: epoch 1 = round 0; epochs 2-3 = round 1 (pseudo-labels, sl_train); 4-5 = round 2
    "self_train_after_round_0": ({**SELF_TRAIN}, 1, 5),
    "self_train_mid_round": ({**SELF_TRAIN}, 2, 5),
    "self_train_after_round_1": ({**SELF_TRAIN}, 3, 5),
}


def _raw(base, out: str, train: dict) -> dict:
    return {
        "out_dir": str(base / out),
        "data": {
            "root": str(base / "demo" / "classification"),
            "sl_tests": ["sl_test"],
            "wl_train": ["wl_train"] if train.get("weak_labels") else [],
        },
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


def _kill_after(base, raw: dict, epochs: int, checkpoint_rel: str = "checkpoint/last.pt") -> int:
    """Run `dermdl train` in a subprocess and SIGKILL it once ``epochs`` epochs are checkpointed."""
    params_file = base / "killed.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    log = base / "killed.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dermdl.cli", "train", "--params", str(params_file)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    checkpoint = base / "killed" / checkpoint_rel
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
    generate_demo(base / "demo", n_train=24, n_test=2, n_weak=4, size=64)  # ~1 s epochs: room to kill
    yield base
    torch.set_num_threads(threads)


@pytest.mark.parametrize("case", sorted(CASES))
def test_killed_training_resumes_to_the_same_result(base, case):
    train, kill_at, total = CASES[case]
    reference = params_from_dict(_raw(base, f"reference-{case}", train))
    pipeline.preprocess(reference)
    pipeline.train(reference)
    expected_state, expected_metrics = _result(reference.out)

    raw = _killed_copy(base, reference, train)
    killed_dir = base / "killed"
    done = _kill_after(base, raw, kill_at)
    assert done == kill_at < total, f"killed after {done} of {total} epochs; expected after {kill_at}"
    assert not (killed_dir / "model" / "model.pt").exists()

    pipeline.train(params_from_dict(raw))  # the same command again resumes
    state, metrics = _result(killed_dir)
    assert metrics == expected_metrics
    assert all(torch.equal(state[k], expected_state[k]) for k in expected_state)
    assert json.loads((killed_dir / "checkpoint" / "status.json").read_text())["complete"] is True
    assert not (killed_dir / "checkpoint" / "last.pt").exists()
    if train.get("weak_labels") == "self_train":  # the same per-round test rows, every round's folder published
        rounds = json.loads((reference.out / "model" / "rounds" / "rounds.json").read_text())
        assert json.loads((killed_dir / "model" / "rounds" / "rounds.json").read_text()) == rounds
        assert all((killed_dir / "model" / "rounds" / f"round_{i}" / "predictions").is_dir() for i in range(3))
        assert (
            not (killed_dir / "checkpoint" / "round.pt").exists()
            and not (killed_dir / "checkpoint" / "rounds").exists()
        )


def _killed_copy(base, reference, train: dict) -> dict:
    killed_dir = base / "killed"
    shutil.rmtree(killed_dir, ignore_errors=True)
    shutil.copytree(reference.out / "prepared", killed_dir / "prepared")
    return _raw(base, "killed", train)


def test_killed_cross_validation_resumes_mid_fold_and_reuses_finished_folds(base, capsys):
    train = {"fepochs": 0, "epochs": 2, "cv_folds": 2}
    reference = params_from_dict(_raw(base, "reference-cv", train))
    pipeline.preprocess(reference)
    pipeline.train(reference)
    expected_state, expected_metrics = _result(reference.out)
    cv_files = ["model/cv/metrics.json", "model/cv/fold_0/dvclive/metrics.json", "model/cv/fold_1/dvclive/metrics.json"]
    expected_cv = [json.loads((reference.out / rel).read_text()) for rel in cv_files]

    raw = _killed_copy(base, reference, train)
    assert _kill_after(base, raw, 1, "checkpoint/cv/fold_1/checkpoint/last.pt") == 1  # fold 0 done, fold 1 half
    killed = base / "killed"
    assert (killed / "checkpoint/cv/fold_0/done.json").is_file() and not (killed / "model/cv").exists()
    capsys.readouterr()

    pipeline.train(params_from_dict(raw))
    printed = capsys.readouterr().out
    assert "fold_0 was trained before the interruption" in printed and "resuming from" in printed
    assert [json.loads((killed / rel).read_text()) for rel in cv_files] == expected_cv
    state, metrics = _result(killed)
    assert metrics == expected_metrics and all(torch.equal(state[k], expected_state[k]) for k in expected_state)
    assert not (killed / "checkpoint" / "cv").exists()  # the work folder goes once the report is out


def test_checkpoint_of_other_parameters_is_not_resumed(base, capsys):
    raw = _raw(base, "other", {"fepochs": 1, "epochs": 1})
    params = params_from_dict(raw)
    pipeline.preprocess(params)
    pipeline.train(params)
    first, _ = _result(params.out)
    # a stale checkpoint from another learning rate must be ignored, not continued
    from dermdl.checkpoint import Checkpoints, EpochState

    Checkpoints(params.out, "some-other-run").save(
        EpochState(
            epochs_done=1,
            step=1,
            lr=1.0,
            tune=1,
            model={},
            rng={},
            opt={},
            monitor=None,
            plateau=None,
            smooth_loss=[0, 0.0],
        )
    )
    pipeline.train(params)
    again, _ = _result(params.out)
    assert "from other parameters or data" in capsys.readouterr().out
    assert all(torch.equal(first[k], again[k]) for k in first)
