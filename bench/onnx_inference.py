"""CPU inference images/second: PyTorch vs ONNX Runtime, for each task, on the same images, side by side.

    python bench/onnx_inference.py                       # 3 tasks, 48 demo images each, 2 threads
    python bench/onnx_inference.py --size 224 --images 96 --threads 1 --json bench-onnx.json

Each model is the task's default (efficientnet_lite0 encoder with its packaged ImageNet weights, untrained
heads: speed does not depend on the weights), exported with ``dermdl export``; both runtimes get the same
thread count and the same image files, and are timed end to end through the task's predict hook
(decode, resize, normalise, network, post-processing), after one warm-up pass. No TTA.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from dermdl.cli import main as dermdl
from dermdl.demo import generate_demo
from dermdl.export.runtime import load_onnx
from dermdl.models import ModelConfig, save_model
from dermdl.params import params_from_dict
from dermdl.tasks import get_task
from dermdl.tasks.segmentation.data import ValueMap

IMAGES = {
    "classification": "classification/sl_test",
    "segmentation": "segmentation/sl_test/images",
    "detection": "detection/images/sl_test",
}


def _config(task: str, size: int) -> ModelConfig:
    params = params_from_dict({"task": task})
    extra = get_task(task).config_extra(params)
    if task == "segmentation":
        extra = {"mask_values": ValueMap(params.segmentation.value_map(), 2).to_json()}
    classes = ["skin", "lesion"] if task == "segmentation" else ["melanoma", "nevus", "seborrheic_keratosis"]
    return ModelConfig(task, "efficientnet_lite0", classes, size, [0.5] * 3, [0.5] * 3, size, "squish", extra=extra)


def _rate(run: Callable[[], object], n: int, repeats: int) -> float:
    run()  # warm-up: first-call allocations, oneDNN/ORT kernel selection
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return n / best


def measure(task: str, root: Path, size: int, n_images: int, threads: int, bs: int, repeats: int) -> dict:
    config = _config(task, size)
    torch.manual_seed(0)
    model, _ = get_task(task).build_model(config, pretrained=True)
    model.eval()
    save_model(model, config, root / task)
    dermdl(["export", "--model", str(root / task)])
    paths = sorted((root / "demo" / IMAGES[task]).rglob("*.png"))[:n_images]
    plugin = get_task(task)
    onnx = load_onnx(root / f"{task}.onnx", threads=threads)  # dermdl export writes it beside the folder
    torch_rate = _rate(lambda: plugin.predict(model, config, paths, bs), len(paths), repeats)
    onnx_rate = _rate(lambda: plugin.onnx_predict(onnx, config, paths, bs), len(paths), repeats)
    return {"task": task, "images": len(paths), "pytorch": torch_rate, "onnxruntime": onnx_rate}


def run(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128, help="preprocess and input size (params default: 128)")
    parser.add_argument("--images", type=int, default=48, help="images per task")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for both runtimes")
    parser.add_argument("--bs", type=int, default=16, help="batch size (detection: one image per call in ONNX)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes; the fastest counts")
    parser.add_argument("--tasks", nargs="+", default=list(IMAGES), choices=list(IMAGES))
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        per_class = -(-args.images // 3)
        generate_demo(root / "demo", size=args.size, n_train=1, n_test=per_class, n_weak=0, n_negative=1)
        print(f"{'task':<16}{'images':>7}{'PyTorch img/s':>15}{'ONNX Runtime img/s':>20}{'ratio':>8}")
        for task in args.tasks:
            row = measure(task, root, args.size, args.images, args.threads, args.bs, args.repeats)
            row["ratio"] = row["onnxruntime"] / row["pytorch"]
            rows.append(row)
            print(
                f"{task:<16}{row['images']:>7}{row['pytorch']:>15.1f}{row['onnxruntime']:>20.1f}{row['ratio']:>7.2f}x",
                flush=True,
            )
    settings = {"size": args.size, "threads": args.threads, "bs": args.bs, "torch": torch.__version__}
    print(f"settings: {settings}")
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": settings, "rows": rows}, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    run()
