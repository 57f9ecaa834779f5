"""bench/gpu_check.sh, proved as far as a machine without a GPU allows: the script is valid bash (and
shellcheck-clean), refuses with one line when no CUDA device is visible, and its CPU plumbing mode
(GPU_CHECK_DEVICE=cpu: the same steps, tiny sizes, gloo) fills every row of its table with numbers that
are the runs' own. The checks the table applies on a GPU are tested on hand-made runs, including the
fault the check was written to catch: a bf16 run whose batches never left the CPU."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.sh"
sys.path.insert(0, str(ROOT / "bench"))
import gpu_check  # noqa: E402
import gpu_check_table as table  # noqa: E402

ROWS = [
    "(a) demo, bf16 requested",
    "(a) demo, fp16 requested",
    "(b) DDP, 2 processes",
    "(c) throughput",
    "(d) dermdl vs bare",
]


def _env(**extra: str) -> dict[str, str]:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return {**os.environ, "PATH": path, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", **extra}


def _script(out: Path, **extra: str) -> subprocess.CompletedProcess:
    env = _env(CUDA_VISIBLE_DEVICES="", **extra)  # no GPU, whatever the machine has
    return subprocess.run(["bash", str(SCRIPT), str(out)], env=env, capture_output=True, text=True, timeout=600)


def _table(text: str) -> dict[str, list[str]]:
    """The markdown table's rows by their first cell: [what, wall, result, check]."""
    rows = [line.strip("| ").split(" | ") for line in text.splitlines() if line.startswith("| ")]
    assert rows[0] == list(table.Row._fields)
    return {row[0]: row[1:] for row in rows[1:]}


def test_script_is_valid_bash_and_shellcheck_clean():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    shellcheck = shutil.which("shellcheck", path=_env()["PATH"])
    if shellcheck is None:
        pytest.skip("shellcheck is not installed")
    done = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


@pytest.mark.parametrize(
    "extra, message",
    [
        ({}, "gpu_check: no CUDA device is visible (torch.cuda.is_available() is False)"),
        ({"GPU_CHECK_DEVICE": "tpu"}, "gpu_check: GPU_CHECK_DEVICE=tpu: use cuda (the default) or cpu"),
    ],
)
def test_refuses_with_one_line(tmp_path, extra, message):
    done = _script(tmp_path / "out", **extra)
    assert done.returncode == 2
    assert done.stdout == "" and len(done.stderr.splitlines()) == 1 and done.stderr.startswith(message)
    assert not (tmp_path / "out" / "table.md").exists()


def test_spent_budget_skips_every_step_and_says_so(tmp_path):
    done = _script(tmp_path / "out", GPU_CHECK_DEVICE="cpu", GPU_CHECK_BUDGET="25")
    assert done.returncode == 1
    rows = _table(done.stdout)
    assert set(rows) == {"demo data set", *table.STEPS.values()}
    assert all(row[0] == "skipped: the time budget was spent" and row[3] == "FAIL" for row in rows.values())


@pytest.fixture(scope="module")
def plumbing(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check") / "out"
    done = _script(out, GPU_CHECK_DEVICE="cpu")
    return out, done


@pytest.mark.slow
@pytest.mark.xdist_group("train_core")
def test_cpu_plumbing_run_fills_every_row(plumbing):
    out, done = plumbing
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = _table(done.stdout)
    assert list(rows) == ROWS
    assert all(cell.strip() not in ("", "-", "?") for row in rows.values() for cell in row)
    assert all(row[3] == "ok" for row in rows.values())
    assert (out / "table.md").read_text() in done.stdout
    assert int((out / "total.seconds").read_text()) <= 300  # the default budget


@pytest.mark.slow
@pytest.mark.xdist_group("train_core")
def test_table_reports_the_runs_own_numbers(plumbing):
    out, done = plumbing
    rows = _table(done.stdout)
    for mode in gpu_check.AMP_MODES:
        metrics = json.loads((out / f"amp-{mode}" / "dvclive" / "metrics.json").read_text())
        train = json.loads((out / f"amp-{mode}" / "model" / "train.json").read_text())
        assert train["mixed_precision"] == "off"  # the CPU trains in fp32 whatever was asked
        assert f"valid loss {metrics['valid']['loss']:.4f}" in rows[f"(a) demo, {mode} requested"][2]
    ddp = json.loads((out / "ddp.json").read_text())
    assert ddp["nproc"] == 2 and ddp["two_ranks"] == "2 processes"  # gloo takes two ranks on one CPU
    assert rows["(b) DDP, 2 processes"][0].startswith("gloo × 2, DDP on")
    assert json.loads((out / "ddp" / "model" / "train.json").read_text())["processes"] == 2
    throughput = json.loads((out / "throughput.json").read_text())
    assert f"train {throughput['train_images_per_second']:.1f} images/s" in rows["(c) throughput"][2]
    versus = json.loads((out / "versus_bare.json").read_text())["tasks"][0]
    assert versus["device"] == "cpu" and versus["amp"] == "off"
    assert f"(ratio {versus['train_ratio']:.2f})" in rows["(d) dermdl vs bare"][2]


@pytest.mark.slow
@pytest.mark.xdist_group("train_core")
def test_one_process_ddp_trains_exactly_as_no_ddp(plumbing, tmp_path):
    """The fallback where NCCL refuses two ranks on one GPU: one process, model wrapped in DDP anyway."""
    out, _ = plumbing
    (tmp_path / "demo").symlink_to(out / "demo")
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "ddp", str(tmp_path), "--device", "cpu", "--nproc", "1"],
        env=_env(CUDA_VISIBLE_DEVICES=""),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ddp = json.loads((tmp_path / "ddp.json").read_text())
    probe = ddp["probe"]
    assert (probe["batch_device"], probe["ddp"], probe["backend"], probe["world"]) == ("cpu", True, "gloo", 1)
    plain = json.loads((out / "amp.json").read_text())["runs"][0]
    assert ddp["valid_loss"] == pytest.approx(plain["valid_loss"], abs=1e-4)  # averaging over 1 rank: no change
    row = table.ddp_row(ddp, json.loads((out / "amp.json").read_text()), "cpu")
    assert row.check == "ok" and "Δ +0.0000" in row.result


def _cuda_run(**probe: object) -> dict:
    """A clean CUDA bf16 run of step (a) as the probe and the files would report it."""
    seen = {
        "batch_device": "cuda:0",
        "model_device": "cuda:0",
        "autocast": "bfloat16",
        "output_dtype": "bfloat16",
        "channels_last": True,
        "ddp": False,
        "backend": "none",
        "world": 1,
    }
    return {
        "amp": "bf16",
        "probe": seen | probe,
        "train_json_precision": "bf16",
        "curves_finite": True,
        "weights_finite": True,
    }


@pytest.mark.parametrize(
    "run, device, problems",
    [
        (_cuda_run(), "cuda", []),
        (  # the fault found while writing the check: loaders left on the CPU, fastai moved the model there
            _cuda_run(batch_device="cpu", model_device="cpu", autocast="off", output_dtype="float32"),
            "cuda",
            [
                "batch on cpu, not cuda",
                "weights on cpu, not cuda",
                "autocast off, expected bf16",
                "model output float32, expected bfloat16",
            ],
        ),
        (_cuda_run(output_dtype="float32"), "cuda", ["model output float32, expected bfloat16"]),
        (_cuda_run(channels_last=False), "cuda", ["input or weights not channels_last"]),
        (_cuda_run() | {"curves_finite": False}, "cuda", ["NaN/inf in the logged curves or the weights"]),
        (
            _cuda_run() | {"amp": "fp16"},
            "cuda",
            [
                "autocast bfloat16, expected fp16",
                "model output bfloat16, expected float16",
                "train.json says bf16, expected fp16",
            ],
        ),
        (  # CPU: asked for bf16, trained in fp32, which is right there
            _cuda_run(batch_device="cpu", model_device="cpu", autocast="off", output_dtype="float32")
            | {"train_json_precision": "off"},
            "cpu",
            [],
        ),
        ({"amp": "bf16", "probe": {}}, "cuda", ["the probe saw no training batch"]),
    ],
)
def test_amp_checks(run, device, problems):
    assert table.amp_problems(run, device) == problems


NCCL_REFUSAL = """torch.distributed.DistBackendError: NCCL error in: ProcessGroupNCCL.cpp:1727, invalid usage
ncclInvalidUsage: This usually reflects invalid usage of NCCL library.
Last error:
Duplicate GPU detected : rank 1 and rank 0 both on CUDA device 1000"""


@pytest.mark.parametrize(
    "returncode, log, verdict",
    [
        (0, "rank 0: all_reduce ok\nrank 1: all_reduce ok", (True, "2 processes")),
        (1, NCCL_REFUSAL, (False, "NCCL refuses 2 ranks on one GPU (Duplicate GPU detected)")),
        (None, "", (False, f"2 processes hung for {gpu_check.TWO_RANK_TIMEOUT_S} s")),
        (
            1,
            "RuntimeError: CUDA error: out of memory",
            (False, "2 processes failed: RuntimeError: CUDA error: out of memory"),
        ),
        (1, "", (False, "2 processes failed: exit status 1")),
    ],
)
def test_two_rank_verdict(returncode, log, verdict):
    assert gpu_check.two_rank_verdict(returncode, log) == verdict


def test_loaders_make_batches_on_the_training_device(tmp_path, monkeypatch):
    """fastai reads the DataLoaders' device to place the model: it must be the training device, not the
    train loader's CPU default (on a GPU that trained on the CPU). "meta" stands in for a GPU here."""
    import fastai.torch_core

    from dermdl import pipeline
    from dermdl.batches import Labels, array_dataloaders, augmentation
    from dermdl.demo import generate_demo
    from dermdl.params import params_from_dict

    generate_demo(tmp_path / "demo", n_train=4, n_test=1, n_weak=0, size=32)
    params = params_from_dict(
        {
            "out_dir": str(tmp_path / "out"),
            "data": {"root": str(tmp_path / "demo" / "classification"), "wl_train": [], "sl_tests": ["sl_test"]},
            "preprocess": {"size": 32, "workers": 1},
            "train": {"input_size": 32, "bs": 4, "max_rotate": 30.0},
        }
    )
    pipeline.preprocess(params)
    manifest = pipeline.load_manifest(params)
    records = manifest["datasets"]["sl_train"]
    monkeypatch.setattr(fastai.torch_core, "default_device", lambda use=-1: torch.device("meta"))
    norm = ([0.5] * 3, [0.25] * 3)
    dls = array_dataloaders(
        records[:8], records[8:], Labels, params, norm, augmentation(params.train), classes=manifest["classes"]
    )
    assert dls.device == torch.device("meta")  # what fastai's TrainEvalCallback moves the model to
    for loader in (dls.train, dls.valid):
        x, y = next(iter(loader))
        assert (x.device.type, y.device.type, tuple(x.shape)) == ("meta", "meta", (4, 3, 32, 32))


@pytest.mark.slow
@pytest.mark.xdist_group("train_core")
@pytest.mark.parametrize("amp, dtype", [("off", "float32"), ("bf16", "bfloat16")])
def test_throughput_amp_runs_under_autocast(amp, dtype):
    from train_throughput import measure

    result = measure("efficientnet_lite0", 32, 2, 1, "cpu", channels_last=True, amp=amp)
    assert result["output_dtype"] == dtype and result["train_images_per_second"] > 0
