"""How a trained classifier holds up on copies of its test set as another device might have taken them.

    python bench/robustness.py --model /tmp/ham/default/model --data /tmp/ham/import/classification/sl_test \
        --json /tmp/ham/robust-default.json

For the unshifted test set and every shift in :mod:`dermdl.shifts` (colour casts, dark/bright exposure,
blur, low resolution), the source images are shifted into a temporary folder (the data folder is only
read), predicted by the model exactly as ``dermdl predict`` would (its colour constancy included), and
scored: macro one-vs-rest AUC and balanced accuracy with bootstrap 95% CIs, and melanoma-vs-nevus AUC
(melanoma and nevus images only, score P(mel) / (P(mel) + P(nv))), the number that drops on external sets.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.metrics import roc_auc_score


def mel_vs_nv(y: np.ndarray, probs: np.ndarray, classes: list[str], n_boot: int = 1000) -> dict:
    mel, nv = classes.index("mel"), classes.index("nv")
    keep = (y == mel) | (y == nv)
    truth, score = (y[keep] == mel).astype(int), probs[keep, mel] / (probs[keep, mel] + probs[keep, nv] + 1e-12)
    rng = np.random.default_rng(0)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(truth), len(truth))
        if truth[idx].min() != truth[idx].max():
            boots.append(roc_auc_score(truth[idx], score[idx]))
    return {
        "value": float(roc_auc_score(truth, score)),
        "lo": float(np.percentile(boots, 2.5)),
        "hi": float(np.percentile(boots, 97.5)),
        "n": int(keep.sum()),
    }


def main() -> int:
    from dermdl.images import open_rgb
    from dermdl.models import load_model
    from dermdl.shifts import SHIFTS
    from dermdl.tasks import get_task
    from dermdl.tasks.classification.metrics import classification_metrics

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="a classification test set: <data>/<class>/<image>")
    parser.add_argument("--tta", default="none")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    model, config = load_model(args.model)
    task = get_task(config.task)
    files = sorted(p for p in args.data.rglob("*") if p.is_file())
    y = np.array([config.classes.index(p.parent.name) for p in files])
    originals = [np.asarray(open_rgb(p)) for p in files]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (shift, severity) in {"none": (None, 0.0), **SHIFTS}.items():
            paths = []
            for index, pixels in enumerate(originals):
                path = Path(tmp) / f"{index:05d}.png"
                Image.fromarray(pixels if shift is None else shift(pixels, severity)).save(path, compress_level=1)
                paths.append(path)
            probs = task.predict(model, config, paths, 64, args.tta).astype(np.float64)
            metrics = classification_metrics(y, probs, config.classes, n_boot=1000, ci=0.95, seed=0)
            results[name] = {
                "macro_auc": metrics["macro"]["auc"],
                "balanced_accuracy": metrics["overall"]["balanced_accuracy"],
                "mel_vs_nv_auc": mel_vs_nv(y, probs, config.classes),
            }
            row = results[name]
            print(
                f"{name:15} macro AUC {row['macro_auc']['value']:.3f} ({row['macro_auc']['lo']:.3f}-"
                f"{row['macro_auc']['hi']:.3f})  balanced acc {row['balanced_accuracy']['value']:.3f} "
                f"({row['balanced_accuracy']['lo']:.3f}-{row['balanced_accuracy']['hi']:.3f})  mel-vs-nv AUC "
                f"{row['mel_vs_nv_auc']['value']:.3f} ({row['mel_vs_nv_auc']['lo']:.3f}-"
                f"{row['mel_vs_nv_auc']['hi']:.3f})",
                flush=True,
            )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "model": str(args.model),
                    "data": str(args.data),
                    "n": len(files),
                    "tta": args.tta,
                    "results": results,
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
