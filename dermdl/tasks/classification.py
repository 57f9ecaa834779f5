"""Classification: ``<root>/<dataset>/<class>/<image>`` -> one label per image."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from dermdl import evaluate, plots
from dermdl.arrays import PIXELS, PreparedImages
from dermdl.inference import softmax_tta, to_input_tensor
from dermdl.io import atomic_write_json, atomic_write_text
from dermdl.layout.folders import scan_classification
from dermdl.models import ModelConfig, build_classifier
from dermdl.prepare import open_source, prepare_image
from dermdl.recipe import class_weights, classification_loss
from dermdl.tasks import Task


def prepare_item(source: Path, relative: str, target: str, dst_root: Path, size: int, policy: str,
                 color_constancy: str = "none") -> dict[str, Any]:
    """Resize one image; the record is what later stages read (``pixels`` go into the dataset's array)."""
    width, height, pixels = prepare_image(source, size, policy, color_constancy)
    return {"path": relative, "source": relative, "target": target, "stratum": target, "width": width,
            "height": height, PIXELS: pixels}


def scan(params: Any, datasets: list[str], check_images: bool = True):
    return scan_classification(Path(params.data.root), datasets, check_images=check_images)


def build_model(config: ModelConfig, pretrained: bool | str):
    return build_classifier(config.arch, len(config.classes), pretrained, config.extra.get("head_dropout", 0.5))


def config_extra(params: Any) -> dict[str, Any]:
    """Saved in model.json: the head's dropout (training only, but part of how the model was built)."""
    return {"head_dropout": params.train.head_dropout}


def dataloaders(train: Sequence[dict], valid: Sequence[dict], classes: list[str], all_params: Any, norm: Any):
    """Batches from the prepared arrays; flips/rotation/zoom/lighting on whole batches (dermdl.augment)."""
    from dermdl.batches import Labels, array_dataloaders, augmentation

    return array_dataloaders(train, valid, Labels, all_params, norm, augmentation(all_params.train), classes=classes)


def loss_and_metrics(params: Any, classes: list[str], train_records: list[dict]):
    """The loss named by ``train.loss`` (optionally class-weighted) and the validation metrics."""
    from fastai.vision.all import BalancedAccuracy, F1Score, accuracy

    weight = class_weights([r["target"] for r in train_records], classes, params.train.class_weights)
    return classification_loss(params.train, weight), [accuracy, BalancedAccuracy(), F1Score(average="macro")]


@torch.inference_mode()
def predict(model: torch.nn.Module, config: ModelConfig, paths: Sequence[Path], bs: int = 64,
            tta: str = "none") -> np.ndarray:
    """Class probabilities (n, k) for image files or prepared arrays: the training geometry is re-applied."""
    device = next(model.parameters()).device
    model.eval()
    out = []
    for start in range(0, len(paths), bs):
        images = [open_source(p, config.color_constancy) for p in paths[start : start + bs]]
        batch = torch.stack([to_input_tensor(image, config) for image in images]).to(device)
        out.append(softmax_tta(model, batch, tta, spatial=False).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(config.classes)), dtype=np.float32)


def pseudo_label(model: torch.nn.Module, config: ModelConfig, records: Sequence[dict], params: Any,
                 work_dir: Path) -> list[dict]:
    """Self-training: each weakly labelled image gets the teacher's most probable class (hard label)."""
    probs = predict(model, config, PreparedImages(records), params.infer.bs, params.tta)
    labels = [config.classes[i] for i in probs.argmax(axis=1)] if len(probs) else []
    return [{**r, "target": label, "stratum": label} for r, label in zip(records, labels)]


def write_predictions(records: Sequence[dict], probs: np.ndarray, config: ModelConfig, out_dir: Path, name: str) -> Path:
    """CSV: path, true label (empty for new images), predicted label, one probability column per class."""
    frame = pd.DataFrame(
        {
            "path": [r["source"] for r in records],
            "true_label": [r.get("target") or "" for r in records],
            "predicted_label": [config.classes[i] for i in probs.argmax(axis=1)] if len(probs) else [],
        }
    )
    for index, cls in enumerate(config.classes):
        frame[f"prob_{cls}"] = probs[:, index] if len(probs) else []
    return atomic_write_text(out_dir / f"{name}.csv", frame.to_csv(index=False, float_format="%.6f"))


def analyze(predictions_dir: Path, name: str, config: ModelConfig, all_params: Any, plots_dir: Path) -> dict:
    """Metrics with bootstrap CIs, DVC plot data and PNG figures for one test set."""
    params = all_params.analyze
    predictions = predictions_dir / f"{name}.csv"
    if not predictions.is_file():
        raise FileNotFoundError(f"{predictions}: missing; run the infer stage first (`dvc repro infer`)")
    frame = pd.read_csv(predictions, keep_default_na=False)
    classes = config.classes
    unknown = sorted(set(frame["true_label"]) - set(classes))
    if unknown:
        raise ValueError(f"{predictions}: true labels {unknown} are not among the model's classes {classes}")
    y_true = frame["true_label"].map(classes.index).to_numpy()
    probs = frame[[f"prob_{c}" for c in classes]].to_numpy(dtype=np.float64)
    metrics = evaluate.classification_metrics(y_true, probs, classes, n_boot=params.n_boot, ci=params.ci, seed=params.seed)
    y_pred = probs.argmax(axis=1)
    atomic_write_json(plots_dir / "confusion" / f"{name}.json", plots.confusion_records(y_true, y_pred, classes))
    for index, cls in enumerate(classes):
        atomic_write_json(plots_dir / "roc" / f"{name}--{cls}.json", plots.roc_points(y_true, probs, index))
    figures = plots_dir / "figures"
    plots.plot_metric_bars(metrics, figures / f"{name}_metrics.png", title=f"{name}: per-class metrics, 95% CI")
    plots.plot_confusion_matrix(y_true, y_pred, classes, figures / f"{name}_confusion.png", title=f"{name}: confusion")
    plots.plot_roc_curves(y_true, probs, classes, figures / f"{name}_roc.png", title=f"{name}: one-vs-rest ROC")
    return metrics


TASK = Task(
    name="classification",
    scan=scan,
    prepare_item=prepare_item,
    dataloaders=dataloaders,
    build_model=build_model,
    loss_and_metrics=loss_and_metrics,
    predict=predict,
    pseudo_label=pseudo_label,
    write_predictions=write_predictions,
    analyze=analyze,
    table=evaluate.format_table,
    config_extra=config_extra,
)
