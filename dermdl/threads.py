"""How many CPU threads one dermdl process computes with (params ``threads``, ``dermdl predict --threads``).

Why: PyTorch, OpenCV and OpenMP/MKL each default to one thread per core *per process*. Parallel experiments
(``dvc queue start -j J``) and data-parallel processes (torchrun, P per node) share the cores, so J x P x cores
threads fight over them and every run slows down, often several times. The rule, applied at the start of
every stage and of ``dermdl predict`` (dermdl.cli.run):

- ``threads: T > 0``: this process uses T threads (torch intra- and inter-op, OpenCV), and the processes it
  starts (preprocess workers, torchrun's processes) inherit ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` = T;
- ``threads: 0`` (default): a count the environment already set wins (``OMP_NUM_THREADS``: torchrun sets 1
  when it starts more than one process per node; a scheduler or the user may set it), for OpenCV and torch's
  inter-op pool too; else, under a launcher that starts P processes per node (``LOCAL_WORLD_SIZE``), the
  usable cores / P; else the libraries' own defaults, untouched. Nothing is exported, so a torchrun started by
  the train stage still makes its own choice per process.

Keep threads x jobs x processes per node <= cores (docs/experiments.md).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

#: Variables that OpenMP, MKL and OpenCV read when a child process starts its thread pool.
CHILD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENCV_FOR_THREADS_NUM")


def usable_cores() -> int:
    """Cores this process may run on: the affinity mask (taskset, cgroup cpusets, SLURM), not the machine's."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _positive(text: str | None) -> int | None:
    """``"4"`` -> 4; OpenMP's nested form ``"4,2"`` -> 4 (the outer level); anything else -> None."""
    head = (text or "").split(",")[0].strip()
    return int(head) if head.isdigit() and int(head) > 0 else None


def resolve_threads(requested: int, env: Mapping[str, str], cores: int) -> int | None:
    """The thread count for ``threads: requested`` in environment ``env`` on ``cores`` usable cores; None: keep
    the libraries' defaults (one process, nothing asked for)."""
    if requested < 0:
        raise ValueError(f"threads: {requested}; use 0 (automatic) or a positive number of threads per process")
    if requested > 0:
        return requested
    inherited = _positive(env.get("OMP_NUM_THREADS"))
    if inherited is not None:
        return inherited
    processes = _positive(env.get("LOCAL_WORLD_SIZE")) or 1
    return max(1, cores // processes) if processes > 1 else None


def pin_threads(requested: int, *, torch_now: bool = True) -> int | None:
    """Apply ``threads: requested`` to this process and its future children; return the count pinned (None:
    the libraries' defaults were left alone).

    ``torch_now=False`` leaves torch unimported when it is not yet (validate and preprocess never need it, nor
    ``dermdl predict`` on an ONNX file; importing it costs seconds); a torch imported later still reads the
    exported ``OMP_NUM_THREADS``."""
    cores = usable_cores()
    count = resolve_threads(requested, os.environ, cores)
    if requested > cores:
        print(
            f"dermdl: warning: threads: {requested} on {cores} usable cores oversubscribes the CPU; use at most "
            f"{cores} (divided by the parallel jobs and processes)",
            file=sys.stderr,
        )
    if count is None:
        return None
    if requested > 0:
        for name in CHILD_VARIABLES:
            os.environ[name] = str(count)
    try:
        import cv2
    except ImportError:  # pragma: no cover - opencv is a dependency; a stripped deployment may lack it
        pass
    else:
        cv2.setNumThreads(count)
    if torch_now or "torch" in sys.modules:
        import torch

        torch.set_num_threads(count)
        try:  # once per process, and only before the first parallel work; a second call keeps the first
            torch.set_num_interop_threads(count)
        except RuntimeError:
            pass
    return count


def onnx_threads(requested: int) -> int:
    """ONNX Runtime's intra-op thread count for ``threads: requested`` (0: its own default, one per core).
    It reads no ``OMP_NUM_THREADS``, so the rule above reaches it only through its session options."""
    return resolve_threads(requested, os.environ, usable_cores()) or 0


def threads_in_use() -> dict[str, int]:
    """What torch computes with now (model/train.json records it: a test or a reader can check the pin)."""
    import torch

    return {"threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads()}
