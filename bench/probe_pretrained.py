"""Linear probe of the packaged EfficientNet-Lite0 weights on prepared HAM10000 images.

Why: the packaged weights come from TensorFlow; if the architecture variant (timm ``efficientnet_lite0``
with PyTorch padding vs ``tf_efficientnet_lite0`` with TF "same" padding) or the input normalisation
does not match them, every fine-tune starts from degraded features. A frozen-feature logistic
regression compares the choices in minutes on CPU.

    python bench/probe_pretrained.py /tmp/ham/bench/classification/prepared --train 1500 --test 1000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from dermdl.models import PACKAGED_WEIGHTS, _read_weights, load_backbone_state

NORMS = {"0.5/0.5 (TF)": ([0.5] * 3, [0.5] * 3), "ImageNet mean/std": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])}


def features(arch: str, pretrained: bool, norm, images: np.ndarray, size: int) -> np.ndarray:
    import timm

    model = timm.create_model(arch, pretrained=False, num_classes=0).eval()
    if pretrained:
        path = PACKAGED_WEIGHTS["efficientnet_lite0"]()
        load_backbone_state(model, _read_weights(path), str(path))
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in norm)
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), 64):
            x = torch.from_numpy(np.ascontiguousarray(images[start : start + 64])).permute(0, 3, 1, 2).float() / 255
            if x.shape[-1] != size:
                x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
            out.append(model((x - mean) / std).numpy())
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("prepared", type=Path)
    parser.add_argument("--train", type=int, default=1500)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    manifest = json.loads((args.prepared / "manifest.json").read_text())
    rng = np.random.default_rng(0)
    sets = {}
    for name, n in (("sl_train", args.train), ("sl_test", args.test)):
        records = manifest["datasets"][name]
        pick = np.sort(rng.choice(len(records), min(n, len(records)), replace=False))
        images = np.load(args.prepared / name / "arrays" / "images.npy", mmap_mode="r")
        sets[name] = (images[[records[i]["row"] for i in pick]], [records[i]["target"] for i in pick])
    classes = sorted(set(sets["sl_train"][1]))
    for arch, pretrained, norm_name in [
        ("efficientnet_lite0", False, "0.5/0.5 (TF)"),
        ("efficientnet_lite0", True, "0.5/0.5 (TF)"),
        ("efficientnet_lite0", True, "ImageNet mean/std"),
        ("tf_efficientnet_lite0", True, "0.5/0.5 (TF)"),
        ("tf_efficientnet_lite0", True, "ImageNet mean/std"),
    ]:
        start = time.perf_counter()
        x_train = features(arch, pretrained, NORMS[norm_name], sets["sl_train"][0], args.size)
        x_test = features(arch, pretrained, NORMS[norm_name], sets["sl_test"][0], args.size)
        probe = LogisticRegression(max_iter=2000, class_weight="balanced", C=0.5).fit(x_train, sets["sl_train"][1])
        probs = probe.predict_proba(x_test)
        y_test = sets["sl_test"][1]
        present = [c for c in classes if c in set(y_test)]
        auc = np.mean([roc_auc_score([y == c for y in y_test], probs[:, classes.index(c)]) for c in present])
        print(
            f"{arch:22s} pretrained={str(pretrained):5s} norm={norm_name:18s} "
            f"balanced acc {balanced_accuracy_score(y_test, probe.predict(x_test)):.3f}  macro AUC {auc:.3f}  "
            f"({time.perf_counter() - start:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
