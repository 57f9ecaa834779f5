"""Segmentation: ``<root>/<dataset>/images/<name>.<ext>`` + ``masks/<name>.png`` -> a class per pixel.

The plug-in for the shared core (see :class:`dermdl.tasks.Task`); the pieces live in
:mod:`dermdl.layout.masks` (layout checks), :mod:`dermdl.masks` (mask values, geometry, overlays),
:mod:`dermdl.unet` (model, losses), :mod:`dermdl.segmentation_metrics` and
:mod:`dermdl.segmentation_plots`. User documentation: docs/segmentation.md.

Prepared tree (per dataset): ``images/<stem>.png`` and ``masks/<stem>.png`` resized with the same
geometry (masks nearest-neighbour, STORED values kept), and ``masks_full/<stem>.png``, the mask at
its original resolution, so infer/analyze compute metrics at full resolution without the source data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from dermdl import segmentation_metrics as sm
from dermdl.arrays import PIXELS, TARGETS, PreparedImages, image_of, prepared_root
from dermdl.images import as_rgb, open_mask, open_rgb
from dermdl.inference import softmax_tta, to_input_tensor
from dermdl.io import atomic_file, atomic_write_json, atomic_write_text
from dermdl.layout.masks import IMAGES, MASKS, scan_segmentation
from dermdl.masks import ValueMap, panels, resize_probs, to_original, write_png
from dermdl.models import ModelConfig
from dermdl.prepare import PNG_LEVEL, open_source, prepare_image, resize
from dermdl.tasks import Task

FULL_MASKS = "masks_full"
GALLERY_SIZE = 4


def value_map(params: Any) -> ValueMap:
    return ValueMap(params.segmentation.value_map(), len(params.segmentation.codes))


def config_value_map(config: ModelConfig) -> ValueMap:
    return ValueMap([tuple(pair) for pair in config.extra["mask_values"]], len(config.classes))


def config_extra(params: Any) -> dict[str, Any]:
    """Saved in model.json: the value convention, so `dermdl predict` needs no params.yaml."""
    return {"mask_values": value_map(params).to_json()}


def scan(params: Any, datasets: list[str], check_images: bool = True):
    """(items, codes, report); values are checked against mask_values when masks are decoded."""
    mapping = params.segmentation.value_map() if check_images else None
    items, report = scan_segmentation(Path(params.data.root), datasets, mapping, check_images=check_images)
    return items, list(params.segmentation.codes), report


def prepare_item(source: Path, relative: str, target: str, dst_root: Path, size: int, policy: str,
                 color_constancy: str = "none") -> dict[str, Any]:
    """Resize an image and its mask (``target``) with the same geometry; keep the full-size mask."""
    rel = Path(relative)
    dataset, stem = rel.parts[0], rel.stem
    width, height, pixels = prepare_image(source, size, policy, color_constancy)
    values = open_mask(target)
    if values.shape != (height, width):
        raise ValueError(f"{target}: mask is {values.shape[1]} x {values.shape[0]} pixels but its image {source} is "
                         f"{width} x {height}; run `dermdl validate` and fix the mask")
    small = np.asarray(resize(Image.fromarray(values), size, policy, kind="mask"))
    # inside preprocess's atomic folder: no per-file fsync (20,000 of them took most of HAM10000's 27 s)
    write_png(dst_root / dataset / MASKS / f"{stem}.png", small.astype(values.dtype), PNG_LEVEL, atomic=False)
    # where the image lies in the prepared square (pad leaves borders): outside it is class 0 whatever
    # mask_values says, so masks whose background is not stored as 0 work with resize: pad too
    box = resize(Image.new("L", (width, height), 255), size, policy, kind="mask").getbbox()
    write_png(dst_root / dataset / FULL_MASKS / f"{stem}.png", values, PNG_LEVEL, atomic=False)
    return {
        "path": f"{dataset}/{IMAGES}/{rel.name}",  # a name, not a file: the pixels are in the arrays
        "source": relative,
        "target": f"{dataset}/{MASKS}/{stem}.png",
        "mask_full": f"{dataset}/{FULL_MASKS}/{stem}.png",
        "mask_source": f"{rel.parent.parent.as_posix()}/{MASKS}/{Path(target).name}",
        "stratum": None,  # random validation split: a per-image "class" has no meaning here
        "width": width,
        "height": height,
        "content_box": list(box),
        PIXELS: pixels,
    }


def _prepared(record: dict, key: str) -> Path:
    """Absolute path of a prepared file named in a manifest record."""
    return prepared_root(record) / record[key]


def prepared_classes(vmap: ValueMap, record: dict) -> np.ndarray:
    """Class ids of a record's prepared mask; padding outside ``content_box`` is class 0."""
    path = _prepared(record, "target")
    values = open_mask(path)
    x0, y0, x1, y1 = record.get("content_box") or (0, 0, values.shape[1], values.shape[0])
    if (x0, y0, x1, y1) == (0, 0, values.shape[1], values.shape[0]):
        return vmap.to_classes(values, path)
    classes = np.zeros(values.shape, np.uint8)
    classes[y0:y1, x0:x1] = vmap.to_classes(values[y0:y1, x0:x1], path)
    return classes


class MaskTarget:
    """fastai ``get_y``: prepared mask of a record -> uint8 class ids (picklable for workers)."""

    def __init__(self, pairs: list[list[int]], n_classes: int):
        self.pairs, self.n_classes = pairs, n_classes
        self._map: ValueMap | None = None

    def __call__(self, record: dict) -> np.ndarray:
        if self._map is None:
            self._map = ValueMap([tuple(p) for p in self.pairs], self.n_classes)
        return prepared_classes(self._map, record)


def dataloaders(train: Sequence[dict], valid: Sequence[dict], classes: list[str], all_params: Any, norm: Any):
    """(image, class-id mask) batches from the prepared arrays; every geometric change moves both."""
    from dermdl.batches import Masks, array_dataloaders, augmentation

    return array_dataloaders(train, valid, Masks, all_params, norm, augmentation(all_params.train))


def target_array(params: Any) -> MaskTarget:
    """Preprocess stacks each prepared mask's class ids (padding = class 0) into ``targets.npy``."""
    return MaskTarget(value_map(params).to_json(), len(params.segmentation.codes))


def build_model(config: ModelConfig, pretrained: bool | str):
    from dermdl.unet import build_unet  # lazy: fastai is slow to import (preprocess workers skip it)

    return build_unet(config.arch, len(config.classes), config.input_size, pretrained)


def loss_and_metrics(params: Any, classes: list[str], train_records: list[dict]):
    from dermdl.unet import ForegroundDice, SegmentationLoss

    seg = params.segmentation
    weights = list(seg.class_weights) if seg.class_weights is not None else None
    tversky = (seg.tversky_alpha, seg.tversky_beta, seg.tversky_gamma)
    return SegmentationLoss(seg.loss, weights, tversky=tversky), [ForegroundDice()]


@dataclass(frozen=True)
class SegPrediction:
    """Class probabilities (k, s, s) in model space, and the size of the image that was opened."""

    probs: np.ndarray
    width: int
    height: int


@torch.inference_mode()
def predict(model: torch.nn.Module, config: ModelConfig, paths: Sequence[Path], bs: int = 16,
            tta: str = "none") -> list[SegPrediction]:
    """Probabilities for any images, prepared or raw: the training geometry is re-applied."""
    device = next(model.parameters()).device
    model.eval()
    out: list[SegPrediction] = []
    for start in range(0, len(paths), bs):
        images = [open_source(p, config.color_constancy) for p in paths[start:start + bs]]
        batch = torch.stack([to_input_tensor(im, config) for im in images]).to(device)
        probs = softmax_tta(model, batch, tta, spatial=True).cpu().numpy().astype(np.float16)
        out += [SegPrediction(p, *im.size) for p, im in zip(probs, images)]
    return out


def pseudo_label(model: torch.nn.Module, config: ModelConfig, records: Sequence[dict], params: Any,
                 work_dir: Path) -> list[dict]:
    """Self-training: the teacher's class ids of each weakly labelled image, at the prepared size, in
    ``work_dir/targets.npy``; the records point training there (``target_arrays``, ``target_row``)."""
    size = config.preprocess_size
    preds = predict(model, config, PreparedImages(records), params.infer.bs, params.tta)
    work_dir.mkdir(parents=True, exist_ok=True)
    labels = np.lib.format.open_memmap(work_dir / TARGETS, mode="w+", dtype=np.uint8, shape=(len(records), size, size))
    out = []
    for index, (record, pred) in enumerate(zip(records, preds)):
        labels[index] = resize_probs(pred.probs, size).argmax(axis=0)
        out.append({**record, "target_arrays": str(work_dir), "target_row": index})
    labels.flush()
    return out


def _unique_stem(source: str, used: set[str]) -> str:
    stem, n = Path(source).stem, 2
    name = stem
    while name in used:
        name, n = f"{stem}_{n}", n + 1
    used.add(name)
    return name


def write_predictions(records: Sequence[dict], preds: Sequence[SegPrediction], config: ModelConfig,
                      out_dir: Path, name: str) -> Path:
    """``<name>/masks/<stem>.png`` at the ORIGINAL resolution in the stored value convention,
    ``<name>/overlays/<stem>.png`` (image | truth | prediction at the prepared size) and
    ``<name>.csv``: one row per image, with per-image Dice/IoU and pixel counts when the truth is known."""
    vmap = config_value_map(config)
    classes, k = config.classes, len(config.classes)
    folder, rows, hists, used = out_dir / name, [], [], set()
    for record, pred in zip(records, preds):
        width, height = int(record.get("width") or pred.width), int(record.get("height") or pred.height)
        probs = to_original(pred.probs, width, height, config.preprocess_size, config.resize)
        labels = probs.argmax(axis=0).astype(np.uint8)
        stem = _unique_stem(record["source"], used)
        write_png(folder / MASKS / f"{stem}.png", vmap.to_stored(labels))
        image = np.asarray(resize(as_rgb(image_of(record)), config.preprocess_size, config.resize))
        small = resize_probs(pred.probs, config.preprocess_size).argmax(axis=0)
        truth_small = prepared_classes(vmap, record) if "mask_full" in record else None
        write_png(folder / "overlays" / f"{stem}.png", panels(image, small, truth_small))
        row: dict[str, Any] = {"image": record["source"], "mask": f"{name}/{MASKS}/{stem}.png",
                               "overlay": f"{name}/overlays/{stem}.png", "width": width, "height": height}
        counts = np.bincount(labels.ravel(), minlength=k)
        row |= {f"area_{cls}": counts[c] / labels.size for c, cls in enumerate(classes)}
        if "mask_full" in record:
            truth = vmap.to_classes(open_mask(_prepared(record, "mask_full")), record["mask_source"])
            cm = sm.confusion_counts(truth, labels, k)
            hists.append(sm.probability_histograms(truth, probs))
            images = sm.per_image(cm[None])
            row |= {f"dice_{cls}": images["dice"][0, c] for c, cls in enumerate(classes)}
            row |= {f"iou_{cls}": images["iou"][0, c] for c, cls in enumerate(classes)}
            row |= {f"cm_{i}_{j}": int(cm[i, j]) for i in range(k) for j in range(k)}
        rows.append(row)
    if hists:
        with atomic_file(folder / "histograms.npy") as tmp:
            np.save(tmp, np.stack(hists))
    frame = pd.DataFrame(rows, columns=None if rows else ["image", "mask", "overlay", "width", "height"])
    return atomic_write_text(out_dir / f"{name}.csv", frame.to_csv(index=False, float_format="%.6f"))


def _gallery(frame: pd.DataFrame, predictions_dir: Path, score: np.ndarray, order: np.ndarray, path: Path,
             title: str) -> None:
    from dermdl import segmentation_plots as sp

    chosen = order[:GALLERY_SIZE]
    tiles = [np.asarray(open_rgb(predictions_dir / frame["overlay"].iloc[i])) for i in chosen]
    captions = [f"{frame['image'].iloc[i]}: foreground Dice {score[i]:.3f}" for i in chosen]
    sp.plot_gallery(tiles, captions, path, title)


def analyze(predictions_dir: Path, name: str, config: ModelConfig, all_params: Any, plots_dir: Path) -> dict:
    """Metrics with bootstrap CIs, DVC plot data (pixel confusion, pixel ROC) and PNG figures."""
    from dermdl import segmentation_plots as sp

    params = all_params.analyze
    csv = predictions_dir / f"{name}.csv"
    if not csv.is_file():
        raise FileNotFoundError(f"{csv}: missing; run the infer stage first (`dvc repro infer`)")
    frame = pd.read_csv(csv)
    classes, k = config.classes, len(config.classes)
    columns = [f"cm_{i}_{j}" for i in range(k) for j in range(k)]
    if frame.empty or not set(columns) <= set(frame.columns):
        raise ValueError(f"{csv}: no ground-truth pixel counts for classes {classes}; was it written by "
                         "`dermdl infer` with this model?")
    cm = frame[columns].to_numpy(dtype=np.int64).reshape(-1, k, k)
    hist_path = predictions_dir / name / "histograms.npy"
    hist = np.load(hist_path) if hist_path.is_file() else None
    metrics = sm.segmentation_metrics(cm, hist, classes, n_boot=params.n_boot, ci=params.ci, seed=params.seed)
    atomic_write_json(plots_dir / "confusion" / f"{name}.json", sm.confusion_records(metrics["pixel_confusion"]))
    for c, cls in enumerate(classes):
        atomic_write_json(plots_dir / "roc" / f"{name}--{cls}.json", sm.roc_points(hist, c) if hist is not None else [])
    figures = plots_dir / "figures"
    sp.plot_metric_bars(metrics, figures / f"{name}_metrics.png", f"{name}: per-class metrics")
    sp.plot_pixel_confusion(metrics["pixel_confusion"], figures / f"{name}_confusion.png",
                            f"{name}: pixel confusion ({metrics['pixels']:,} pixels)")
    dice = sm.per_image(cm)["dice"][:, 1:]
    defined = ~np.isnan(dice)
    score = np.where(defined.any(axis=1), np.where(defined, dice, 0).sum(axis=1) / np.maximum(defined.sum(axis=1), 1),
                     np.nan)
    ranked = np.flatnonzero(~np.isnan(score))
    ranked = ranked[np.argsort(score[ranked], kind="stable")]
    _gallery(frame, predictions_dir, score, ranked[::-1], figures / f"{name}_gallery_best.png",
             f"{name}: best {min(GALLERY_SIZE, len(ranked))} (image | ground truth | prediction)")
    _gallery(frame, predictions_dir, score, ranked, figures / f"{name}_gallery_worst.png",
             f"{name}: worst {min(GALLERY_SIZE, len(ranked))} (image | ground truth | prediction)")
    return metrics


def _split(model: torch.nn.Module) -> list:
    """(encoder, decoder) parameter groups: the pretrained encoder is the body fastai freezes."""
    from fastai.torch_core import params

    return [params(model[0]), [p for layer in list(model.layers)[1:] for p in params(layer)]]


TASK = Task(
    name="segmentation",
    scan=scan,
    prepare_item=prepare_item,
    dataloaders=dataloaders,
    build_model=build_model,
    loss_and_metrics=loss_and_metrics,
    predict=predict,
    pseudo_label=pseudo_label,
    write_predictions=write_predictions,
    analyze=analyze,
    table=sm.format_table,
    splitter=_split,
    config_extra=config_extra,
    target_array=target_array,
)
