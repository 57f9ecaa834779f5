"""Are the explanation heatmaps faithful? The deletion test (Petsiuk et al. 2018) for each method.

    python bench/explanations.py --model /tmp/ham/clinical/model --root /tmp/ham/import/classification \
        --predictions /tmp/ham/clinical/predictions/sl_test.csv --n 100 --json /tmp/ham/explanations.json

For n test images (seeded draw), each method's map ranks the image's 8 x 8 blocks; the blocks are greyed out
(set to the normalised mean, as occlusion does) in that order, 4 at a time, and the predicted class's
probability is recorded after each step. The area under that curve (0..1) is lower when the map put the
blocks the model needs first. A random block order is the baseline a map must beat; seconds per image are
measured on the same images, one method after the other (run alone: 2 cores).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dermdl.images import open_rgb
from dermdl.models import load_model
from dermdl.options import EXPLAIN_METHODS
from dermdl.tasks.classification.explain import heatmaps, model_view

BLOCKS = 8  # blocks per side
STEP = 4  # blocks greyed out per step


def deletion_curve(model: torch.nn.Module, x: torch.Tensor, target: int, block_score: np.ndarray) -> np.ndarray:
    order = np.argsort(-block_score.ravel(), kind="stable")
    side = x.shape[-1] // BLOCKS
    masks = []
    for k in range(0, BLOCKS * BLOCKS + 1, STEP):
        keep = np.ones(BLOCKS * BLOCKS, np.float32)
        keep[order[:k]] = 0
        masks.append(torch.from_numpy(np.kron(keep.reshape(BLOCKS, BLOCKS), np.ones((side, side), np.float32))))
    with torch.no_grad():
        return torch.softmax(model(x * torch.stack(masks)[:, None]), dim=1)[:, target].numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--root", required=True, help="data.root: the predictions' paths are relative to it")
    parser.add_argument("--predictions", required=True)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json")
    args = parser.parse_args()
    model, config = load_model(args.model)
    model.eval()
    frame = pd.read_csv(args.predictions, keep_default_na=False)
    rows = np.random.default_rng(args.seed).choice(len(frame), min(args.n, len(frame)), replace=False)
    rng = np.random.default_rng(args.seed)
    areas: dict[str, list[float]] = {name: [] for name in ("random", *EXPLAIN_METHODS)}
    seconds = {name: 0.0 for name in EXPLAIN_METHODS}
    for row in rows:
        x, _ = model_view(open_rgb(Path(args.root) / frame["path"][row]), config)
        x = x[None]
        with torch.no_grad():
            target = int(model(x).argmax())
        scores = {"random": rng.random((BLOCKS, BLOCKS))}
        for method in EXPLAIN_METHODS:
            start = time.perf_counter()
            heat = heatmaps(model, x, [target], method)[0]
            seconds[method] += time.perf_counter() - start
            side = heat.shape[0] // BLOCKS
            scores[method] = (
                heat[: side * BLOCKS, : side * BLOCKS].reshape(BLOCKS, side, BLOCKS, side).mean(axis=(1, 3))
            )
            scores[method] += 1e-9 * rng.random((BLOCKS, BLOCKS))  # blocks of equal score: random order among them
        for name, score in scores.items():
            curve = deletion_curve(model, x, target, score)
            areas[name].append(float(np.trapezoid(curve, dx=1 / (len(curve) - 1))))
    boot = np.random.default_rng(0).integers(0, len(rows), (1000, len(rows)))
    result = {"images": len(rows), "input_size": config.input_size, "methods": {}}
    for name, values in areas.items():
        v = np.asarray(values)
        diff = v - np.asarray(areas["random"])
        result["methods"][name] = {
            "deletion_auc": round(float(v.mean()), 4),
            "minus_random": round(float(diff.mean()), 4),
            "minus_random_ci": [round(float(q), 4) for q in np.percentile(diff[boot].mean(axis=1), [2.5, 97.5])],
            "seconds_per_image": round(seconds.get(name, 0.0) / len(rows), 3),
        }
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
