"""A fourth task that lives outside dermdl, to prove the plug-in interface: "spot" — does the image show a
bright spot? Its own layout (``<root>/<dataset>/labels.csv`` + ``<root>/<dataset>/<file>``), its own
network, loss, predictions and metrics; it only reuses the shared core (prepare, batches, inference
helpers, bootstrap). Registered with :func:`dermdl.tasks.register_task`; nothing in dermdl names it.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn

from dermdl.arrays import PIXELS
from dermdl.bootstrap import bootstrap_indices, format_value, with_ci
from dermdl.inference import to_input_tensor
from dermdl.io import atomic_write_text
from dermdl.layout.items import Item
from dermdl.layout.report import Report
from dermdl.layout.schema import LayoutSchema
from dermdl.prepare import open_source, prepare_image
from dermdl.tasks import Capabilities, TaskPlugin

NAME = "spot"
CLASSES = ["clear", "spot"]
LAYOUT = LayoutSchema(image="{dataset}/{name}")
LABELS = "labels.csv"


def write_dataset(root: Path, dataset: str, n_per_class: int, seed: int, size: int = 32) -> None:
    """Noisy dark images; the "spot" ones carry a bright square somewhere."""
    rng = np.random.default_rng(seed)
    folder = root / dataset
    folder.mkdir(parents=True)
    rows = []
    for label in CLASSES:
        for i in range(n_per_class):
            pixels = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
            if label == "spot":
                y, x = rng.integers(2, size - 12, size=2)
                pixels[y : y + 10, x : x + 10] = 255
            name = f"{label}_{i:03d}.png"
            Image.fromarray(pixels).save(root / LAYOUT.image_path(dataset, name))
            rows.append(f"{name},{label}")
    (folder / LABELS).write_text("file,label\n" + "\n".join(rows) + "\n")


def scan(params: Any, datasets: list[str], check_images: bool = True):
    root, report, items = Path(params.data.root), Report(), []
    for dataset in datasets:
        table = root / dataset / LABELS
        if not table.is_file():
            report.add(table, "label table missing", "write labels.csv with the columns file,label")
            continue
        with table.open(newline="") as handle:
            for row in csv.DictReader(handle):
                path = root / LAYOUT.image_path(dataset, row["file"])
                if row["label"] not in CLASSES:
                    report.add(table, f"unknown label {row['label']!r}", f"use one of {CLASSES}")
                elif not path.is_file():
                    report.add(path, "listed in labels.csv but missing", "add the image or remove its row")
                else:
                    items.append(Item(path=path, target=row["label"], dataset=dataset))
    return items, list(CLASSES), report


def prepare_item(
    source: Path, relative: str, target: str, dst_root: Path, size: int, policy: str, color_constancy: str = "none"
) -> dict[str, Any]:
    width, height, pixels = prepare_image(source, size, policy, color_constancy)
    return {
        "path": relative,
        "source": relative,
        "target": target,
        "stratum": target,
        "width": width,
        "height": height,
        PIXELS: pixels,
    }


def dataloaders(train: Sequence[dict], valid: Sequence[dict], classes: list[str], params: Any, norm: Any):
    from dermdl.batches import Labels, array_dataloaders

    return array_dataloaders(train, valid, Labels, params, norm, None, classes=classes)


def build_model(config: Any, pretrained: bool | str):
    model = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten()),
        nn.Linear(8, len(config.classes)),
    )
    return model, ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])


def loss_and_metrics(params: Any, classes: list[str], train_records: list[dict]):
    from fastai.losses import CrossEntropyLossFlat
    from fastai.metrics import accuracy

    return CrossEntropyLossFlat(), [accuracy]


@torch.inference_mode()
def predict(model: nn.Module, config: Any, paths: Sequence[Any], bs: int = 64, tta: str = "none") -> np.ndarray:
    model.eval()
    out = []
    for start in range(0, len(paths), bs):
        batch = torch.stack(
            [to_input_tensor(open_source(p, config.color_constancy), config) for p in paths[start : start + bs]]
        )
        out.append(model(batch).softmax(1).numpy())
    return np.concatenate(out) if out else np.zeros((0, len(config.classes)), dtype=np.float32)


def pseudo_label(model: nn.Module, config: Any, records: Sequence[dict], params: Any, work_dir: Path) -> list[dict]:
    from dermdl.arrays import PreparedImages

    labels = [config.classes[i] for i in predict(model, config, PreparedImages(records)).argmax(1)]
    return [{**r, "target": label, "stratum": label} for r, label in zip(records, labels)]


def write_predictions(records: Sequence[dict], probs: np.ndarray, config: Any, out_dir: Path, name: str) -> Path:
    frame = pd.DataFrame(
        {
            "path": [r["source"] for r in records],
            "true_label": [r.get("target") or "" for r in records],
            "predicted_label": [config.classes[i] for i in probs.argmax(1)],
        }
    )
    return atomic_write_text(out_dir / f"{name}.csv", frame.to_csv(index=False))


def analyze(predictions_dir: Path, name: str, config: Any, params: Any, plots_dir: Path) -> dict:
    frame = pd.read_csv(predictions_dir / f"{name}.csv", keep_default_na=False)
    correct = (frame["true_label"] == frame["predicted_label"]).to_numpy(dtype=np.float64)
    boot = correct[bootstrap_indices(len(correct), params.analyze.n_boot, params.analyze.seed)].mean(axis=1)
    return {"n": len(correct), "overall": {"accuracy": with_ci(float(correct.mean()), boot, params.analyze.ci)}}


def table(metrics: dict, title: str) -> str:
    return f"{title}\naccuracy: {format_value(metrics['overall']['accuracy'])}"


TASK = TaskPlugin(
    name=NAME,
    layout=LAYOUT,
    stratify_by_target=True,
    capabilities=Capabilities(
        unsupported={"tta": "a toy", "mixup": "a toy", "oversample": "a toy", "progressive_resizing": "a toy"}
    ),
    scan=scan,
    prepare_item=prepare_item,
    dataloaders=dataloaders,
    build_model=build_model,
    loss_and_metrics=loss_and_metrics,
    predict=predict,
    pseudo_label=pseudo_label,
    write_predictions=write_predictions,
    analyze=analyze,
    table=table,
)
