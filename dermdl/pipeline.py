"""The five stages as library functions: ``stages/*.py`` and the ``dermdl`` CLI both call these.

Output layout under ``params.out_dir`` (default ``outputs/``)::

    validate/report.json            every layout problem found (validate-layout)
    prepared/<dataset>/...          resized copy mirroring the layout + manifest.json (preprocess)
    model/model.pt, model.json      weights-only model + rebuild config; params.json, train.json (train)
    dvclive/, tensorboard/          training curves (train)
    predictions/<test>.*            per test set: CSV (classification), masks (segmentation), COCO JSON (detection)
    metrics.json, report.json       point metrics (DVC metrics) and metrics with 95% CIs (analyze)
    plots/                          DVC plot data and PNG figures per test set (analyze)
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from dermdl.io import atomic_dir, atomic_write_json, atomic_write_text
from dermdl.layout.report import Report
from dermdl.params import Params
from dermdl.tasks import get_task

MANIFEST = "manifest.json"


class StageError(RuntimeError):
    """A stage cannot run on these inputs; the message says which file and how to fix it."""


def _roles(params: Params) -> dict[str, tuple[str, ...]]:
    data = params.data
    return {"wl_train": data.wl_train, "sl_train": data.sl_train, "sl_tests": data.sl_tests}


def _all_datasets(params: Params) -> list[str]:
    names: list[str] = []
    for group in _roles(params).values():
        names += [n for n in group if n not in names]
    return names


def validate(params: Params) -> Report:
    """Check every dataset named in params; write the JSON report; print one line per problem."""
    task = get_task(params.task)
    _items, classes, report = task.scan(params, _all_datasets(params), check_images=True)
    from dermdl.leaks import check_params  # train/test duplicates, shared groups (errors unless data.allow_leaks)

    leaks = check_params(params)
    report.extend(leaks.report)
    summary = report.to_dict() | {"root": params.data.root, "datasets": _all_datasets(params), "classes": classes,
                                  "leaks": leaks.to_dict(problems=False)}
    atomic_write_json(params.out / "validate" / "report.json", summary)
    for line in report.lines():
        print(line, file=sys.stderr)
    print(f"validate-layout: {len(_items)} images, {len(classes)} classes, "
          f"{len(report.errors)} error(s), {len(report.warnings)} warning(s), {len(leaks.leaks)} leak(s)")
    return report


def preprocess(params: Params) -> dict[str, Any]:
    """Resize every image of every named dataset into ``out/prepared`` and write its manifest."""
    from dermdl.prepare import run_parallel

    task = get_task(params.task)
    root = Path(params.data.root)
    items, classes, report = task.scan(params, _all_datasets(params), check_images=False)
    if not report.ok:
        raise StageError("the dataset layout has errors; run `dermdl validate` and fix them:\n" + "\n".join(report.lines()))
    target = params.out / "prepared"
    with atomic_dir(target) as tmp:
        jobs = [
            (item.path, item.path.relative_to(root).as_posix(), item.target, tmp, params.preprocess.size, params.preprocess.resize)
            for item in items
        ]
        records = run_parallel(task.prepare_item, jobs, params.preprocess.workers)
        datasets: dict[str, list[dict]] = {name: [] for name in _all_datasets(params)}
        for item, record in zip(items, records):
            datasets[item.dataset].append(record)
        manifest = {
            "task": params.task,
            "source_root": str(root),
            "classes": classes,
            "size": params.preprocess.size,
            "resize": params.preprocess.resize,
            "datasets": datasets,
        }
        atomic_write_json(tmp / MANIFEST, manifest)
    print(f"preprocess: {len(records)} images -> {target} ({params.preprocess.size}px, {params.preprocess.resize})")
    return manifest


def load_manifest(params: Params) -> dict[str, Any]:
    path = params.out / "prepared" / MANIFEST
    if not path.is_file():
        raise StageError(f"{path}: missing; run the preprocess stage first (`dvc repro preprocess`)")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    for dataset, records in manifest["datasets"].items():
        for record in records:
            record["abspath"] = str(path.parent / record["path"])
            record["dataset"] = dataset
    return manifest


def _records(manifest: dict, names: tuple[str, ...]) -> list[dict]:
    missing = [n for n in names if n not in manifest["datasets"]]
    if missing:
        raise StageError(f"datasets {missing} are not in the prepared data; re-run `dvc repro preprocess`")
    return [r for n in names for r in manifest["datasets"][n]]


def train(params: Params) -> dict[str, Any]:
    """Split sl_train (stratified), train, and save the model with its resolved parameters."""
    from dermdl.models import save_model
    from dermdl.splits import stratified_split
    from dermdl.train import fit

    task = get_task(params.task)
    manifest = load_manifest(params)
    sl_train = _records(manifest, params.data.sl_train)
    weak = _records(manifest, params.data.wl_train) if params.train.weak_labels == "pretrain" else None
    train_records, valid_records = stratified_split(sl_train, params.train.valid_size, params.train.seed)
    result = fit(task, params, train_records, valid_records, manifest["classes"], params.out, weak_records=weak)
    model_dir = params.out / "model"
    save_model(result.model, result.config, model_dir)
    atomic_write_json(model_dir / "params.json", params.to_dict())
    summary = {
        "train_images": len(train_records),
        "valid_images": len(valid_records),
        "weak_images": len(weak or []),
        "epochs": result.epochs_run,
        "seconds": round(result.seconds, 2),
        "images_per_second": round(result.images_per_second, 2),
    }
    atomic_write_json(model_dir / "train.json", summary)
    print(f"train: {summary}")
    return summary


def infer(params: Params) -> dict[str, Path]:
    """Predict every test set with the trained model; one CSV per test set."""
    from dermdl.models import load_model

    task = get_task(params.task)
    model, config = load_model(params.out / "model")
    # The saved settings serve `dermdl predict`; here params.yaml is at hand and wins (e.g. a new
    # detection.score_threshold takes effect without retraining).
    config = replace(config, extra={**config.extra, **task.config_extra(params)})
    manifest = load_manifest(params)
    written = {}
    with atomic_dir(params.out / "predictions") as tmp:
        for name in params.data.sl_tests:
            records = _records(manifest, (name,))
            probs = task.predict(model, config, [Path(r["abspath"]) for r in records], params.infer.bs)
            path = task.write_predictions(records, probs, config, tmp, name)
            written[name] = params.out / "predictions" / path.relative_to(tmp)
    print(f"infer: predictions for {', '.join(written)} -> {params.out / 'predictions'}")
    return written


def analyze(params: Params) -> dict[str, Any]:
    """Metrics with bootstrap CIs, DVC metrics/plots and figures; prints the summary table."""
    from dermdl.models import ModelConfig

    task = get_task(params.task)
    config = ModelConfig.from_json(params.out / "model" / "model.json")
    full: dict[str, Any] = {}
    tables = []
    with atomic_dir(params.out / "plots") as plots_dir:
        for name in params.data.sl_tests:
            full[name] = task.analyze(params.out / "predictions", name, config, params, plots_dir)
            tables.append(task.table(full[name], f"Test set {name} (n={full[name]['n']}, {params.analyze.ci:.0%} CI)"))
    atomic_write_json(params.out / "report.json", full)
    atomic_write_json(params.out / "metrics.json", point_values(full))
    text = "\n\n".join(tables) + "\n"
    atomic_write_text(params.out / "summary.txt", text)
    print(text)
    return full


def point_values(tree: Any) -> Any:
    """Strip CIs for ``dvc metrics``/``exp show`` (the CIs stay in report.json)."""
    if isinstance(tree, dict):
        if set(tree) >= {"value", "lo", "hi"}:
            return tree["value"]
        return {key: point_values(value) for key, value in tree.items()}
    return tree
