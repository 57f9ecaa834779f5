"""``train.launcher: torchrun``: the torchrun command line (params + environment -> argv, one pure function)
and the launch itself, without importing torch (the launcher process only starts torchrun and waits).

Where the node count, this node's index and the rendezvous come from — the one place it is decided,
key by key:

1. a ``train.`` key set to something other than its default (``nnodes: 1``, ``node_rank: 0``,
   ``rdzv_endpoint: ""``) wins: the user said so;
2. else a scheduler's variables: ``SLURM_NNODES`` (or ``SLURM_JOB_NUM_NODES``) and ``SLURM_NODEID``;
   the endpoint of a multi-node run from ``MASTER_ADDR`` (+ ``MASTER_PORT``), else the first host of
   ``SLURM_JOB_NODELIST`` (port ``MASTER_PORT`` or 29500);
3. else one node: ``torchrun --standalone``.

Several nodes rendezvous with torchrun's c10d backend on the endpoint, under the id ``SLURM_JOB_ID``
(else ``dermdl``), waiting ``train.dist_timeout`` seconds at most for every node to join. Node 0 hosts the
rendezvous (``is_host``, rather than torch's guess from host names, which misses an endpoint given by an
alias and leaves it to chance when two "nodes" share a machine). torchrun itself numbers the processes, so
global rank 0 — the one that writes — may sit on any node (``--node-rank`` is left out: c10d ignores it,
with a warning). Torch-free: params and the CLI import it at start-up.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: train.* keys that say where a run's processes run, not what they train: a checkpoint written under
#: one topology resumes under another (and every node of one run, whose node_rank differs, agrees on it)
LAUNCH_KEYS = frozenset({"launcher", "nproc", "nnodes", "node_rank", "rdzv_endpoint", "dist_timeout"})
DEFAULT_PORT = 29500
_ENDPOINT = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+):(?P<port>\d{1,5})$")


def check_endpoint(value: str, key: str = "train.rdzv_endpoint") -> str:
    """``host:port`` (``[v6]:port``) or "" (none); anything else is one line naming ``key``."""
    if value == "":
        return value
    match = _ENDPOINT.match(value)
    if not match or not 0 < int(match["port"]) < 65_536:
        raise ValueError(f"{key}={value!r} is not host:port; give node 0's address and a free port, e.g. node0:29500")
    return value


def first_host(nodelist: str) -> str:
    """The first host of a SLURM hostlist (``gpu[03-05,09],cpu1`` -> ``gpu03``), as ``scontrol show
    hostnames`` would list it first; brackets keep their zero padding."""
    depth, end = 0, len(nodelist)
    for i, char in enumerate(nodelist):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            end = i
            break
    head = nodelist[:end].strip()
    host = re.sub(r"\[([^\]]*)\]", lambda m: m[1].split(",")[0].split("-")[0], head)
    if not host or "[" in host or "]" in host:
        raise ValueError(f"SLURM_JOB_NODELIST={nodelist!r}: cannot read its first host; set MASTER_ADDR to node 0's")
    return host


@dataclass(frozen=True)
class Topology:
    """Where this node's torchrun stands in the run."""

    nnodes: int
    node_rank: int
    nproc: int
    rdzv_endpoint: str  # "" = one node, --standalone
    rdzv_id: str
    timeout: int  # seconds: rendezvous join (here) and every collective (dermdl.distributed.init)
    source: str  # where nnodes/node_rank came from, for messages: "params" or "SLURM"


def _env_int(env: Mapping[str, str], *names: str) -> tuple[int, str] | None:
    for name in names:
        if env.get(name, "").strip():
            try:
                return int(env[name]), name
            except ValueError:
                raise ValueError(
                    f"{name}={env[name]!r} is not a whole number; unset it or fix the job script"
                ) from None
    return None


def topology(train: Any, env: Mapping[str, str]) -> Topology:
    """Resolve nnodes / node_rank / endpoint from ``train`` (TrainParams) and ``env`` (module docstring)."""
    nnodes, node_rank, endpoint, source = train.nnodes, train.node_rank, train.rdzv_endpoint, "params"
    nnodes_key, rank_key = "train.nnodes", "train.node_rank"
    if nnodes == 1 and (found := _env_int(env, "SLURM_NNODES", "SLURM_JOB_NUM_NODES")):
        nnodes, nnodes_key = found
        source = "SLURM"
    if node_rank == 0 and (found := _env_int(env, "SLURM_NODEID")):
        node_rank, rank_key = found
    if not endpoint and nnodes > 1:
        port = env.get("MASTER_PORT", "").strip() or str(DEFAULT_PORT)
        if env.get("MASTER_ADDR", "").strip():
            endpoint = check_endpoint(f"{env['MASTER_ADDR'].strip()}:{port}", "MASTER_ADDR:MASTER_PORT")
        elif env.get("SLURM_JOB_NODELIST", "").strip():
            endpoint = check_endpoint(f"{first_host(env['SLURM_JOB_NODELIST'])}:{port}", "SLURM_JOB_NODELIST")
    if not 0 <= node_rank < nnodes:
        raise ValueError(f"{rank_key}={node_rank} must be below {nnodes_key}={nnodes} (nodes are numbered 0..N-1)")
    if nnodes > 1 and not endpoint:
        raise ValueError(
            f"{nnodes_key}={nnodes} needs train.rdzv_endpoint (host:port of node 0, e.g. node0:29500) "
            "or MASTER_ADDR/MASTER_PORT in the environment"
        )
    rdzv_id = env.get("SLURM_JOB_ID", "").strip() or "dermdl"
    return Topology(nnodes, node_rank, train.nproc, endpoint, rdzv_id, train.dist_timeout, source)


def torchrun_argv(train: Any, env: Mapping[str, str], cli_args: Sequence[str], python: str) -> list[str]:
    """The command that re-runs ``dermdl <cli_args>`` under torchrun on this node."""
    where = topology(train, env)
    command = [python, "-m", "torch.distributed.run"]
    if where.nnodes == 1 and not where.rdzv_endpoint:
        command.append("--standalone")
    else:
        command += [
            f"--nnodes={where.nnodes}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={where.rdzv_endpoint}",
            f"--rdzv-id={where.rdzv_id}",
            f"--rdzv-conf=join_timeout={where.timeout},is_host={int(where.node_rank == 0)}",
        ]
    return [*command, f"--nproc-per-node={where.nproc}", "-m", "dermdl.cli", *cli_args]


def under_launcher() -> bool:
    return "LOCAL_RANK" in os.environ or "TORCHELASTIC_RUN_ID" in os.environ


def should_launch(params: Any) -> bool:
    return params.train.launcher == "torchrun" and not under_launcher()


def launch(params: Any, cli_args: list[str], dry_run: bool = False) -> int:
    """Re-run this ``dermdl`` command under torchrun: ``train.nproc`` processes on this node, which joins
    ``nnodes`` nodes when there are several; ``dry_run`` prints the command only (check a cluster set-up)."""
    from dermdl.errors import StageError

    where = topology(params.train, os.environ)
    command = torchrun_argv(params.train, os.environ, cli_args, sys.executable)
    node = f"node {where.node_rank} of {where.nnodes}: " if where.nnodes > 1 else ""
    rendezvous = f" (rendezvous {where.rdzv_endpoint}, id {where.rdzv_id})" if where.rdzv_endpoint else ""
    print(f"train: {node}launching {where.nproc} processes{rendezvous}: {shlex.join(command)}", flush=True)
    if dry_run:
        return 0
    code = subprocess.call(command)
    if code != 0:
        lost = (
            f"; if a rank lost its peers, check the other nodes' logs (train.dist_timeout={where.timeout} s "
            "bounds every wait)"
            if where.nnodes > 1
            else ""
        )
        raise StageError(
            f"torchrun ended with exit code {code} on {node or 'this node: '}the failing rank's message is above{lost}"
        )
    return 0
