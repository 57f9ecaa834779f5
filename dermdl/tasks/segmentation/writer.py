"""Segmentation predictions written: masks at the original resolution, overlays, probability images and a
per-image CSV with Dice/IoU.

Why its own module: it needs no torch, so ``dermdl predict`` with an exported ONNX file writes exactly
what the PyTorch path writes (:mod:`dermdl.export`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dermdl.arrays import image_of
from dermdl.images import as_rgb, open_mask, write_png
from dermdl.io import atomic_file, atomic_write_text
from dermdl.model_config import ModelConfig
from dermdl.prepare import resize
from dermdl.records import Record
from dermdl.tasks.segmentation.boundary import image_boundary
from dermdl.tasks.segmentation.calibration import FILE as CALIBRATION_FILE
from dermdl.tasks.segmentation.calibration import PixelCalibration, image_stats
from dermdl.tasks.segmentation.data import config_value_map, prepared_classes, prepared_path, resize_probs, to_original
from dermdl.tasks.segmentation.layout import MASKS
from dermdl.tasks.segmentation.metrics import confusion_counts, per_image, probability_histograms

PROBABILITIES = "probabilities"


@dataclass(frozen=True)
class SegPrediction:
    """Class probabilities (k, s, s) in model space, and the size of the image that was opened."""

    probs: np.ndarray
    width: int
    height: int
    full: np.ndarray | None = None  # (k, height, width) at the original resolution: tiled prediction


def _unique_stem(source: str, used: set[str]) -> str:
    stem, n = Path(source).stem, 2
    name = stem
    while name.casefold() in used:  # X.png and x.png are one file on macOS and Windows
        name, n = f"{stem}_{n}", n + 1
    used.add(name.casefold())
    return name


def write_predictions(
    records: Sequence[Record], preds: Sequence[SegPrediction], config: ModelConfig, out_dir: Path, name: str
) -> Path:
    """``<name>/masks/<stem>.png`` at the ORIGINAL resolution in the stored value convention,
    ``<name>/overlays/<stem>.png`` (image | truth | prediction at the prepared size),
    ``<name>/probabilities/<stem>.png`` (8-bit probability of "not class 0" at the prepared size, for
    analyze's heatmap gallery) and ``<name>.csv``: one row per image, with per-image Dice/IoU, boundary
    distances (hd95_<class>, asd_<class>, empty where undefined) and pixel counts when the truth is known;
    with the truth also ``histograms.npy`` (ROC/AUC) and ``calibration.npz`` (pixel calibration)."""
    from dermdl.tasks.segmentation.plots import panels  # lazy: matplotlib is slow to import

    vmap = config_value_map(config)
    classes, k = config.classes, len(config.classes)
    folder, rows, hists, calibration = out_dir / name, [], [], []
    used: set[str] = set()
    for record, pred in zip(records, preds):
        width, height = int(record.get("width") or pred.width), int(record.get("height") or pred.height)
        if pred.full is not None and pred.full.shape[1:] == (height, width):
            probs = pred.full.astype(np.float32)  # predicted by tiles at this resolution
        else:
            probs = to_original(pred.probs, width, height, config.preprocess_size, config.resize)
        labels = probs.argmax(axis=0).astype(np.uint8)
        stem = _unique_stem(record["source"], used)
        write_png(folder / MASKS / f"{stem}.png", vmap.to_stored(labels))
        image = np.asarray(resize(as_rgb(image_of(record)), config.preprocess_size, config.resize))
        small_probs = resize_probs(pred.probs, config.preprocess_size)
        small = small_probs.argmax(axis=0)
        truth_small = prepared_classes(vmap, record) if "mask_full" in record else None
        write_png(folder / "overlays" / f"{stem}.png", panels(image, small, truth_small))
        foreground = np.clip(1.0 - small_probs[0].astype(np.float32), 0.0, 1.0)
        write_png(folder / PROBABILITIES / f"{stem}.png", np.round(255 * foreground).astype(np.uint8))
        row: dict[str, Any] = {
            "image": record["source"],
            "mask": f"{name}/{MASKS}/{stem}.png",
            "overlay": f"{name}/overlays/{stem}.png",
            "probability": f"{name}/{PROBABILITIES}/{stem}.png",
            "width": width,
            "height": height,
        }
        counts = np.bincount(labels.ravel(), minlength=k)
        row |= {f"area_{cls}": counts[c] / labels.size for c, cls in enumerate(classes)}
        if "mask_full" in record:
            truth = vmap.to_classes(open_mask(prepared_path(record, "mask_full")), record["mask_source"])
            cm = confusion_counts(truth, labels, k)
            hists.append(probability_histograms(truth, probs))
            calibration.append(image_stats(truth, probs))
            images = per_image(cm[None])
            hd95, asd = image_boundary(truth, labels, k)
            row |= {f"dice_{cls}": images["dice"][0, c] for c, cls in enumerate(classes)}
            row |= {f"iou_{cls}": images["iou"][0, c] for c, cls in enumerate(classes)}
            row |= {f"hd95_{cls}": hd95[c] for c, cls in enumerate(classes) if c > 0}
            row |= {f"asd_{cls}": asd[c] for c, cls in enumerate(classes) if c > 0}
            row |= {f"cm_{i}_{j}": int(cm[i, j]) for i in range(k) for j in range(k)}
        rows.append(row)
    if hists:
        with atomic_file(folder / "histograms.npy") as tmp:
            np.save(tmp, np.stack(hists))
        PixelCalibration.stack(calibration).save(folder / CALIBRATION_FILE)
    frame = pd.DataFrame(rows, columns=None if rows else ["image", "mask", "overlay", "width", "height"])
    return atomic_write_text(out_dir / f"{name}.csv", frame.to_csv(index=False, float_format="%.6f"))
