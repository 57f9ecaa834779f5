"""Detection: ``<root>/annotations/<dataset>.json`` (COCO) + ``<root>/images/<dataset>/`` -> boxes.

Plugs torchvision detectors into the shared fastai core with three small pieces: the
:class:`~dermdl.detection_models.Detector` wrapper (loss dict in training, losses + detections in
validation), a loss that sums torchvision's loss components, and :class:`DetectionCallback`, which
feeds targets to the model and turns on fastai's ``train_metrics`` so every loss component is logged
(DVCLive + TensorBoard) for training and validation. Everything else is the classification path.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import fastai.callback.progress  # noqa: F401  (patches the progress table into Learner, as fastai.vision.all does)
import fastai.callback.schedule  # noqa: F401  (patches Learner.fit_one_cycle, used by dermdl.train)
import numpy as np
import torch
from fastai.callback.core import Callback
from fastai.learner import Metric

from dermdl import detection_data, detection_metrics, detection_plots
from dermdl.detection_models import LOSS_KEYS, build_detector, detection_loss, family, splitter
from dermdl.arrays import PreparedImages
from dermdl.images import ImageError, open_rgb
from dermdl.io import atomic_write_json
from dermdl.layout.coco import scan_coco
from dermdl.models import ModelConfig
from dermdl.params import DetectionParams
from dermdl.prepare import geometry, open_source, resize
from dermdl.tasks import Task

GALLERY_SIZE = 8


def settings(config: ModelConfig) -> DetectionParams:
    """The ``detection`` params section the model was trained with (saved in model.json)."""
    return DetectionParams(**config.extra.get("detection", {}))


def config_extra(params: Any) -> dict:
    return {"detection": params.detection.model_dump(mode="json")}


def scan(params: Any, datasets: list[str], check_images: bool = True):
    return scan_coco(Path(params.data.root), datasets, check_images=check_images,
                     clip_boxes=params.detection.clip_boxes)


def build_model(config: ModelConfig, pretrained: bool | str):
    return build_detector(settings(config).model, len(config.classes), pretrained, config.input_size)


def dataloaders(train: Sequence[dict], valid: Sequence[dict], classes: list[str], all_params: Any, norm: Any):
    return detection_data.dataloaders(list(train), list(valid), classes, all_params)


class LossComponent(Metric):
    """Mean of one torchvision loss term per epoch (training batches and validation batches)."""

    def __init__(self, key: str):
        self.key = key
        self.reset()

    def reset(self) -> None:
        self.total, self.count = 0.0, 0

    def accumulate(self, learn) -> None:
        losses = learn.pred["losses"] if "losses" in learn.pred else learn.pred
        if self.key in losses:
            n = len(learn.yb[0])
            self.total += float(losses[self.key].detach()) * n
            self.count += n

    @property
    def value(self) -> float | None:
        return self.total / self.count if self.count else None

    @property
    def name(self) -> str:
        return self.key if self.key.startswith("loss_") else f"loss_{self.key}"


class ValidAP50(Metric):
    """COCO AP50 on the validation split after each epoch (None for the training phase)."""

    name = "AP50"

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.images: list[tuple[dict, dict]] = []

    def accumulate(self, learn) -> None:
        if learn.training or "detections" not in learn.pred:
            return
        for det, target in zip(learn.pred["detections"], learn.yb[0]):
            self.images.append(({k: v.detach().cpu().numpy() for k, v in det.items()},
                                {k: v.detach().cpu().numpy() for k, v in target.items()}))

    @property
    def value(self) -> float | None:
        if not self.images:
            return None
        gt, results = _as_coco(self.images)
        if not gt["annotations"]:
            return None
        return max(0.0, float(detection_metrics.run_cocoeval(gt, results).stats[1]))


def _as_coco(images: list[tuple[dict, dict]]) -> tuple[dict, list[dict]]:
    gt = {"images": [], "annotations": [], "categories": []}
    results, labels = [], set()
    for index, (det, target) in enumerate(images, start=1):
        gt["images"].append({"id": index, "width": 1, "height": 1})
        for box, label in zip(target["boxes"], target["labels"]):
            x0, y0, x1, y1 = (float(v) for v in box)
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": index, "category_id": int(label),
                                      "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0)})
            labels.add(int(label))
        for box, label, score in zip(det["boxes"], det["labels"], det["scores"]):
            x0, y0, x1, y1 = (float(v) for v in box)
            results.append({"image_id": index, "category_id": int(label), "bbox": [x0, y0, x1 - x0, y1 - y0],
                            "score": float(score)})
            labels.add(int(label))
    gt["categories"] = [{"id": k, "name": str(k)} for k in sorted(labels)]
    return gt, results


class DetectionCallback(Callback):
    """Feed ``(images, targets)`` to the model, log every loss component, store the category ids."""

    order = -5  # before the Recorder (order 50) names its columns in before_fit

    def before_fit(self) -> None:
        self.learn.recorder.train_metrics = True
        ids = getattr(self.dls, "category_ids", None)
        if ids:
            self.learn.model.category_ids.copy_(torch.as_tensor(ids, dtype=torch.int64))

    def before_batch(self) -> None:
        self.learn.xb = (self.xb[0], self.yb[0])


def loss_and_metrics(params: Any, classes: list[str], train_records: list[dict]):
    keys = LOSS_KEYS[family(params.detection.model)]
    return detection_loss, [LossComponent(key) for key in keys] + [ValidAP50()]


def callbacks(params: Any) -> list:
    return [DetectionCallback()]


@torch.inference_mode()
def predict(model: torch.nn.Module, config: ModelConfig, paths: Sequence[Path], bs: int = 16,
            tta: str = "none") -> dict[str, Any]:
    """Detections for any images, prepared or raw, in the pixel coordinates of each given file.

    Returns ``{"images": [{"boxes" (n, 4) xyxy, "scores", "labels" (0-based class index), "width",
    "height"}], "category_ids": [...]}``.
    """
    if tta != "none":
        raise ValueError(f"tta={tta!r}: test-time augmentation is not available for detection models; use none")
    device = next(model.parameters()).device
    model.eval()
    size, policy = config.preprocess_size, config.resize
    out = []
    for start in range(0, len(paths), bs):
        batch, geos = [], []
        for path in paths[start:start + bs]:
            image = open_source(path, config.color_constancy)
            geos.append(geometry(image.width, image.height, size, policy))
            batch.append(detection_data.to_tensor(resize(image, size, policy)).to(device))
        for det, geo in zip(model(batch), geos):
            boxes = detection_data.box_to_original(det["boxes"].float().cpu().numpy(), geo)
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            out.append({"boxes": boxes[keep], "scores": det["scores"].float().cpu().numpy()[keep],
                        "labels": det["labels"].cpu().numpy()[keep] - 1, "width": geo.src_w, "height": geo.src_h})
    return {"images": out, "category_ids": [int(v) for v in model.category_ids.cpu()]}


def pseudo_label(model: torch.nn.Module, config: ModelConfig, records: Sequence[dict], params: Any,
                 work_dir: Path) -> list[dict]:
    """Self-training: the teacher's boxes scoring >= ``detection.score_threshold`` become the targets
    (prepared images are passed, so the boxes are already in prepared coordinates)."""
    threshold = params.detection.score_threshold
    preds = predict(model, config, PreparedImages(records), params.infer.bs)
    out = []
    for record, det in zip(records, preds["images"]):
        keep = det["scores"] >= threshold
        objects = [{"bbox": [round(float(v), 3) for v in box], "category": config.classes[int(label)], "iscrowd": 0,
                    "segmentation": []} for box, label in zip(det["boxes"][keep], det["labels"][keep])]
        out.append({**record, "target": objects})
    return out


def _overlay_name(file_name: str, used: set[str]) -> str:
    stem = Path(file_name).with_suffix("").as_posix().replace("/", "__")
    name, k = f"{stem}.png", 1
    while name in used:
        name, k = f"{stem}_{k}.png", k + 1
    used.add(name)
    return name


def write_predictions(records: Sequence[dict], predictions: dict, config: ModelConfig, out_dir: Path,
                      name: str) -> Path:
    """``<name>.json``: COCO results (ORIGINAL image pixels, every detection the model keeps, score
    >= 0.05, so AP sees the full ranking); ``<name>_gt.json`` (test sets) or ``<name>_images.json``
    (new images): the COCO image list; ``overlays/<name>/``: boxes with score >= score_threshold."""
    threshold = settings(config).score_threshold
    ids = predictions["category_ids"]
    categories = [{"id": i, "name": n} for i, n in zip(ids, config.classes)]
    results, images, annotations, used = [], [], [], set()
    missing = 0
    for index, (record, det) in enumerate(zip(records, predictions["images"]), start=1):
        geo = detection_data.record_geometry(record)
        boxes = det["boxes"] if geo is None else detection_data.box_to_original(det["boxes"], geo)
        source = record.get("source_abspath") or record["source"]
        image = dict(record.get("image") or {"id": index, "file_name": Path(record["source"]).name,
                                             "width": det["width"], "height": det["height"]})
        image["path"] = str(source)  # extra key (ignored by COCO tools): lets analyze draw the gallery
        images.append(image)
        for ann in record.get("annotations", []):
            annotations.append({k: v for k, v in ann.items() if k != "category"} | {"image_id": image["id"]})
        for box, score, label in zip(boxes, det["scores"], det["labels"]):
            x0, y0, x1, y1 = (float(v) for v in box)
            results.append({"image_id": image["id"], "category_id": ids[int(label)], "file_name": image["file_name"],
                            "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                            "score": round(float(score), 5)})
        keep = det["scores"] >= threshold
        try:
            picture = open_rgb(source)
        except ImageError:
            missing += 1
            continue
        labels = [int(v) for v in det["labels"][keep]]
        overlay = detection_plots.draw_boxes(picture, boxes[keep], [config.classes[k] for k in labels],
                                             list(det["scores"][keep]), [detection_plots.colour(k) for k in labels])
        detection_plots.save_png(overlay, out_dir / "overlays" / name / _overlay_name(image["file_name"], used))
    if missing:
        warnings.warn(f"{name}: {missing} original image(s) not found; their overlays were skipped", stacklevel=2)
    if any("annotations" in r for r in records):
        atomic_write_json(out_dir / f"{name}_gt.json",
                          {"images": images, "annotations": annotations, "categories": categories})
    else:
        atomic_write_json(out_dir / f"{name}_images.json", {"images": images, "categories": categories})
    return atomic_write_json(out_dir / f"{name}.json", results)


def _gallery_cases(gt: dict, results: list[dict], threshold: float) -> list[dict]:
    """Images with the most mistakes at IoU 0.5 (missed objects + wrong boxes above threshold) first."""
    from torchvision.ops import box_iou

    names = {c["id"]: c["name"] for c in gt["categories"]}
    order = {c["id"]: k for k, c in enumerate(gt["categories"])}

    def xyxy(items: list[dict]) -> np.ndarray:
        return np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                         for a in items], dtype=np.float64).reshape(-1, 4)

    by_image: dict[int, tuple[list, list]] = {img["id"]: ([], []) for img in gt["images"]}
    for ann in gt["annotations"]:
        by_image[ann["image_id"]][0].append(ann)
    for res in results:
        if res["score"] >= threshold and res["image_id"] in by_image:
            by_image[res["image_id"]][1].append(res)
    cases = []
    for img in gt["images"]:
        truth, preds = by_image[img["id"]]
        g, p = xyxy(truth), xyxy(preds)
        matched = 0
        if len(g) and len(p):
            iou = box_iou(torch.from_numpy(p), torch.from_numpy(g)).numpy()
            same = np.array([[pr["category_id"] == t["category_id"] for t in truth] for pr in preds])
            matched = min(int(((iou >= 0.5) & same).any(axis=1).sum()), int(((iou >= 0.5) & same).any(axis=0).sum()))
        errors = (len(g) - matched) + (len(p) - matched)
        cases.append({"img": img, "errors": errors, "gt": g, "pred": p,
                      "gt_labels": [names[t["category_id"]] for t in truth],
                      "pred_labels": [names[r["category_id"]] for r in preds],
                      "pred_scores": [r["score"] for r in preds],
                      "pred_colours": [detection_plots.colour(order[r["category_id"]]) for r in preds]})
    cases.sort(key=lambda c: (-c["errors"], c["img"]["file_name"]))
    return cases


def _plot_gallery(gt: dict, results: list[dict], threshold: float, path: Path, title: str) -> None:
    from PIL import Image

    shown = []
    for case in _gallery_cases(gt, results, threshold):
        if len(shown) == GALLERY_SIZE:
            break
        try:
            picture = open_rgb(case["img"].get("path", ""))
        except ImageError:
            continue
        scale = min(1.0, 384 / max(picture.size))
        if scale < 1.0:
            picture = picture.resize((round(picture.width * scale), round(picture.height * scale)),
                                     Image.Resampling.BILINEAR)
        shown.append(case | {"image": np.asarray(picture), "gt": case["gt"] * scale, "pred": case["pred"] * scale,
                             "name": case["img"]["file_name"],
                             "note": "correct" if not case["errors"] else f"{case['errors']} mistake(s)"})
    detection_plots.plot_gallery(shown, path, title)


def analyze(predictions_dir: Path, name: str, config: ModelConfig, all_params: Any, plots_dir: Path) -> dict:
    """COCO metrics with bootstrap CIs, PR curves (DVC plot data + PNG) and the overlay gallery."""
    params = all_params.analyze
    paths = {"results": predictions_dir / f"{name}.json", "ground truth": predictions_dir / f"{name}_gt.json"}
    for what, path in paths.items():
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing {what}; run the infer stage first (`dvc repro infer`)")
    gt = json.loads(paths["ground truth"].read_text(encoding="utf-8"))
    results = json.loads(paths["results"].read_text(encoding="utf-8"))
    evaluator = detection_metrics.run_cocoeval(gt, results)
    metrics = detection_metrics.detection_metrics(gt, results, n_boot=params.n_boot, ci=params.ci, seed=params.seed,
                                                  evaluator=evaluator)
    if len(gt["categories"]) > 1:  # also: are lesions found at all, whatever diagnosis they get?
        merged = detection_metrics.detection_metrics(*detection_metrics.class_agnostic(gt, results),
                                                     n_boot=params.n_boot, ci=params.ci, seed=params.seed)
        metrics["any_lesion"] = {key: merged["overall"][key] for key in ("AP", "AP50")}
    names = {c["id"]: c["name"] for c in gt["categories"]}
    curves = {}
    for k, cat in enumerate(evaluator.params.catIds):
        curves[names[cat]] = detection_metrics.pr_points(evaluator, k)
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in names[cat])
        atomic_write_json(plots_dir / "pr" / f"{name}--{safe}.json", curves[names[cat]])
    figures = plots_dir / "figures"
    detection_plots.plot_pr_curves(curves, figures / f"{name}_pr.png", f"{name}: precision-recall at IoU 0.5")
    threshold = all_params.detection.score_threshold
    _plot_gallery(gt, results, threshold, figures / f"{name}_gallery.png",
                  f"{name}: ground truth (green) vs prediction (score >= {threshold:g}), mistakes first")
    return metrics


TASK = Task(
    name="detection",
    scan=scan,
    prepare_item=detection_data.prepare_item,
    dataloaders=dataloaders,
    build_model=build_model,
    loss_and_metrics=loss_and_metrics,
    predict=predict,
    pseudo_label=pseudo_label,
    write_predictions=write_predictions,
    analyze=analyze,
    table=detection_metrics.format_table,
    splitter=splitter,
    callbacks=callbacks,
    config_extra=config_extra,
)
