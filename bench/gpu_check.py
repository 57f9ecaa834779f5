"""The steps of bench/gpu_check.sh, each a subcommand that writes OUT/<step>.json (the table: gpu_check_table.py).

    python bench/gpu_check.py env OUT --device cuda     # versions -> OUT/env.json; prints the AMP mode to use
    python bench/gpu_check.py demo OUT --device cuda    # the demo data set -> OUT/demo
    python bench/gpu_check.py amp OUT --device cuda     # (a) the demo trained with bf16, then fp16
    python bench/gpu_check.py ddp OUT --device cuda --amp bf16 [--nproc 1]   # (b) DDP under torchrun

Why Python: the check must see what dermdl really did, not what it was asked to do. A fastai callback
(:func:`probe_class`) records, at the first training batch, where the batch and the weights are, whether
autocast is on and at which dtype, the dtype of the model's output, the memory format and whether the
model runs inside DistributedDataParallel; the run's curves and weights are then checked for NaN.
``--device cpu`` runs the same steps with tiny sizes (gloo instead of NCCL) to prove the plumbing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SIZES = {  # demo images per class (train, test), image side = input size, schedule; small on CPU
    "cuda": {"n_train": 300, "n_test": 40, "size": 128, "bs": 64, "epochs": 3, "workers": 8},
    "cpu": {"n_train": 8, "n_test": 2, "size": 64, "bs": 8, "epochs": 1, "workers": 1},
}
AMP_MODES = ("bf16", "fp16")
SEEN: dict[str, Any] = {}  # the probe's record of the first training batch
TWO_RANK_TIMEOUT_S = 120  # a 2-rank all_reduce takes seconds; NCCL refuses two ranks on one GPU at once


def demo_params(out: Path, name: str, device: str, amp: str):
    """The classification demo, trained in ``out/name`` at ``amp`` with channels_last (the GPU defaults)."""
    from dermdl.params import params_from_dict

    z = SIZES[device]
    return params_from_dict(
        {
            "task": "classification",
            "out_dir": str(out / name),
            "data": {"root": str(out / "demo" / "classification"), "wl_train": [], "sl_tests": ["sl_test"]},
            "preprocess": {"size": z["size"], "workers": z["workers"]},
            "train": {
                "input_size": z["size"],
                "bs": z["bs"],
                "epochs": z["epochs"],
                "fepochs": 0,
                "mixed_precision": amp,
                "channels_last": True,
                "exp_name": f"gpu-check-{name}",
            },
        }
    )


def probe_class():
    """A fastai callback recording the first training batch's devices, autocast state and dtypes in SEEN."""
    import torch
    from fastai.callback.core import Callback

    from dermdl.distributed import unwrap

    def name(dtype: torch.dtype) -> str:
        return str(dtype).removeprefix("torch.")

    class Probe(Callback):
        order = 9  # before fastai's MixedPrecision (10) turns the output back into float32

        def after_pred(self) -> None:
            if not self.training or SEEN:
                return
            x, model = self.learn.xb[0], self.learn.model
            weight = next(p for p in unwrap(model).parameters() if p.dim() == 4)  # the first convolution
            kind = weight.device.type
            on = torch.is_autocast_enabled(kind)
            dist = torch.distributed
            SEEN.update(
                batch_device=str(x.device),
                model_device=str(weight.device),
                autocast=name(torch.get_autocast_dtype(kind)) if on else "off",
                output_dtype=name(self.learn.pred.dtype),
                channels_last=bool(
                    x.is_contiguous(memory_format=torch.channels_last)
                    and weight.is_contiguous(memory_format=torch.channels_last)
                ),
                ddp=type(model).__name__ == "DistributedDataParallel",
                backend=str(dist.get_backend()) if dist.is_initialized() else "none",
                world=dist.get_world_size() if dist.is_initialized() else 1,
            )

    return Probe


@contextmanager
def installed(*callbacks: Any) -> Iterator[None]:
    """Add callbacks to every fastai Learner made meanwhile (fastai's ``defaults.callbacks``)."""
    from fastai.learner import defaults

    SEEN.clear()
    defaults.callbacks.extend(callbacks)
    try:
        yield
    finally:
        for cb in callbacks:
            defaults.callbacks.remove(cb)


def finite_run(out: Path) -> dict:
    """The final validation loss, and whether every logged curve value and every weight is finite."""
    import torch

    curves = [
        float(line.split("\t")[-1])
        for tsv in (out / "dvclive" / "plots" / "metrics").rglob("*.tsv")
        for line in tsv.read_text().splitlines()[1:]
    ]
    state = torch.load(out / "model" / "model.pt", map_location="cpu", weights_only=True)
    weights = all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())
    metrics = json.loads((out / "dvclive" / "metrics.json").read_text())
    return {
        "valid_loss": metrics["valid"]["loss"],
        "curve_values": len(curves),
        "curves_finite": bool(curves) and all(math.isfinite(v) for v in curves),
        "weights_finite": weights,
    }


def train_once(params: Any) -> dict:
    """``dermdl train`` in this process, timed; on rank 0 what it wrote and what the probe saw."""
    from dermdl import distributed, pipeline

    began = time.perf_counter()
    pipeline.train(params)
    wall = time.perf_counter() - began
    if not distributed.is_main():
        return {}
    summary = json.loads((params.out / "model" / "train.json").read_text())
    return {
        "wall_s": round(wall, 1),
        "train_images": summary["train_images"],
        "epochs": summary["epochs"],
        "train_json_precision": summary["mixed_precision"],
        "probe": dict(SEEN),
        **finite_run(params.out),
    }


def write_json(path: Path, data: Any) -> None:
    from dermdl.io import atomic_write_json

    atomic_write_json(path, data)


def cmd_env(out: Path, device: str) -> int:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA device is visible (torch.cuda.is_available() is False); run it on a GPU machine, "
            "or GPU_CHECK_DEVICE=cpu bash bench/gpu_check.sh for the CPU plumbing run",
            file=sys.stderr,
        )
        return 2
    info: dict[str, Any] = {"device": device, "torch": torch.__version__, "amp": "off"}
    if device == "cuda":
        info |= {
            "cuda": torch.version.cuda,
            "nccl": ".".join(map(str, torch.cuda.nccl.version())),
            "gpu": torch.cuda.get_device_name(0),
            "gpus": torch.cuda.device_count(),
            "amp": "bf16" if torch.cuda.is_bf16_supported() else "fp16",
        }
    write_json(out / "env.json", info)
    print(info["amp"])
    return 0


def cmd_demo(out: Path, device: str) -> int:
    from dermdl.demo import generate_demo

    z = SIZES[device]
    generate_demo(out / "demo", size=z["size"], n_train=z["n_train"], n_test=z["n_test"], n_weak=0)
    return 0


def cmd_amp(out: Path, device: str) -> int:
    """(a) The demo trained once per AMP mode (CPU: both fall back to fp32, with dermdl's warning)."""
    import torch

    from dermdl import pipeline

    runs = []
    for mode in AMP_MODES:
        if mode == "bf16" and device == "cuda" and not torch.cuda.is_bf16_supported():
            runs.append({"amp": mode, "skipped": "this GPU has no bf16"})
            continue
        params = demo_params(out, f"amp-{mode}", device, mode)
        pipeline.preprocess(params)
        with installed(probe_class()):
            runs.append({"amp": mode, **train_once(params)})
        print(f"gpu_check amp: {mode}: {runs[-1]}", flush=True)
    write_json(out / "amp.json", {"device": device, "runs": runs})
    return 0


def run_group(command: list[str], timeout: float) -> tuple[int | None, str]:
    """Run ``command`` in its own process group (torchrun and its workers); kill the group on timeout."""
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
        return proc.returncode, output
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        return None, output


def torchrun(nproc: int, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", __file__, *args]


def two_rank_verdict(returncode: int | None, log: str) -> tuple[bool, str]:
    """Whether two ranks could share this machine's device, and why not, from the probe's exit and log."""
    if returncode == 0:
        return True, "2 processes"
    if returncode is None:
        return False, f"2 processes hung for {TWO_RANK_TIMEOUT_S} s"
    if "Duplicate GPU detected" in log:
        return False, "NCCL refuses 2 ranks on one GPU (Duplicate GPU detected)"
    errors = [line.strip() for line in log.splitlines() if "Error" in line]
    return False, f"2 processes failed: {errors[-1][:160] if errors else f'exit status {returncode}'}"


def cmd_ddp(out: Path, device: str, amp: str, nproc: int) -> int:
    """(b) 2 DDP processes if the device takes two ranks (a quick all_reduce decides), else 1 process."""
    from dermdl import pipeline

    pipeline.preprocess(demo_params(out, "ddp", device, amp))
    two_ranks = "not tried (--nproc)"
    if not nproc:
        returncode, log = run_group(torchrun(2, ["nccl-probe", "--device", device]), TWO_RANK_TIMEOUT_S)
        (out / "ddp-probe.log").write_text(log)
        ok, two_ranks = two_rank_verdict(returncode, log)
        nproc = 2 if ok else 1
    print(f"gpu_check ddp: {two_ranks}; training with {nproc} process(es)", flush=True)
    rank0 = out / "ddp-rank0.json"
    rank0.unlink(missing_ok=True)  # an earlier run's must not pass for this one's
    began = time.perf_counter()
    returncode = subprocess.call(torchrun(nproc, ["ddp-rank", str(out), "--device", device, "--amp", amp]))
    result = json.loads(rank0.read_text()) if returncode == 0 and rank0.is_file() else {}
    write_json(
        out / "ddp.json",
        {"nproc": nproc, "two_ranks": two_ranks, "returncode": returncode, "amp": amp, **result}
        | {"launch_wall_s": round(time.perf_counter() - began, 1)},
    )
    return 0 if returncode == 0 else 1


def cmd_nccl_probe(device: str) -> int:
    """Under torchrun: one all_reduce over all ranks, each on GPU LOCAL_RANK mod the GPUs there are."""
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    local = int(os.environ["LOCAL_RANK"])
    if device == "cuda":
        torch.cuda.set_device(local % torch.cuda.device_count())
    dist.init_process_group("nccl" if device == "cuda" else "gloo", timeout=timedelta(seconds=60))
    t = torch.ones(1, device=device)
    dist.all_reduce(t)
    ok, rank = int(t.item()) == dist.get_world_size(), dist.get_rank()
    dist.destroy_process_group()
    print(f"rank {rank}: all_reduce {'ok' if ok else 'WRONG'}")
    return 0 if ok else 1


def cmd_ddp_rank(out: Path, device: str, amp: str) -> int:
    """Under torchrun: ``dermdl train`` of the demo, DDP even with one process (dermdl itself wraps the
    model only when WORLD_SIZE > 1, and gives rank r GPU r, which two ranks on one GPU do not have)."""
    import torch
    import torch.distributed as dist

    from dermdl import distributed

    world, local = distributed.world_size(), int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda" and (world == 1 or local >= torch.cuda.device_count()):
        torch.cuda.set_device(local % torch.cuda.device_count())
        dist.init_process_group("nccl")
    elif world == 1:
        dist.init_process_group("gloo")
    extra = [distributed.DataParallel] if world == 1 else []
    with installed(probe_class(), *extra):
        result = train_once(demo_params(out, "ddp", device, amp))
    if result:
        write_json(out / "ddp-rank0.json", result)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["env", "demo", "amp", "ddp", "nccl-probe", "ddp-rank", "table"])
    parser.add_argument("out", type=Path, nargs="?", default=Path("."))
    parser.add_argument("--device", choices=list(SIZES), default="cuda")
    parser.add_argument("--amp", choices=["off", *AMP_MODES], default="off")
    parser.add_argument("--nproc", type=int, default=0, help="ddp: this many processes (0: 2 if the device allows)")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    if args.step == "table":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from gpu_check_table import print_table

        return print_table(out)
    steps = {
        "env": lambda: cmd_env(out, args.device),
        "demo": lambda: cmd_demo(out, args.device),
        "amp": lambda: cmd_amp(out, args.device),
        "ddp": lambda: cmd_ddp(out, args.device, args.amp, args.nproc),
        "nccl-probe": lambda: cmd_nccl_probe(args.device),
        "ddp-rank": lambda: cmd_ddp_rank(out, args.device, args.amp),
    }
    return steps[args.step]()


if __name__ == "__main__":
    raise SystemExit(main())
