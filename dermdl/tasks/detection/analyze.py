"""Detection analysis of one test set: COCO metrics with CIs, PR curves (plot data + PNG), the galleries.

Reads only what infer wrote (``<name>.json`` results and ``<name>_gt.json`` ground truth, both in
ORIGINAL image pixels), so it can be re-run without the model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dermdl.io import atomic_write_json
from dermdl.models import ModelConfig
from dermdl.tasks.detection.metrics import class_agnostic, detection_metrics, pr_points, run_cocoeval
from dermdl.tasks.detection.plots import plot_coco_gallery, plot_pr_curves, plot_worst_ap_gallery
from dermdl.tasks.detection.weighted import per_image_ap50


def image_sources(gt: dict, all_params: Any) -> list[str]:
    """Each ``gt["images"]`` entry as groups and metadata tables name it: relative to data.root (infer
    keeps the absolute path); outside data.root, the path itself (matched absolutely or by file name)."""
    root = Path(all_params.data.root).resolve()
    sources = []
    for image in gt["images"]:
        path = Path(image.get("path") or image["file_name"])
        try:
            sources.append(path.resolve().relative_to(root).as_posix() if path.is_absolute() else path.as_posix())
        except ValueError:
            sources.append(path.as_posix())
    return sources


def image_groups(gt: dict, all_params: Any) -> list[str] | None:
    """Lesion/patient id of each ``gt["images"]`` entry (analyze.resample: auto|group), None for image
    resampling."""
    resample = all_params.analyze.resample
    if resample == "image":
        return None
    from dermdl.leaks.groups import groups_of

    groups = groups_of(all_params, image_sources(gt, all_params))
    if groups is None and resample == "group":
        raise ValueError("analyze.resample: group needs lesion/patient ids (data.groups or <data.root>/groups.csv)")
    return groups


def _subgroups(gt: dict, results: list[dict], boot: dict, all_params: Any, name: str, plots_dir: Path) -> dict | None:
    """AP and AP50 (with CIs) on the images of each metadata subgroup; None without analyze.subgroups."""
    from dermdl.evaluation.metadata import read_metadata
    from dermdl.evaluation.subgroups import subgroup_section

    params = all_params.analyze
    if not params.subgroups:
        return None
    metadata = read_metadata(all_params, image_sources(gt, all_params), params.subgroups)
    groups = boot["groups"]

    def metrics_of(index: Any) -> dict[str, dict[str, float | None]]:
        images = [gt["images"][i] for i in index]
        ids = {image["id"] for image in images}
        subset = {**gt, "images": images, "annotations": [a for a in gt["annotations"] if a["image_id"] in ids]}
        found = [r for r in results if r["image_id"] in ids]
        chosen = None if groups is None else [groups[i] for i in index]
        overall = detection_metrics(subset, found, **{**boot, "groups": chosen})["overall"]
        return {"AP": overall["AP"], "AP50": overall["AP50"]}

    return subgroup_section(metadata, params.bands, metrics_of, name, plots_dir)


def per_image_table(gt: dict, evaluator: Any, score_threshold: float) -> list[dict[str, Any]]:
    """Every image's AP50 (see :func:`per_image_ap50`), worst first; undefined ones (null) last."""
    images = {img["id"]: img for img in gt["images"]}
    objects = {i: 0 for i in images}
    for ann in gt["annotations"]:
        objects[ann["image_id"]] += 0 if ann.get("iscrowd") else 1
    rows = [
        {"id": i, "image": images[i]["file_name"], "ap": None if ap is None else round(ap, 6), "objects": objects[i]}
        for i, ap in zip(evaluator.params.imgIds, per_image_ap50(evaluator, score_threshold))
    ]
    return sorted(rows, key=lambda r: (r["ap"] is None, r["ap"] or 0.0, r["image"]))


def analyze(predictions_dir: Path, name: str, config: ModelConfig, all_params: Any, plots_dir: Path) -> dict:
    """COCO metrics with bootstrap CIs (over lesion/patient groups when known), PR curves (DVC plot data
    + PNG), the overlay gallery, the per-image AP50 table and the gallery of the worst images by it."""
    params = all_params.analyze
    paths = {"results": predictions_dir / f"{name}.json", "ground truth": predictions_dir / f"{name}_gt.json"}
    for what, path in paths.items():
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing {what}; run the infer stage first (`dvc repro infer`)")
    gt = json.loads(paths["ground truth"].read_text(encoding="utf-8"))
    results = json.loads(paths["results"].read_text(encoding="utf-8"))
    evaluator = run_cocoeval(gt, results)
    boot = {"n_boot": params.n_boot, "ci": params.ci, "seed": params.seed, "groups": image_groups(gt, all_params)}
    metrics = detection_metrics(gt, results, evaluator=evaluator, **boot)
    if len(gt["categories"]) > 1:  # also: are lesions found at all, whatever diagnosis they get?
        merged = detection_metrics(*class_agnostic(gt, results), **boot)
        metrics["any_lesion"] = {key: merged["overall"][key] for key in ("AP", "AP50")}
    metrics["subgroups"] = _subgroups(gt, results, boot, all_params, name, plots_dir)
    names = {c["id"]: c["name"] for c in gt["categories"]}
    curves = {}
    for k, cat in enumerate(evaluator.params.catIds):
        curves[names[cat]] = pr_points(evaluator, k)
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in names[cat])
        atomic_write_json(plots_dir / "pr" / f"{name}--{safe}.json", curves[names[cat]])
    figures = plots_dir / "figures"
    plot_pr_curves(curves, figures / f"{name}_pr.png", f"{name}: precision-recall at IoU 0.5")
    threshold = all_params.detection.score_threshold
    plot_coco_gallery(
        gt,
        results,
        threshold,
        figures / f"{name}_gallery.png",
        f"{name}: ground truth (green) vs prediction (score >= {threshold:g}), mistakes first",
    )
    table = per_image_table(gt, evaluator, threshold)
    atomic_write_json(plots_dir / "per_image_ap" / f"{name}.json", [{k: r[k] for k in r if k != "id"} for r in table])
    worst = [(r["id"], r["ap"]) for r in table if r["ap"] is not None][: params.explain]
    if worst:
        plot_worst_ap_gallery(
            gt,
            results,
            threshold,
            worst,
            figures / f"{name}_gallery_worst_ap.png",
            f"{name}: the {len(worst)} images with the lowest AP50 (score >= {threshold:g} drawn)",
        )
    return metrics
