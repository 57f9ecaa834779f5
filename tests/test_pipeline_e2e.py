"""End to end: `dvc repro` in a fresh git repository, then the DVC commands users run.

Slow by nature (it trains a small model); it is the test that proves the README's `make demo` path.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from project_copy import copy_project

ROOT = Path(__file__).resolve().parents[1]
# one worker runs the whole module, so the expensive `dvc repro` fixture runs once under xdist
# The experiment table as README documents it: changed params and the test sets' headline metrics.
EXP_SHOW = ["dvc", "exp", "show", "--no-pager", "--only-changed", "--keep", r"sl_test\.", "--drop"]
EXP_SHOW += [r"Created|step|train\.loss|valid\.|dermdl|.*/"]
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e")]


def _run(args, cwd, env, check=True):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A copy of the project's tracked files, committed in a new git repository, with fast params."""
    repo = tmp_path_factory.mktemp("e2e") / "project"
    copy_project(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["preprocess"]["size"] = 64
    params["train"].update(input_size=64, fepochs=1, epochs=1, bs=32)
    params["analyze"]["n_boot"] = 200
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.setdefault("GIT_AUTHOR_NAME", "t")
    env.setdefault("GIT_AUTHOR_EMAIL", "t@t")
    env.setdefault("GIT_COMMITTER_NAME", "t")
    env.setdefault("GIT_COMMITTER_EMAIL", "t@t")
    _run(["git", "init", "-q"], repo, env)
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "init"], repo, env)
    result = _run(["dvc", "repro"], repo, env)
    return repo, env, result


def test_repro_writes_every_output(project):
    repo, _env, result = project
    out = repo / "outputs"
    for rel in [
        "validate/report.json",
        "prepared/manifest.json",
        "model/model.pt",
        "model/model.json",
        "model/params.json",
        "model/train.json",
        "predictions/sl_test.csv",
        "metrics.json",
        "report.json",
        "summary.txt",
        "plots/confusion/sl_test.json",
        "plots/figures/sl_test_confusion.png",
        "plots/figures/sl_test_metrics.png",
        "dvclive/metrics.json",
    ]:
        assert (out / rel).is_file(), rel
    assert list((out / "tensorboard").rglob("events.out.tfevents*")), "no TensorBoard event file"
    assert list((out / "plots" / "roc").glob("sl_test--*.json"))
    assert "Accuracy" in result.stdout and "F1 melanoma" in result.stdout
    metrics, report = (json.loads((out / name).read_text())["sl_test"] for name in ("metrics.json", "report.json"))
    assert metrics == {  # the headline point values only; CIs and the rest stay in report.json
        "balanced_accuracy": report["overall"]["balanced_accuracy"]["value"],
        "macro_auc": report["macro"]["auc"]["value"],
        "accuracy": report["overall"]["accuracy"]["value"],
        "ece": report["calibration"][report["calibration"]["reported"]]["ece"]["value"],
    }
    assert 0.0 <= metrics["accuracy"] <= 1.0
    # the source demo data was never written to by later stages: prepared copies live under outputs/
    assert not list((repo / "data" / "demo").rglob("manifest.json"))


def test_train_json_reports_the_speed_of_each_phase(project):
    repo, _env, result = project
    summary = json.loads((repo / "outputs" / "model" / "train.json").read_text())
    assert [p["phase"] for p in summary["phases"]] == ["frozen", "unfrozen"]
    for phase in summary["phases"]:
        assert phase["epochs"] == 1 and phase["images"] > 0 and phase["images_per_second"] > 0
        assert 0 < phase["data_loading_share"] < 1
    assert summary["train_images_per_second"] > 0 and 0 < summary["data_loading_share"] < 1
    assert "train: phase frozen - epochs 1-1 of 1, body frozen" in result.stdout
    assert "train: phase unfrozen - epochs 1-1 of 1, all layers" in result.stdout


def test_dvc_metrics_plots_and_experiments(project):
    repo, env, _ = project
    shown = json.loads(_run(["dvc", "metrics", "show", "--json"], repo, env).stdout)
    assert "outputs/metrics.json" in json.dumps(shown)
    listed = _run(["dvc", "metrics", "show"], repo, env).stdout.split("\n")[0].split()
    assert "sl_test.balanced_accuracy" in listed and "valid.loss" in listed
    assert not [c for c in listed if c.split(".")[-1] in ("ci", "n_boot", "seed", "lr", "frozen", "lo", "hi")]
    plots = _run(["dvc", "plots", "show", "-o", "plots_html"], repo, env)
    page = (repo / "plots_html" / "index.html").read_text(encoding="utf-8")
    # every declared plot folder loads (analyze keeps the ones classification does not write: pr, subgroups)
    assert "failed to load" not in plots.stdout + plots.stderr, plots.stderr
    assert (repo / "outputs" / "plots" / "pr" / ".keep").is_file()
    # Vega is inlined from .dvc/plots/page.html: no script from a CDN, images from the page's static/ folder
    assert "<script src" not in page and "cdn.jsdelivr" not in page
    assert all(not src.startswith(("http:", "https:")) for src in re.findall(r'src="([^"]*)"', page))
    assert page.count("vegaEmbed('#outputs_plots_roc_") == 3  # one ROC per demo class
    again = _run(["dvc", "repro"], repo, env)
    assert "up to date" in again.stdout.lower()
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "baseline results"], repo, env)
    _run(["dvc", "exp", "run", "-S", "analyze.seed=1", "-n", "seed1"], repo, env)
    rows = json.loads(_run(["dvc", "exp", "show", "--json"], repo, env).stdout)
    text = json.dumps(rows)
    experiments = [exp for row in rows for exp in (row.get("experiments") or [])]
    runs = [rev for exp in experiments for rev in exp.get("revs", [])]
    named = [r for r in runs if r.get("name") == "seed1"]
    assert named, text[:2000]
    metrics = named[0]["data"]["metrics"]["outputs/metrics.json"]["data"]
    assert 0.0 <= metrics["sl_test"]["accuracy"] <= 1.0
    assert named[0]["data"]["params"]["params.yaml"]["data"]["analyze"]["seed"] == 1
    # the README's command: on a 120-column terminal the changed param and every headline metric show
    table = _run(EXP_SHOW, repo, dict(env, COLUMNS="120")).stdout
    assert "…" not in table and "analyze.seed" in table and "seed1" in table, table
    for name in ("balanced_accuracy", "macro_auc", "accuracy", "ece"):
        assert f"sl_test.{name}" in table, table


@pytest.mark.skipif(not shutil.which("chromium"), reason="chromium is not installed (Debian: apt-get install chromium)")
def test_dvc_plots_page_draws_every_plot_offline_in_chromium(project):
    repo, env, _ = project
    _run(["dvc", "plots", "show", "-o", "plots_offline"], repo, env)
    page = repo / "plots_offline" / "index.html"
    dom = _run(
        ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--host-resolver-rules=MAP * ~NOTFOUND",
         "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
        repo, env,
    ).stdout  # fmt: skip
    embedded = page.read_text(encoding="utf-8").count("vegaEmbed('#")
    assert embedded >= 5 and dom.count("<canvas") == embedded  # every Vega plot drawn, no host reachable


def test_killed_train_stage_resumes_on_next_repro(project):
    """SIGKILL `dvc repro` mid-training; the next `dvc repro` continues from the last checkpoint."""
    import signal
    import time

    import torch

    repo, env, _ = project
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"].update(fepochs=1, epochs=3, seed=7)  # new parameters: train must run again
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    checkpoint = repo / "outputs" / "checkpoint" / "last.pt"
    proc = subprocess.Popen(
        ["dvc", "repro"],
        cwd=repo,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 600
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # dvc and the stage process it started
    proc.wait()
    assert checkpoint.exists(), "dvc repro ended before the first epoch checkpoint"
    done = torch.load(checkpoint, weights_only=True)["epochs_done"]
    assert 1 <= done < 4
    result = _run(["dvc", "repro"], repo, env)
    assert f"resuming from outputs/checkpoint/last.pt after epoch {done}" in result.stdout
    logged = json.loads((repo / "outputs" / "dvclive" / "metrics.json").read_text())
    assert logged["step"] == 3  # 4 epochs, steps 0..3, the resumed epochs included
    assert not checkpoint.exists() and (repo / "outputs" / "checkpoint" / "status.json").is_file()


def test_exp_run_starts_torchrun_when_params_ask(project):
    """`train.launcher: torchrun` through DVC itself: the train stage relaunches as 2 gloo processes."""
    repo, env, _ = project
    result = _run(
        [
            "dvc",
            "exp",
            "run",
            "-n",
            "ddp",
            "-S",
            "train.launcher=torchrun",
            "-S",
            "train.nproc=2",
            "-S",
            "train.fepochs=0",
            "-S",
            "train.epochs=1",
        ],
        repo,
        env,
    )
    assert "train: launching 2 processes" in result.stdout
    assert json.loads((repo / "outputs" / "model" / "train.json").read_text())["processes"] == 2
    metrics = json.loads((repo / "outputs" / "metrics.json").read_text())
    assert 0.0 <= metrics["sl_test"]["accuracy"] <= 1.0
    rows = json.loads(_run(["dvc", "exp", "show", "--json"], repo, env).stdout)
    named = [
        rev
        for row in rows
        for exp in (row.get("experiments") or [])
        for rev in exp.get("revs", [])
        if rev.get("name") == "ddp"
    ]
    assert named and named[0]["data"]["params"]["params.yaml"]["data"]["train"]["launcher"] == "torchrun"
