"""Every key a record carries is declared in dermdl.records.Record (a new key is a visible decision)."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from dermdl import pipeline
from dermdl.demo import generate_demo
from dermdl.params import params_from_dict
from dermdl.records import Record
from dermdl.tasks import builtin_task_names, get_task

DECLARED = set(typing.get_type_hints(Record))


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("records")
    generate_demo(base / "demo", n_train=1, n_test=1, n_weak=0, n_negative=1, size=32)
    return base


def _params(demo: Path, task: str):
    return params_from_dict(
        {
            "task": task,
            "out_dir": str(demo / f"out-{task}"),
            "data": {"root": str(demo / "demo" / task), "wl_train": [], "sl_tests": ["sl_test"]},
            "preprocess": {"size": 24, "workers": 1},
        }
    )


@pytest.mark.parametrize("task_name", builtin_task_names())
def test_prepare_item_writes_only_declared_keys(demo, tmp_path, task_name):
    params = _params(demo, task_name)
    task = get_task(task_name)
    root = Path(params.data.root)
    items, _classes, report = task.scan(params, ["sl_train", "sl_test"], check_images=False)
    assert report.ok and items
    for item in items:
        record = task.prepare_item(
            item.path, item.path.relative_to(root).as_posix(), item.target, tmp_path, 24, "pad", "none"
        )
        assert set(record) <= DECLARED, f"{task_name}: undeclared record keys {set(record) - DECLARED}"
        assert Record.__required_keys__ <= set(record)


@pytest.mark.parametrize("task_name", builtin_task_names())
def test_manifest_records_carry_only_declared_keys(demo, task_name):
    """What later stages see: prepare_item's keys plus ``row``, ``dataset``, ``arrays`` (and ``group``)."""
    params = _params(demo, task_name)
    pipeline.preprocess(params)
    manifest = pipeline.load_manifest(params)
    records = [r for dataset in manifest["datasets"].values() for r in dataset]
    pipeline.attach_groups(params, records)
    assert records
    for record in records:
        assert set(record) <= DECLARED, f"{task_name}: undeclared record keys {set(record) - DECLARED}"
        assert {"row", "dataset", "arrays"} <= set(record) and "pixels" not in record
