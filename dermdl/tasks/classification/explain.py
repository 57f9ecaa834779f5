"""Class-activation heatmaps for classification: where in the image the evidence for a class lies.

Method: HiResCAM (Draelos & Carin, 2020), computed with captum's ``LayerGradientXActivation`` on the
backbone's last feature map and summed over channels. Grad-CAM averages each channel's gradient over the
whole map before weighting, so it can light up regions that did not raise the score; HiResCAM multiplies
gradient and activation at every location, and for a pooling + linear head it equals the class score's
own spatial decomposition (CAM). dermdl's fastai head (average + max pooling, a hidden layer) is not linear,
so no CAM method is exact there; HiResCAM is the one whose map follows the score's local sensitivity.
The map is for the predicted class (the one a reader is asked to trust), upsampled bilinearly to the
model's input, clipped at zero (evidence for the class) and scaled to [0, 1] per image.

Two users: ``dermdl predict --explain`` (:func:`explain`, the task's hook) and analyze's gallery
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

METHOD = "HiResCAM (gradient x activation of the backbone's last feature map, summed over channels; captum)"
ERRORS, UNSURE = "most confident errors", "least confident correct"
BATCH = 16  # images per backward pass: a CPU gallery of ~40 tiles in a few passes


def feature_layer(model: torch.nn.Module) -> torch.nn.Module:
    """The backbone of dermdl's ``nn.Sequential(body, head)`` classifier: its output is the last (finest
    class-relevant) feature map, the one the head pools."""
    if not isinstance(model, torch.nn.Sequential) or len(model) < 2:
        raise ValueError("explanations need a classifier built as nn.Sequential(backbone, head) (dermdl's classifiers)")
    return model[0]


def heatmaps(
    model: torch.nn.Module, batch: torch.Tensor, targets: Sequence[int], layer: torch.nn.Module | None = None
) -> np.ndarray:
    """(n, H, W) float32 maps in [0, 1] for ``targets`` (class index per image) at the input's H x W."""
    from captum.attr import LayerAttribution, LayerGradientXActivation  # lazy: captum imports slowly

    layer = feature_layer(model) if layer is None else layer
    model.eval()
    with torch.inference_mode(False), torch.enable_grad():
        attribution = LayerGradientXActivation(model, layer).attribute(batch.clone(), target=[int(t) for t in targets])
    if not isinstance(attribution, torch.Tensor) or attribution.dim() != 4:
        shape = tuple(attribution.shape) if isinstance(attribution, torch.Tensor) else type(attribution).__name__
        raise ValueError(
            f"the backbone's output has shape {shape}, not a (n, channels, h, w) feature map: class-activation "
            "heatmaps need a convolutional backbone (classification.model); for this one set analyze.explain: 0 "
            "and leave out --explain"
        )
    cam = attribution.detach().float().sum(dim=1, keepdim=True).clamp(min=0)
    cam = LayerAttribution.interpolate(cam, tuple(batch.shape[-2:]), interpolate_mode="bilinear")[:, 0]
    peak = cam.flatten(1).amax(dim=1).view(-1, 1, 1)
    cam = torch.where(peak > 0, cam / peak.clamp(min=1e-12), torch.zeros_like(cam))
    return cam.clamp(0, 1).cpu().numpy().astype(np.float32)


def model_view(image: Image.Image, config: ModelConfig) -> tuple[torch.Tensor, np.ndarray]:
    """The model's input tensor (predict's geometry, no TTA) and the same pixels as uint8 RGB for display."""
    from dermdl.inference import to_input_tensor

    tensor = to_input_tensor(image, config)
    mean, std = torch.tensor(config.mean).view(3, 1, 1), torch.tensor(config.std).view(3, 1, 1)
    pixels = ((tensor * std + mean).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    return tensor, pixels


def explained_views(
    model: torch.nn.Module, config: ModelConfig, images: Sequence[Any], targets: Sequence[int]
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
        maps = heatmaps(model, batch, targets[start : start + BATCH])
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
    model: torch.nn.Module, config: ModelConfig, paths: Sequence[Path], predictions: np.ndarray, out_dir: Path
) -> list[Path]:
    """The task's hook for ``dermdl predict --explain``: one PNG per image (image | heatmap overlay) for its
    predicted class, named after the image, in ``out_dir``."""
    from dermdl.io import atomic_file
    from dermdl.tasks.classification.explain_plots import overlay

    targets = [int(i) for i in np.asarray(predictions).argmax(axis=1)]
    written = []
    for name, (pixels, heat) in zip(unique_names(paths), explained_views(model, config, paths, targets)):
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
    from dermdl.pipeline import load_manifest

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
    metrics entry; None when ``analyze.explain`` is 0 or the predictions are not the analyze stage's (a
    cross-validation fold's or a self-training round's model is not saved)."""
    per_row = all_params.analyze.explain
    out = all_params.out
    if per_row == 0 or Path(predictions_dir).resolve() != (out / "predictions").resolve():
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
        views = explained_views(model, config, images, [int(probs[i].argmax()) for i in chosen])
        tiles = dict(zip(chosen, views))
        grid = [
            (label, [(tiles[i], cases_caption(classes, y_true, probs, i)) for i in indices]) for label, indices in rows
        ]
        plot_explanations(
            grid, figures / f"{name}_explanations.png", f"{name}: {METHOD.split(' (')[0]}, predicted class"
        )
    return {"method": METHOD, "cases": cases}


def cases_caption(classes: Sequence[str], y_true: np.ndarray, probs: np.ndarray, index: int) -> str:
    predicted = int(probs[index].argmax())
    return f"true {classes[int(y_true[index])]}\npred {classes[predicted]} ({probs[index, predicted]:.2f})"
