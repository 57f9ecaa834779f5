"""k-fold cross-validation of the whole training recipe on ``sl_train`` (``train.cv_folds``).

Folds are label-stratified and grouped (a lesion/patient never sits in two folds). Each fold's
model predicts its held-out fold; the report has per-fold metrics, their mean and std, and the
pooled out-of-fold metrics with bootstrap CIs (every sl_train image predicted exactly once, by a
model that never saw it). Test sets are untouched: the final model is trained afterwards as usual.

Output: ``<out>/model/cv/{report.json, metrics.json, summary.md, fold_<i>/...}``.

Under torchrun the folds run one after another, each data-parallel over every rank; rank 0 alone
decides which folds a killed run had finished (it alone wrote them), predicts the held-out fold and
writes; the other ranks only train, so no rank waits on a collective the others never join.
"""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path
from typing import Any

from dermdl import distributed
from dermdl.arrays import PreparedImages
from dermdl.bootstrap import format_value
from dermdl.io import atomic_dir, atomic_write_json, atomic_write_text
from dermdl.params import Params
from dermdl.records import Record
from dermdl.tasks import Task
from dermdl.weak_labels import overall_values


def summary_table(per_fold: list[dict[str, float]], pooled: dict) -> str:
    metrics = list(per_fold[0])
    lines = [
        "| metric | " + " | ".join(f"fold {i}" for i in range(len(per_fold))) + " | mean ± std | pooled (95% CI) |",
        "| --- |" + " --- |" * (len(per_fold) + 2),
    ]
    for name in metrics:
        values = [fold.get(name) for fold in per_fold]
        known = [v for v in values if v is not None]
        spread = (
            f"{statistics.mean(known):.3f} ± {statistics.stdev(known) if len(known) > 1 else 0.0:.3f}" if known else "—"
        )
        p = (pooled.get("overall") or {}).get(name)
        pooled_text = format_value(p, 3)
        cells = " | ".join("—" if v is None else f"{v:.3f}" for v in values)
        lines.append(f"| {name} | {cells} | {spread} | {pooled_text} |")
    return "\n".join(lines) + "\n"


def _fold(
    task: Task,
    params: Params,
    train: list[Record],
    valid: list[Record],
    classes: list[str],
    work: Path,
    weak: list[Record] | None,
    context: str = "",
) -> tuple[Any, Any]:
    """One fold's model: trained (resuming a killed fold from its checkpoint), or the one a killed
    run had already finished (its weights are kept in ``work`` until the whole CV is done). Ranks other
    than 0 train with the others but keep nothing: they get (None, None)."""
    from dermdl.checkpoint import fingerprint
    from dermdl.models import load_model, save_model
    from dermdl.train import fit

    key = fingerprint(params.to_dict(), train, valid)
    done = work / "done.json"
    finished = (
        distributed.is_main() and done.is_file() and json.loads(done.read_text(encoding="utf-8")).get("key") == key
    )
    if distributed.from_main(finished):  # rank 0 wrote done.json: its reading is every rank's
        if not distributed.is_main():
            return None, None
        print(f"train: {work.name} was trained before the interruption; reusing its model")
        return load_model(work / "model")
    result = fit(task, params, train, valid, classes, work, weak_records=weak, context=context)
    if not distributed.is_main():
        return None, None
    save_model(result.model, result.config, work / "model")
    atomic_write_json(done, {"key": key})
    return result.model, result.config


def cross_validate(
    task: Task,
    params: Params,
    records: list[Record],
    classes: list[str],
    cv_dir: Path,
    work_dir: Path,
    weak: list[Record] | None = None,
) -> dict[str, Any]:
    """Train one model per fold, score it on its held-out fold, pool the out-of-fold predictions.

    Folds train in ``work_dir`` (kept by DVC across runs): a killed run resumes mid-fold and reuses
    finished folds; the report is published to ``cv_dir`` atomically and ``work_dir`` removed.
    """
    from dermdl.splits import folds

    k = params.train.cv_folds
    splits = folds(records, k, params.train.seed)
    if not distributed.is_main():  # train each fold with rank 0; it alone predicts, scores and writes
        for index, (train, valid) in enumerate(splits):
            _fold(task, params, train, valid, classes, work_dir / f"fold_{index}", weak, f"fold {index + 1}/{k}")
        return {}
    held_out, predictions, per_fold_full, config = [], [], [], None
    with atomic_dir(cv_dir) as tmp:
        for index, (train, valid) in enumerate(splits):
            fold_dir, work = tmp / f"fold_{index}", work_dir / f"fold_{index}"
            print(f"train: cross-validation fold {index + 1}/{k}: {len(train)} training, {len(valid)} held-out images")
            model, config = _fold(task, params, train, valid, classes, work, weak, f"fold {index + 1}/{k}")
            shutil.copytree(work, fold_dir, ignore=shutil.ignore_patterns("checkpoint", "model", "done.json"))
            preds = task.predict(model, config, PreparedImages(valid), params.infer.bs, params.training_tta)
            task.write_predictions(valid, preds, config, fold_dir / "predictions", "held_out")
            per_fold_full.append(task.analyze(fold_dir / "predictions", "held_out", config, params, fold_dir / "plots"))
            held_out += valid
            predictions.append(preds)
        task.write_predictions(held_out, task.concat_predictions(predictions), config, tmp / "pooled", "out_of_fold")
        pooled = task.analyze(tmp / "pooled", "out_of_fold", config, params, tmp / "pooled" / "plots")
        per_fold = [overall_values(m) for m in per_fold_full]
        spread = {
            name: {"mean": statistics.mean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0}
            for name in per_fold[0]
            if (v := [f[name] for f in per_fold if f.get(name) is not None])
        }
        report = {
            "folds": k,
            "grouped": any(r.get("group") for r in records),
            "per_fold": per_fold_full,
            "pooled": pooled,
        }
        atomic_write_json(tmp / "report.json", report)
        atomic_write_json(
            tmp / "metrics.json", {"per_fold": per_fold, "mean_std": spread, "pooled": overall_values(pooled)}
        )
        table = summary_table(per_fold, pooled)
        atomic_write_text(tmp / "summary.md", table)
    shutil.rmtree(work_dir, ignore_errors=True)
    print(f"train: {k}-fold cross-validation on sl_train (held-out folds)\n{table}")
    return {"per_fold": per_fold, "mean_std": spread, "pooled": overall_values(pooled)}
