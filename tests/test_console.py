"""What a person reads: every stage run as the `dermdl` command with its output piped (not a terminal),
as in a `dvc repro` log or CI — one row per epoch naming its phase, no progress-bar frames, a plain-text
closing line, no dependency warnings; on a terminal the batch bars come back, titled with the phase."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dermdl.console import phase_title, train_summary
from dermdl.demo import generate_demo

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("console")]

DERMDL = str(Path(sys.executable).parent / "dermdl")
ROW = re.compile(r"^(?P<phase>[a-z][a-z0-9 ./-]*?)\s{2,}(?P<epoch>\d+)/(?P<of>\d+)\s{2,}\d+\.\d{4}\s")
SUMMARY = re.compile(
    r"^train: done in \d+\.\d s - (?P<epochs>\d+) epoch\(s\) \((?P<phases>[^)]*)\) on (?P<train>\d+) images, "
    r"(?P<valid>\d+) for validation; \d+\.\d training images/s \(\d+% of it making batches\); "
    r"lr 1\.0e-03, adamw, precision fp32$"
)


@pytest.mark.parametrize(
    ("name", "context", "title"),
    [
        ("frozen", "", "frozen"),
        ("unfrozen", "fold 2/5", "fold 2/5 unfrozen"),
        ("weak_frozen", "", "weak labels frozen"),
        ("round1_pseudo_unfrozen", "", "round 1 pseudo-labels unfrozen"),
        ("round12_x0.5_frozen", "", "round 12 size x0.5 frozen"),
        ("x1_unfrozen", "fold 1/3", "fold 1/3 size x1 unfrozen"),
    ],
)
def test_phase_title(name, context, title):
    assert phase_title(name, context) == title


def test_train_summary_is_plain_words():
    summary = {
        "train_images": 14,
        "valid_images": 4,
        "grouped_images": 0,
        "weak_images": 6,
        "epochs": 3,
        "lr": 0.002,
        "optimizer": "adamw",
        "mixed_precision": "bf16",
        "best_epoch": 2,
        "stopped_early": True,
        "seconds": 12.345,
        "train_images_per_second": 45.67,
        "data_loading_share": 0.123,
        "phases": [{"phase": "weak_frozen", "epochs": 1}, {"phase": "unfrozen", "epochs": 2}],
    }
    assert train_summary(summary) == (
        "train: done in 12.3 s - 3 epoch(s) (weak labels frozen 1, unfrozen 2) on 14 images, 4 for validation, "
        "6 weakly labelled; 45.7 training images/s (12% of it making batches); lr 2.0e-03, adamw, precision bf16; "
        "kept the weights of epoch 2; stopped early"
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    base = tmp_path_factory.mktemp("console")
    generate_demo(base / "demo", seed=0, size=48, n_train=8, n_test=2, n_weak=1)
    raw = {
        "out_dir": str(base / "out"),
        "data": {"root": str(base / "demo" / "classification")},
        "preprocess": {"size": 48, "workers": 2},
        "train": {"input_size": 48, "bs": 8, "fepochs": 1, "epochs": 2, "cv_folds": 2},
        "analyze": {"n_boot": 100, "explain": 1},
    }
    params = base / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="120")
    env.pop("PYTHONWARNINGS", None)
    runs = {}
    for stage in ("validate", "preprocess", "train", "infer", "analyze"):
        runs[stage] = subprocess.run(
            [DERMDL, stage, "--params", str(params)], capture_output=True, text=True, env=env, cwd=base
        )
        assert runs[stage].returncode == 0, f"{stage}:\n{runs[stage].stdout[-2000:]}\n{runs[stage].stderr[-2000:]}"
    return params, env, runs


def test_no_progress_frames_and_no_dependency_warnings_in_a_piped_log(project):
    _params, _env, runs = project
    for stage, run in runs.items():
        assert "\r" not in run.stdout + run.stderr, stage
        assert "█" not in run.stdout, stage
        assert not [line for line in run.stderr.splitlines() if "Warning" in line or "warn(" in line], (
            stage,
            run.stderr[-2000:],
        )


def test_one_row_per_epoch_naming_the_phase(project):
    lines = project[2]["train"].stdout.splitlines()
    rows = [(m["phase"], int(m["epoch"]), int(m["of"])) for line in lines if (m := ROW.match(line))]
    schedule = [("frozen", 1, 1), ("unfrozen", 1, 2), ("unfrozen", 2, 2)]
    folds = [(f"fold {k}/2 {phase}", e, n) for k in (1, 2) for phase, e, n in schedule]
    assert rows == folds + schedule  # cross-validation folds first, then the final model
    headers = [line for line in lines if line.startswith("phase ")]
    assert len(headers) == 6 and all(h.split()[:4] == ["phase", "epoch", "train_loss", "valid_loss"] for h in headers)
    assert "Epoch 1/1" not in project[2]["train"].stdout


def test_train_ends_with_a_plain_text_summary(project):
    last = project[2]["train"].stdout.rstrip().splitlines()[-1]
    match = SUMMARY.match(last)
    assert match, last
    assert match["epochs"] == "3" and match["phases"] == "frozen 1, unfrozen 2"
    assert int(match["train"]) + int(match["valid"]) == 24  # 8 images x 3 classes in sl_train


def test_a_terminal_gets_batch_bars_titled_with_the_phase(project):
    params, env, _runs = project
    out_fd, in_fd = pty.openpty()  # stdout is a terminal; stderr stays a pipe
    proc = subprocess.Popen(
        [DERMDL, "train", "--params", str(params), "-S", "train.cv_folds=0", "-S", "train.epochs=1"],
        stdout=in_fd,
        stderr=subprocess.PIPE,
        env=env,
    )
    os.close(in_fd)
    chunks = []
    while True:
        try:
            chunk = os.read(out_fd, 65536)
        except OSError:  # the terminal closed: the process has exited
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(out_fd)
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    assert proc.wait() == 0, stderr[-2000:]
    text = b"".join(chunks).decode()
    assert "\rfrozen 1/1 train |" in text and "\runfrozen 1/1 valid |" in text
    rows = [ROW.match(line.split("\r")[-1]) for line in text.splitlines()]
    assert [(m["phase"], m["epoch"]) for m in rows if m] == [("frozen", "1"), ("unfrozen", "1")]
    assert "Warning" not in stderr
