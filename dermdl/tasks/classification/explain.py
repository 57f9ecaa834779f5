"""Explanation heatmaps for classification: where in the image the evidence for the predicted class lies.

Two methods (``analyze.explain_method``, ``dermdl predict --explain-method``), both from captum:

- ``occlusion`` (default): grey out a window (1/8 of the input side, stride half a window) at every position
  and record how much the predicted class's probability drops (Zeiler & Fergus 2014). Faithful by
  construction — the map is what the model does without that region — at the price of ~225 forward passes
  per image (about 2 s on a CPU at 128 px).
- ``hirescam``: HiResCAM (Draelos & Carin, 2020), gradient x activation of the backbone's last feature map,
  summed over channels; one backward pass. For a pooling + linear head it equals CAM exactly, but dermdl's
  fastai head (average + max pooling, a hidden layer) is not linear, and with a 4 x 4 final map at 128 px
  the map is coarse: on the HAM10000 default model, deleting image blocks in HiResCAM's order lowers the
  class probability no faster than a random order, occlusion's order does (``bench/explanations.py``,
  docs/results.md). Grad-CAM (channel-averaged gradients) scored worse still and is not offered.

Maps are clipped at zero (evidence for the class), brought to the model's input size and scaled to [0, 1]
per image. Users: ``dermdl predict --explain`` (:func:`explain`, the task's hook) and analyze's gallery
(:func:`explanations`: the most confident errors, the least confident correct cases, one row per class).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from dermdl.models import ModelConfig

METHODS = {
    "occlusion": "occlusion (drop of the predicted class's probability when a window is greyed out; captum)",
    "hirescam": "HiResCAM (gradient x activation of the backbone's last feature map, summed over channels; captum)",
}
ERRORS, UNSURE = "most confident errors", "least confident correct"
BATCH = 16  # images per backward pass: a CPU gallery of ~40 tiles in a few passes


def feature_layer(model: torch.nn.Module) -> torch.nn.Module:
    """The backbone of dermdl's ``nn.Sequential(body, head)`` classifier: its output is the last (finest
    class-relevant) feature map, the one the head pools."""
    if not isinstance(model, torch.nn.Sequential) or len(model) < 2:
        raise ValueError("explanations need a classifier built as nn.Sequential(backbone, head) (dermdl's classifiers)")
    return model[0]


def heatmaps(
    model: torch.nn.Module,
    batch: torch.Tensor,
    targets: Sequence[int],
    method: str = "occlusion",
    layer: torch.nn.Module | None = None,
) -> np.ndarray:
    """(n, H, W) float32 maps in [0, 1] for ``targets`` (class index per image) at the input's H x W."""
    if method not in METHODS:
        raise ValueError(f"unknown explanation method {method!r}; choose one of {', '.join(METHODS)}")
    model.eval()
    with torch.inference_mode(False), torch.enable_grad():
        if method == "occlusion":
            maps = _occlusion(model, batch, targets)
        else:
            maps = _hirescam(model, batch, targets, feature_layer(model) if layer is None else layer)
    maps = maps.clamp(min=0)
    peak = maps.flatten(1).amax(dim=1).view(-1, 1, 1)
    maps = torch.where(peak > 0, maps / peak.clamp(min=1e-12), torch.zeros_like(maps))
    return maps.clamp(0, 1).cpu().numpy().astype(np.float32)


def _occlusion(model: torch.nn.Module, batch: torch.Tensor, targets: Sequence[int]) -> torch.Tensor:
    """Probability drop per pixel, averaged over the windows that cover it; baseline 0 = the normalised mean."""
    from captum.attr import Occlusion  # lazy: captum imports slowly

    side = max(2, min(batch.shape[-2:]) // 8)
    stride = max(1, side // 2)
    probabilities = torch.nn.Sequential(model, torch.nn.Softmax(dim=1))
    attribution = Occlusion(probabilities).attribute(
        batch.clone(),
        target=[int(t) for t in targets],
        sliding_window_shapes=(batch.shape[1], side, side),
        strides=(batch.shape[1], stride, stride),
        baselines=0.0,
        perturbations_per_eval=64,
    )
    return attribution.detach().float().sum(dim=1) / batch.shape[1]


def _hirescam(
    model: torch.nn.Module, batch: torch.Tensor, targets: Sequence[int], layer: torch.nn.Module
) -> torch.Tensor:
    from captum.attr import LayerAttribution, LayerGradientXActivation  # lazy: captum imports slowly

    attribution = LayerGradientXActivation(model, layer).attribute(batch.clone(), target=[int(t) for t in targets])
    if not isinstance(attribution, torch.Tensor) or attribution.dim() != 4:
        shape = tuple(attribution.shape) if isinstance(attribution, torch.Tensor) else type(attribution).__name__
        raise ValueError(
            f"the backbone's output has shape {shape}, not a (n, channels, h, w) feature map: HiResCAM needs a "
            "convolutional backbone (classification.model); use analyze.explain_method: occlusion"
        )
    cam = attribution.detach().float().sum(dim=1, keepdim=True).clamp(min=0)
    return LayerAttribution.interpolate(cam, tuple(batch.shape[-2:]), interpolate_mode="bilinear")[:, 0]


def model_view(image: Image.Image, config: ModelConfig) -> tuple[torch.Tensor, np.ndarray]:
    """The model's input tensor (predict's geometry, no TTA) and the same pixels as uint8 RGB for display."""
    from dermdl.inference import to_input_tensor

    tensor = to_input_tensor(image, config)
    mean, std = torch.tensor(config.mean).view(3, 1, 1), torch.tensor(config.std).view(3, 1, 1)
    pixels = ((tensor * std + mean).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    return tensor, pixels


def explained_views(
    model: torch.nn.Module, config: ModelConfig, images: Sequence[Any], targets: Sequence[int], method: str
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(display pixels, heatmap) per image (a file path or prepared pixels) for its target class."""
    from dermdl.prepare import open_source

    device = next(model.parameters()).device
    out = []
    for start in range(0, len(images), BATCH):
        views = [
            model_view(open_source(item, config.color_constancy), config) for item in images[start : start + BATCH]
        ]
        batch = torch.stack([tensor for tensor, _ in views]).to(device)
        maps = heatmaps(model, batch, targets[start : start + BATCH], method)
        out += [(pixels, heat) for (_, pixels), heat in zip(views, maps)]
    return out


def unique_names(paths: Sequence[Path]) -> list[str]:
    """``<stem>.png`` per image; a repeated stem (a/x.jpg, b/x.jpg, x.png) gets ``-2``, ``-3``... in input order."""
    seen: dict[str, int] = {}
    names = []
    for path in paths:
        stem = Path(path).stem
        seen[stem.lower()] = seen.get(stem.lower(), 0) + 1
        names.append(f"{stem}.png" if seen[stem.lower()] == 1 else f"{stem}-{seen[stem.lower()]}.png")
    taken = {n.lower() for n in names}
    if len(taken) < len(names):  # "x-2.png" was also a real stem: number every file instead
        names = [f"{i:05d}_{Path(p).stem}.png" for i, p in enumerate(paths)]
    return names


def explain(
    model: torch.nn.Module,
    config: ModelConfig,
    paths: Sequence[Path],
    predictions: np.ndarray,
    out_dir: Path,
    method: str = "occlusion",
) -> list[Path]:
    """The task's hook for ``dermdl predict --explain``: one PNG per image (image | heatmap overlay) for its
    predicted class, named after the image, in ``out_dir``."""
    from dermdl.io import atomic_file
    from dermdl.tasks.classification.explain_plots import overlay

    if config.extra.get("tabular"):
        raise ValueError("--explain: heatmaps explain image-only models; this model also reads metadata")

    targets = [int(i) for i in np.asarray(predictions).argmax(axis=1)]
    written = []
    for name, (pixels, heat) in zip(unique_names(paths), explained_views(model, config, paths, targets, method)):
        gap = np.full((pixels.shape[0], 2, 3), 255, dtype=np.uint8)
        panel = np.concatenate([pixels, gap, overlay(pixels, heat)], axis=1)
        with atomic_file(out_dir / name) as tmp:
            Image.fromarray(panel).save(tmp, format="PNG")
        written.append(out_dir / name)
    return written


def select_cases(
    y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str], per_row: int
) -> list[tuple[str, list[int]]]:
    """Gallery rows as (label, case indices): the most confident errors, the least confident correct cases,
    then per class its most confident correct cases. Confidence = the predicted class's probability; ties
    keep the predictions file's order."""
    predicted = probs.argmax(axis=1)
    confidence = probs[np.arange(len(probs)), predicted]
    right = predicted == y_true

    def ranked(mask: np.ndarray, most_confident: bool) -> list[int]:
        index = np.flatnonzero(mask)
        order = np.argsort(-confidence[index] if most_confident else confidence[index], kind="stable")
        return [int(i) for i in index[order][:per_row]]

    rows = [(ERRORS, ranked(~right, True)), (UNSURE, ranked(right, False))]
    return rows + [
        (f"{cls}: most confident correct", ranked(right & (y_true == c), True)) for c, cls in enumerate(classes)
    ]


def _prepared(all_params: Any, name: str, paths: Sequence[str]) -> list[Any]:
    """The prepared records (pixels infer predicted from) of the given predictions-file paths."""
    from dermdl.manifest import load_manifest

    records = {r["source"]: r for r in load_manifest(all_params)["datasets"].get(name, [])}
    missing = [p for p in paths if p not in records]
    if missing:
        raise ValueError(
            f"{all_params.out / 'prepared'}: test set {name} has no prepared image {missing[0]!r} that its predictions "
            "name; re-run `dvc repro` (or set analyze.explain: 0)"
        )
    return [records[p] for p in paths]


def explanations(
    name: str,
    paths: Sequence[str],
    y_true: np.ndarray,
    probs: np.ndarray,
    classes: Sequence[str],
    predictions_dir: Path,
    all_params: Any,
    figures: Path,
) -> dict[str, Any] | None:
    """analyze's explanation gallery of one test set (``plots/figures/<name>_explanations.png``) and its
    metrics entry; None when ``analyze.explain`` is 0, the model also reads metadata (heatmaps explain the
    image alone), or the predictions are not the analyze stage's (a cross-validation fold's or a
    self-training round's model is not saved)."""
    per_row = all_params.analyze.explain
    out = all_params.out
    if (
        per_row == 0
        or all_params.classification.metadata
        or Path(predictions_dir).resolve() != (out / "predictions").resolve()
    ):
        return None
    from dermdl.arrays import PreparedImages
    from dermdl.models import load_model
    from dermdl.tasks.classification.explain_plots import plot_explanations

    rows = select_cases(y_true, probs, classes, per_row)
    chosen = sorted({i for _, cases in rows for i in cases})
    cases = [
        {
            "path": paths[i],
            "true": classes[int(y_true[i])],
            "predicted": classes[int(probs[i].argmax())],
            "probability": round(float(probs[i].max()), 6),
            "row": label,
        }
        for label, indices in rows
        for i in indices
    ]
    if chosen:
        model, config = load_model(out / "model")
        images = PreparedImages(_prepared(all_params, name, [paths[i] for i in chosen]))
        method = all_params.analyze.explain_method
        views = explained_views(model, config, images, [int(probs[i].argmax()) for i in chosen], method)
        tiles = dict(zip(chosen, views))
        grid = [
            (label, [(tiles[i], cases_caption(classes, y_true, probs, i)) for i in indices]) for label, indices in rows
        ]
        plot_explanations(
            grid, figures / f"{name}_explanations.png", f"{name}: {METHODS[method].split(' (')[0]}, predicted class"
        )
    return {"method": METHODS[all_params.analyze.explain_method], "cases": cases}


def cases_caption(classes: Sequence[str], y_true: np.ndarray, probs: np.ndarray, index: int) -> str:
    predicted = int(probs[index].argmax())
    return f"true {classes[int(y_true[index])]}\npred {classes[predicted]} ({probs[index, predicted]:.2f})"
