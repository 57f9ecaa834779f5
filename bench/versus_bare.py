"""dermdl's training and inference paths side by side with a bare PyTorch loop, in one run.

    python bench/versus_bare.py --import-dir /tmp/ham/import                  # 3 tasks, ~8 min on 2 cores
    python bench/versus_bare.py --import-dir /tmp/ham/import --tasks classification --rounds 3
    python bench/versus_bare.py --import-dir DEMO --tasks classification --device cuda --amp bf16  # GPU

``--import-dir`` holds HAM10000 in dermdl's layouts; it is made when missing with
``dermdl import ../shared/data/ham10000/labels.csv --preset ham10000 --out DIR --seed 0``.
Per task: ``dermdl preprocess`` from scratch (timed), again with nothing changed (must do no work);
then on the same first N prepared training images, alternately, the bare loop (bench/bare.py) and
``dermdl.train.fit`` (Learner, callbacks, DVCLive/TensorBoard logging, a checkpoint per epoch, the
array data path), each one epoch with the same model, batch, AdamW + one-cycle and the same
flips/transposes; median training images/s of each and the ratio. Then inference on raw test
images: bare (PIL decode + resize + forward) vs. the task's ``predict``. Run it alone on the machine:
a second job on the cores measures contention, not code. ``--device cuda --amp bf16`` runs both sides
on the GPU with the same mixed precision (dermdl: ``train.mixed_precision``; bare: ``torch.autocast``);
``--import-dir`` may be a demo folder (``python -m dermdl.demo``), as bench/gpu_check.sh does.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bare  # noqa: E402

SETTINGS = {  # task -> (batch, training images, inference images)
    "classification": (32, 1280, 512),
    "segmentation": (16, 480, 256),
    "detection": (8, 160, 128),
}
HAM = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ham10000" / "labels.csv"


def params_for(task: str, root: Path, out: Path, bs: int, amp: str = "off"):
    from dermdl.params import params_from_dict

    return params_from_dict(
        {
            "task": task,
            "out_dir": str(out),
            "data": {"root": str(root), "sl_train": ["sl_train"], "sl_tests": ["sl_test"]},
            "preprocess": {"size": 128, "workers": 2},
            "train": {
                "input_size": 128,
                "bs": bs,
                "lr": 1e-3,
                "epochs": 1,
                "fepochs": 0,
                "recipe": "one_cycle",
                "max_rotate": 0.0,
                "max_zoom": 1.0,
                "max_lighting": 0.0,
                "exp_name": f"bench-{task}",
                "mixed_precision": amp,
            },
            "detection": {"model": "fasterrcnn_efficientnet_lite0_fpn"},
        }
    )


def timed(fn, *args):
    began = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - began


def bare_inputs(task_name: str, records: list[dict], classes: list[str]):
    """The same prepared images, read fully into RAM, and the targets as plain tensors."""
    from dermdl.arrays import IMAGES, TARGETS

    folder = Path(records[0]["arrays"])
    rows = np.array([r["row"] for r in records])
    images = np.load(folder / IMAGES)[rows]
    if task_name == "segmentation":
        return images, np.load(folder / TARGETS)[rows], "masks"
    if task_name == "detection":
        from dermdl.batches import Boxes

        return images, Boxes(records, classes).targets, "boxes"
    index = {c: i for i, c in enumerate(classes)}
    return images, torch.tensor([index[r["target"]] for r in records]), "labels"


def build(task, params, classes):
    """The network dermdl builds for these params (same constructor for both sides)."""
    from dermdl.models import ModelConfig

    t = params.train
    config = ModelConfig(
        task=task.name,
        arch=params.model,  # the task's model (classification.model, ...), as dermdl's Session
        classes=list(classes),
        input_size=t.input_size,
        mean=[],
        std=[],
        preprocess_size=params.preprocess.size,
        resize=params.preprocess.resize,
        extra={"exp_name": t.exp_name, "pretrained": t.pretrained, **task.config_extra(params)},
    )
    return task.build_model(config, t.pretrained)


def bare_loss(task, params, classes, records):
    loss, _ = task.loss_and_metrics(params, classes, records)
    if task.name == "classification":
        weight = getattr(loss, "func", loss).weight  # fastai's CrossEntropyLossFlat wraps nn.CrossEntropyLoss
        return torch.nn.CrossEntropyLoss(weight=weight)
    return loss


def bench_task(
    name: str, import_dir: Path, work: Path, rounds: int, device: str = "cpu", amp: str = "off", bs: int = 0
) -> dict:
    from dermdl import pipeline
    from dermdl.tasks import get_task
    from dermdl.train import fit

    default_bs, n_train, n_infer = SETTINGS[name]
    bs = bs or default_bs
    params = params_for(name, import_dir / name, work / name, bs, amp)
    task = get_task(name)
    shutil.rmtree(params.out / "prepared", ignore_errors=True)
    _, prep_seconds = timed(pipeline.preprocess, params)
    _, rerun_seconds = timed(pipeline.preprocess, params)
    print(
        f"  {name}: dermdl preprocess {prep_seconds:.1f} s (2 workers), unchanged rerun {rerun_seconds:.2f} s",
        flush=True,
    )
    manifest = pipeline.load_manifest(params)
    classes = manifest["classes"]
    pool = manifest["datasets"]["sl_train"]
    records = [pool[i] for i in sorted(np.random.RandomState(0).permutation(len(pool))[:n_train])]  # every class
    images, targets, kind = bare_inputs(name, records, classes)
    torch.use_deterministic_algorithms(params.train.deterministic, warn_only=True)  # as dermdl's default
    runs: dict[str, list[float]] = {"bare": [], "dermdl": []}
    model = None
    for r in range(rounds):
        torch.manual_seed(r)
        net, norm = build(task, params, classes)
        out = bare.train(
            net,
            images,
            targets,
            bare_loss(task, params, classes, records),
            bs=bs,
            lr=params.train.lr,
            epochs=1,
            norm=None if kind == "boxes" else norm,
            kind=kind,
            device=device,
            amp=amp,
        )
        runs["bare"].append(out["images_per_second"])
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            result = fit(task, params, records, [], classes, Path(tmp))
        runs["dermdl"].append(result.phases[-1]["images_per_second"])
        model, config, load_share = result.model, result.config, result.phases[-1]["data_loading_share"]
        print(
            f"  {name} round {r + 1}: bare {runs['bare'][-1]:.1f}, dermdl {runs['dermdl'][-1]:.1f} images/s "
            f"(data loading {load_share:.1%} of dermdl's step time)",
            flush=True,
        )
    train_ratio = statistics.median(runs["dermdl"]) / statistics.median(runs["bare"])
    # inference on raw test images, same trained network for both
    raw = [
        str(Path(pipeline.load_manifest(params)["source_root"]) / r["source"])
        for r in manifest["datasets"]["sl_test"][:n_infer]
    ]
    infer: dict[str, list[float]] = {"bare": [], "dermdl": []}
    norm = None if kind == "boxes" else (config.mean, config.std)
    for _ in range(rounds):
        infer["bare"].append(bare.predict(model, raw, 128, 64, norm)["images_per_second"])
        _, seconds = timed(task.predict, model, config, [Path(p) for p in raw], 64)
        infer["dermdl"].append(len(raw) / seconds)
    infer_ratio = statistics.median(infer["dermdl"]) / statistics.median(infer["bare"])
    return {
        "task": name,
        "device": device,
        "amp": amp,
        "batch": bs,
        "train_images": len(records),
        "rounds": rounds,
        "preprocess_seconds": round(prep_seconds, 1),
        "preprocess_rerun_seconds": round(rerun_seconds, 2),
        "preprocess_images": sum(len(v) for v in manifest["datasets"].values()),
        "train_images_per_second": {k: [round(v, 2) for v in vs] for k, vs in runs.items()},
        "train_ratio": round(train_ratio, 3),
        "data_loading_share": load_share,
        "infer_images_per_second": {k: [round(v, 2) for v in vs] for k, vs in infer.items()},
        "infer_ratio": round(infer_ratio, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--import-dir", type=Path, default=Path("/tmp/ham/import"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/ham/bench"))
    parser.add_argument("--tasks", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", choices=["off", "bf16", "fp16"], default="off", help="mixed precision (CUDA)")
    parser.add_argument("--bs", type=int, default=0, help="batch size (default: per task, SETTINGS)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible")
    from fastai.torch_core import defaults

    defaults.use_cuda = args.device == "cuda"  # dermdl's side trains where the bare loop does
    if not (args.import_dir / "classification").is_dir():
        subprocess.run(
            ["dermdl", "import", str(HAM), "--preset", "ham10000", "--out", str(args.import_dir), "--seed", "0"],
            check=True,
        )
    args.work.mkdir(parents=True, exist_ok=True)
    results = []
    sources = sorted(str(p) for p in (args.import_dir / "classification").rglob("*") if p.suffix in (".jpg", ".png"))
    baseline = bare.decode_into_memory(sources, 128)
    print(
        f"bare preprocessing: {baseline['images']} images decoded + resized into memory in "
        f"{baseline['seconds']:.1f} s (1 process)",
        flush=True,
    )
    for name in args.tasks:
        results.append(bench_task(name, args.import_dir, args.work, args.rounds, args.device, args.amp, args.bs))
    print(
        f"\n{'task':15} {'train img/s bare':>17} {'dermdl':>8} {'ratio':>6} {'infer img/s bare':>17} "
        f"{'dermdl':>8} {'ratio':>6} {'preprocess s':>13} {'rerun s':>8}"
    )
    for r in results:
        tb, td = (statistics.median(r["train_images_per_second"][k]) for k in ("bare", "dermdl"))
        ib, idm = (statistics.median(r["infer_images_per_second"][k]) for k in ("bare", "dermdl"))
        print(
            f"{r['task']:15} {tb:17.1f} {td:8.1f} {r['train_ratio']:6.2f} {ib:17.1f} {idm:8.1f} "
            f"{r['infer_ratio']:6.2f} {r['preprocess_seconds']:13.1f} {r['preprocess_rerun_seconds']:8.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps({"bare_decode": baseline, "tasks": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
