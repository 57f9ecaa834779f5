"""The quality baseline of issue 10: a bare PyTorch loop trained on HAM10000, scored like dermdl.

    python bench/bare_quality.py --prepared /tmp/ham/default/prepared --epochs 4 --out /tmp/ham/bare.json

Reads the images dermdl's preprocess stacked (``<prepared>/sl_train/arrays``), trains the network
dermdl builds for the defaults (efficientnet_lite0, packaged ImageNet weights) on ALL of sl_train with
AdamW 1e-3 + one-cycle, class-weighted cross-entropy and per-sample flips/transposes (bench/bare.py),
then predicts sl_test and computes the same metrics with the same bootstrap CIs as ``dermdl analyze``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bare  # noqa: E402


def main() -> int:
    from dermdl.tasks.classification.losses import class_weights
    from dermdl.tasks.classification.metrics import classification_metrics
    from dermdl.tasks.classification.model import build_classifier

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepared", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--bs", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    manifest = json.loads((args.prepared / "manifest.json").read_text())
    classes = manifest["classes"]

    def load(name: str):
        records = manifest["datasets"][name]
        images = np.load(args.prepared / name / "arrays" / "images.npy")
        return images, torch.tensor([classes.index(r["target"]) for r in records])

    (x_train, y_train), (x_test, y_test) = load("sl_train"), load("sl_test")
    torch.manual_seed(args.seed)
    model, norm = build_classifier("efficientnet_lite0", len(classes), True)
    weight = class_weights([classes[i] for i in y_train.tolist()], classes, "balanced")
    began = time.perf_counter()
    speed = bare.train(
        model,
        x_train,
        y_train,
        torch.nn.CrossEntropyLoss(weight=weight),
        bs=args.bs,
        lr=args.lr,
        epochs=args.epochs,
        norm=norm,
        kind="labels",
    )
    seconds = time.perf_counter() - began
    model.eval()
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in norm)
    with torch.inference_mode():
        probs = torch.cat(
            [
                torch.softmax(
                    model((torch.from_numpy(x_test[i : i + 128]).permute(0, 3, 1, 2).float() / 255 - mean) / std), 1
                )
                for i in range(0, len(x_test), 128)
            ]
        )
    metrics = classification_metrics(y_test.numpy(), probs.double().numpy(), classes, n_boot=1000, ci=0.95, seed=0)
    print(json.dumps({"macro_auc": metrics["macro"]["auc"], **metrics["overall"]}, indent=1))
    print(
        f"bare loop: {len(x_train)} training images x {args.epochs} epochs in {seconds:.0f} s "
        f"({speed['images_per_second']:.1f} images/s)"
    )
    if args.out:
        args.out.write_text(json.dumps({"metrics": metrics, "seconds": seconds, "speed": speed}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
