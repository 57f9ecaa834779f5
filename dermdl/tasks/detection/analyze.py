"""Detection analysis of one test set: COCO metrics with CIs, PR curves (plot data + PNG), the gallery.

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
from dermdl.tasks.detection.plots import plot_coco_gallery, plot_pr_curves


def analyze(predictions_dir: Path, name: str, config: ModelConfig, all_params: Any, plots_dir: Path) -> dict:
    """COCO metrics with bootstrap CIs, PR curves (DVC plot data + PNG) and the overlay gallery."""
    params = all_params.analyze
    paths = {"results": predictions_dir / f"{name}.json", "ground truth": predictions_dir / f"{name}_gt.json"}
    for what, path in paths.items():
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing {what}; run the infer stage first (`dvc repro infer`)")
    gt = json.loads(paths["ground truth"].read_text(encoding="utf-8"))
    results = json.loads(paths["results"].read_text(encoding="utf-8"))
    evaluator = run_cocoeval(gt, results)
    metrics = detection_metrics(gt, results, n_boot=params.n_boot, ci=params.ci, seed=params.seed, evaluator=evaluator)
    if len(gt["categories"]) > 1:  # also: are lesions found at all, whatever diagnosis they get?
        merged = detection_metrics(*class_agnostic(gt, results), n_boot=params.n_boot, ci=params.ci, seed=params.seed)
        metrics["any_lesion"] = {key: merged["overall"][key] for key in ("AP", "AP50")}
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
    return metrics
