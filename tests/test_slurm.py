"""slurm/train.sbatch without SLURM: stub `srun` and `scontrol` first on PATH run the script's command once per
simulated node (with the variables SLURM sets there), and `--launch-dry-run` makes every node's `dermdl train`
print the torchrun command it would run. The test checks those command lines, node by node."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "slurm" / "train.sbatch"

SRUN = r"""#!/usr/bin/env bash
# stub srun: keep its options, run the command once per node of the job, as SLURM would on each node
set -euo pipefail
while [[ $# -gt 0 && $1 == -* ]]; do echo "$1" >> "$STUB_LOG/srun_options"; shift; done
mapfile -t hosts < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
for i in "${!hosts[@]}"; do
  SLURM_NODEID=$i SLURM_PROCID=$i SLURM_LOCALID=0 SLURM_STEP_ID=0 SLURMD_NODENAME=${hosts[$i]} \
    SLURM_NNODES=${#hosts[@]} SLURM_NTASKS=${#hosts[@]} "$@" > "$STUB_LOG/node_$i.out"
done
"""
SCONTROL = r"""#!/usr/bin/env bash
# stub scontrol: `show hostnames LIST` prints the hosts the test chose for exactly that list
[[ $1 == show && $2 == hostnames && $3 == "$STUB_NODELIST" ]] || { echo "scontrol stub: unexpected $*" >&2; exit 1; }
printf '%s\n' $STUB_HOSTS
"""


def _stubs(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", SRUN), ("scontrol", SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return bin_dir


def _job_env(tmp_path: Path, nodelist: str, hosts: list[str], extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MASTER_", "GPUS_"))}
    env.update(
        PATH=f"{_stubs(tmp_path)}{os.pathsep}{env['PATH']}",
        PYTHON=sys.executable,
        STUB_LOG=str(tmp_path),
        STUB_NODELIST=nodelist,
        STUB_HOSTS=" ".join(hosts),
        SLURM_JOB_ID="4242",
        SLURM_JOB_NODELIST=nodelist,
        SLURM_NNODES=str(len(hosts)),
        SLURM_SUBMIT_DIR=str(ROOT),  # the repository on the shared file system
        **extra,
    )
    return env


@pytest.mark.parametrize(
    "nodelist, hosts, extra, gpus, endpoint",
    [
        ("gpu[07-09]", ["gpu07", "gpu08", "gpu09"], {"SLURM_GPUS_PER_NODE": "a100:4"}, 4, "gpu07:29500"),
        ("n1,n2", ["n1", "n2"], {"GPUS_PER_NODE": "8", "MASTER_PORT": "29999"}, 8, "n1:29999"),
    ],
)
def test_sbatch_runs_one_torchrun_per_node_with_the_rendezvous_on_the_first(
    tmp_path, nodelist, hosts, extra, gpus, endpoint
):
    env = _job_env(tmp_path, nodelist, hosts, extra)
    done = subprocess.run(
        ["bash", str(SCRIPT), "-S", "train.lr=2e-4", "--launch-dry-run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"rendezvous {endpoint}, job 4242" in done.stdout
    assert (tmp_path / "srun_options").read_text().split() == ["--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    for node in range(len(hosts)):
        lines = [ln for ln in (tmp_path / f"node_{node}.out").read_text().splitlines() if ln.startswith("train:")]
        assert len(lines) == 1, lines
        heading, command = lines[0].split(": ", 2)[1:]
        assert heading == f"node {node} of {len(hosts)}"
        argv = shlex.split(command.split("): ", 1)[1])
        assert argv == [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nnodes={len(hosts)}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={endpoint}",
            "--rdzv-id=4242",
            f"--rdzv-conf=join_timeout=600,is_host={int(node == 0)}",
            f"--nproc-per-node={gpus}",
            "-m",
            "dermdl.cli",
            "train",
            "--params",
            "params.yaml",
            "-S",
            "train.launcher=torchrun",
            "-S",
            f"train.nproc={gpus}",
            "-S",
            "train.lr=2e-4",
            "--launch-dry-run",
        ]


def test_sbatch_outside_slurm_says_so(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "run this with sbatch" in done.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed (make lint installs it)")
def test_sbatch_is_shellcheck_clean():
    done = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout
