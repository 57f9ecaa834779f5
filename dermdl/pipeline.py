"""The five stages as library functions: ``stages/*.py`` and the ``dermdl`` CLI both call these.

Output layout under ``params.out_dir`` (default ``outputs/``)::

    validate/report.json            every layout problem found (validate-layout)
    prepared/<dataset>/...          resized copy mirroring the layout + manifest.json (preprocess)
    model/model.pt, model.json      weights-only model + rebuild config; params.json, train.json (train)
    dvclive/, tensorboard/          training curves (train)
    predictions/<test>.*            per test set: CSV (classification), masks (segmentation), COCO JSON (detection)
    metrics.json, report.json       headline point metrics (DVC metrics) and every metric with 95% CIs (analyze)
    plots/                          DVC plot data and PNG figures per test set (analyze)

The stages' shared helpers live below this module: reading and fingerprinting the prepared data in
:mod:`dermdl.manifest`, predicting the test sets (infer, self-training rounds) in :mod:`dermdl.predict_tests`.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from dermdl.errors import StageError
from dermdl.headline import headline_metrics
from dermdl.io import atomic_dir, atomic_write_json, atomic_write_text
from dermdl.layout.report import Report
from dermdl.manifest import MANIFEST, _all_datasets, _fingerprint, _records, load_manifest
from dermdl.params import Params
from dermdl.plot_folders import keep_plot_folders
from dermdl.predict_tests import _round_evaluator, predict_tests
from dermdl.records import Record
from dermdl.report import write_report
from dermdl.stale_prepared import check_prepared
from dermdl.tasks import get_task


def validate(params: Params) -> Report:
    """Check every dataset named in params; write the JSON report; print one line per problem."""
    from dermdl.crypto import use_encrypted

    use_encrypted(params.data.encrypted)  # layout readers decrypt in memory (key read once)
    task = get_task(params.task)
    _items, classes, report = task.scan(params, _all_datasets(params), check_images=True)
    if report.ok:
        _check_splits(params, task, _items, report)
    from dermdl.leaks import (
        check_params,  # train/test duplicates, shared groups (errors unless data.allow_leaks)
    )

    leaks = check_params(params)
    report.extend(leaks.report)
    summary = report.to_dict() | {
        "root": params.data.root,
        "datasets": _all_datasets(params),
        "classes": classes,
        "leaks": leaks.to_dict(problems=False),
    }
    atomic_write_json(params.out / "validate" / "report.json", summary)
    for line in report.lines():
        print(line, file=sys.stderr)
    print(
        f"validate-layout: {len(_items)} images, {len(classes)} classes, "
        f"{len(report.errors)} error(s), {len(report.warnings)} warning(s), {len(leaks.leaks)} leak(s)"
    )
    return report


def _check_splits(params: Params, task: Any, items: list, report: Report) -> None:
    """What train would refuse because of the data (a class too small for the validation split or the
    CV folds), refused here first with train's own message."""
    from dermdl.splits import folds, stratified_split

    root = Path(params.data.root)
    records: list[Record] = [
        {
            "path": "",
            "source": item.path.relative_to(root).as_posix(),
            "target": item.target,
            "stratum": item.target if task.stratify_by_target else None,
        }
        for item in items
        if item.dataset in params.data.sl_train
    ]
    attach_groups(params, records)
    fix = "add images, or change train.valid_size / train.cv_folds (or train.full_data)"
    try:
        if not params.train.full_data:
            stratified_split(records, params.train.valid_size, params.train.seed)
        if params.train.cv_folds:
            folds(records, params.train.cv_folds, params.train.seed)
    except ValueError as exc:
        report.add(root / params.data.sl_train[0], f"train would stop: {exc}", fix)


def preprocess(params: Params) -> dict[str, Any]:
    """Resize every image of every named dataset into ``out/prepared`` (PNGs + one uint8 array per
    dataset) and write its manifest; does nothing when the sources and settings are unchanged."""
    from dermdl.crypto import use_encrypted

    use_encrypted(params.data.encrypted)  # reads decrypt in memory, patient-derived writes encrypt
    from dermdl.arrays import IMAGES, ImageRows, arrays_dir, write_targets
    from dermdl.prepare import iterate_parallel

    task = get_task(params.task)
    root = Path(params.data.root)
    items, classes, report = task.scan(params, _all_datasets(params), check_images=False)
    if not report.ok:
        raise StageError(
            "the dataset layout has errors; run `dermdl validate` and fix them:\n" + "\n".join(report.lines())
        )
    target = params.out / "prepared"
    fingerprint = _fingerprint(params, items)
    previous = target / MANIFEST
    if previous.is_file():
        manifest = json.loads(previous.read_text(encoding="utf-8"))
        complete = all((arrays_dir(target, name) / IMAGES).is_file() for name in manifest.get("datasets", {}))
        if manifest.get("fingerprint") == fingerprint and complete:
            print(f"preprocess: {len(items)} images up to date in {target} (sources and settings unchanged)")
            return manifest
    with atomic_dir(target) as tmp:
        jobs = [
            (
                item.path,
                item.path.relative_to(root).as_posix(),
                item.target,
                tmp,
                params.preprocess.size,
                params.preprocess.resize,
                params.preprocess.color_constancy,
            )
            for item in items
        ]
        job = task.prepare_item
        if params.preprocess.patch_size:  # large images: one job per patch window (dermdl.patches)
            from dermdl.patches import patch_jobs, prepare_patch

            items, jobs = patch_jobs(task.prepare_item, items, jobs, params.preprocess)
            job = prepare_patch
        counts = Counter(item.dataset for item in items)
        rows = {name: ImageRows(tmp, name, counts[name], params.preprocess.size) for name in _all_datasets(params)}
        datasets: dict[str, list[Record]] = {name: [] for name in rows}
        # streamed: each record's pixels go into its dataset's array as it arrives, so memory stays flat
        for item, record in zip(items, iterate_parallel(job, jobs, params.preprocess.workers)):
            datasets[item.dataset].append(rows[item.dataset].add(record))
        target_map = task.target_array(params)
        for name, dataset_records in datasets.items():
            rows[name].close()
            if target_map is not None:
                write_targets(tmp, name, dataset_records, params.preprocess.size, params.preprocess.workers, target_map)
        manifest = {
            "fingerprint": fingerprint,
            "task": params.task,
            "source_root": str(root),
            "classes": classes,
            "size": params.preprocess.size,
            "resize": params.preprocess.resize,
            "datasets": datasets,
        }
        atomic_write_json(tmp / MANIFEST, manifest)
    print(
        f"preprocess: {len(items)} images -> {params.out / 'prepared'} "
        f"({params.preprocess.size}px, {params.preprocess.resize})"
    )
    return manifest


def attach_groups(params: Params, records: list[Record]) -> int:
    """Give records their lesion/patient id (data.groups or <root>/groups.csv) so validation splits and
    CV folds keep a group on one side; returns how many records got one."""
    from dermdl.leaks.groups import Groups
    from dermdl.patches import source_of

    root = Path(params.data.root)
    path = Path(params.data.groups) if params.data.groups else root / "groups.csv"
    if not path.is_file():
        return 0
    problems = Report()
    table = Groups.read(path, problems)
    if table is None:
        raise StageError("\n".join(problems.lines()))
    found = 0
    for record in records:
        record["group"] = table.get(root / source_of(record), root)  # a patch: its whole image's group
        found += record["group"] is not None
    return found


def _split(params: Params, sl_train: list[Record]) -> tuple[list[Record], list[Record]]:
    from dermdl.splits import stratified_split

    if params.train.full_data:  # no validation: never borrow a test set for it (the thesis did; it leaks)
        return list(sl_train), []
    return stratified_split(sl_train, params.train.valid_size, params.train.seed)


def train(params: Params) -> dict[str, Any]:
    """Split sl_train (stratified, grouped), optionally cross-validate, train, save the model."""
    from dermdl import distributed

    try:
        return _train(params)
    except Exception as exc:  # a lost peer (killed node) is one line on the survivors, not a traceback or hang
        message = distributed.lost_peer(exc, params.train.dist_timeout)
        if message is None:
            raise
        raise StageError(message) from exc


def _train(params: Params) -> dict[str, Any]:
    from dermdl.crypto import use_encrypted

    use_encrypted(params.data.encrypted)  # reads decrypt in memory, patient-derived writes encrypt
    from dermdl import distributed
    from dermdl.io import atomic_file
    from dermdl.models import save_model
    from dermdl.train import fit
    from dermdl.weak_labels import rounds_table

    task = get_task(params.task)
    manifest = load_manifest(params)
    check_prepared(params, manifest)  # built from another data root or size: refuse, do not train on it
    sl_train = _records(manifest, params.data.sl_train)
    grouped = attach_groups(params, sl_train)
    distributed.init(params.train.dist_timeout)
    weak = _records(manifest, params.data.wl_train) if params.train.weak_labels != "none" else None
    model_dir = params.out / "model"
    cv = None
    if params.train.cv_folds:
        from dermdl.cross_validation import cross_validate

        cv = cross_validate(
            task, params, sl_train, manifest["classes"], model_dir / "cv", params.out / "checkpoint" / "cv", weak
        )
    train_records, valid_records = _split(params, sl_train)
    rounds_dir = model_dir / "rounds"
    if distributed.is_main():  # only global rank 0 writes
        shutil.rmtree(rounds_dir, ignore_errors=True)  # an earlier run's rounds must not pass for this run's
    rounds_work = params.out / "checkpoint" / "rounds"  # kept across a kill like the checkpoint itself
    self_train = params.train.weak_labels == "self_train"
    evaluate = _round_evaluator(task, params, manifest, rounds_work) if self_train and distributed.is_main() else None
    result = fit(
        task,
        params,
        train_records,
        valid_records,
        manifest["classes"],
        params.out,
        weak_records=weak,
        evaluate=evaluate,
    )
    if not distributed.is_main():  # rank 0 writes the model and reports
        distributed.shutdown()
        return {}
    config = task.after_training(result.model, result.config, valid_records, params, model_dir)
    save_model(result.model, config, model_dir)
    atomic_write_json(model_dir / "params.json", params.to_dict())
    if result.lr_plot:
        with atomic_file(model_dir / "lr_find.png") as tmp:
            tmp.write_bytes(result.lr_plot)
    if result.rounds:
        with atomic_dir(rounds_dir) as tmp:
            for row in result.rounds:  # training is over (its checkpoint cleared): move, don't copy
                if (rounds_work / f"round_{row['round']}").is_dir():  # absent without test sets
                    (rounds_work / f"round_{row['round']}").replace(tmp / f"round_{row['round']}")
            atomic_write_json(tmp / "rounds.json", result.rounds)
            atomic_write_text(tmp / "rounds.md", rounds_table(result.rounds))
        shutil.rmtree(rounds_work, ignore_errors=True)
        print("train: test metrics after each self-training round\n" + rounds_table(result.rounds))
    summary = {
        "train_images": len(train_records),
        "valid_images": len(valid_records),
        "grouped_images": grouped,
        "weak_images": len(weak or []),
        "epochs": result.epochs_run,
        "lr": result.lr,
        "optimizer": params.train.optimizer,
        "mixed_precision": result.precision,
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "cv_folds": params.train.cv_folds,
        "seconds": round(result.seconds, 2),
        "images_per_second": round(result.images_per_second, 2),
        **_training_speed(result.phases),
        "phases": result.phases,
    }
    from dermdl.threads import threads_in_use  # per process (params threads): parallel runs share the cores

    atomic_write_json(model_dir / "train.json", summary | {"processes": distributed.world_size(), **threads_in_use()})
    distributed.shutdown()
    from dermdl.console import train_summary

    print(train_summary(summary))  # plain words; every number is in model/train.json
    return summary | ({"cv": cv} if cv else {})


def _training_speed(phases: list[dict]) -> dict[str, float]:
    """Over all phases: training images/s (validation excluded) and the share spent making batches."""
    seconds = sum(p["seconds"] for p in phases)
    if not seconds:
        return {"train_images_per_second": 0.0, "data_loading_share": 0.0}
    loading = sum(p["data_loading_share"] * p["seconds"] for p in phases)
    return {
        "train_images_per_second": round(sum(p["images"] for p in phases) / seconds, 2),
        "data_loading_share": round(loading / seconds, 4),
    }


def infer(params: Params) -> dict[str, Path]:
    """Predict every test set with the trained model; one file (or folder) per test set."""
    from dermdl.crypto import use_encrypted

    use_encrypted(params.data.encrypted)  # reads decrypt in memory, patient-derived writes encrypt
    from dermdl.models import load_model

    task = get_task(params.task)
    manifest = load_manifest(params)
    check_prepared(params, manifest)  # before the model: stale prepared data is the first thing to fix
    model, config = load_model(params.out / "model")
    # The saved settings serve `dermdl predict`; here params.yaml is at hand and wins (e.g. a new
    # detection.score_threshold takes effect without retraining).
    config = replace(config, extra={**config.extra, **task.config_extra(params)})
    with atomic_dir(params.out / "predictions") as tmp:
        written = predict_tests(task, model, config, params, manifest, tmp)
    written = {name: params.out / "predictions" / path.relative_to(tmp) for name, path in written.items()}
    views = f" (test-time augmentation: {params.tta})" if params.tta != "none" else ""
    print(f"infer: predictions for {', '.join(written)} -> {params.out / 'predictions'}{views}")
    return written


def analyze(params: Params) -> dict[str, Any]:
    """Metrics with bootstrap CIs, DVC metrics/plots and figures; prints the summary table."""
    from dermdl.crypto import use_encrypted

    use_encrypted(params.data.encrypted)  # reads decrypt in memory, patient-derived writes encrypt
    from dermdl.models import ModelConfig

    task = get_task(params.task)
    config = ModelConfig.from_json(params.out / "model" / "model.json")
    full: dict[str, Any] = {}
    tables = []
    with atomic_dir(params.out / "plots") as plots_dir:
        for name in params.data.sl_tests:
            full[name] = task.analyze(params.out / "predictions", name, config, params, plots_dir)
            tables.append(task.table(full[name], f"Test set {name} (n={full[name]['n']}, {params.analyze.ci:.0%} CI)"))
        keep_plot_folders(plots_dir)  # dvc.yaml declares every task's folders; no "failed to load" warning
    atomic_write_json(params.out / "report.json", full)
    atomic_write_json(params.out / "metrics.json", headline_metrics(task, full))  # headline point values only
    text = "\n\n".join(tables) + "\n"
    atomic_write_text(params.out / "summary.txt", text)
    print(text + f"analyze: report -> {write_report(params.out, params.to_dict())} (one offline page)")
    return full
