"""The task interface is real: a fourth task registered from outside runs validate -> analyze without a
change to the core, and no module outside ``dermdl/tasks/<name>/`` branches on a task's name."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import toy_task

from dermdl import pipeline
from dermdl.params import ParamsError, params_from_dict
from dermdl.tasks import (
    PROCEDURES,
    Capabilities,
    Lazy,
    Task,
    builtin_task_names,
    detect_layout,
    get_task,
    register_task,
    task_names,
    unregister_task,
)

PACKAGE = Path(__file__).resolve().parents[1] / "dermdl"


@pytest.fixture
def spot_task():
    register_task(toy_task.TASK)
    yield toy_task.TASK
    unregister_task(toy_task.NAME)


def test_builtin_tasks_are_the_packages_and_satisfy_the_protocol():
    assert builtin_task_names() == ("classification", "detection", "segmentation")
    for name in builtin_task_names():
        task = get_task(name)
        assert isinstance(task, Task) and task.name == name
        assert all(isinstance(getattr(task, field), Lazy) for field in ("predict", "analyze", "build_model"))


def test_registering_adds_the_task_everywhere_names_are_listed(spot_task):
    assert toy_task.NAME in task_names() and toy_task.NAME not in builtin_task_names()
    assert params_from_dict({"task": toy_task.NAME}).tta == "none"  # tta unsupported -> auto resolves to none
    with pytest.raises(ParamsError, match="train.mixup: not available for spot \\(a toy\\)"):
        params_from_dict({"task": toy_task.NAME, "train": {"mixup": 0.4}})


def test_unknown_task_and_malformed_plugins_are_refused():
    with pytest.raises(ParamsError, match="unknown task 'spot'"):
        params_from_dict({"task": "spot"})
    with pytest.raises(TypeError, match="not a dermdl task: missing"):
        register_task(object())
    with pytest.raises(ValueError, match="unknown procedure"):
        Capabilities(unsupported={"teleport": "no"})
    assert set(PROCEDURES) >= {"tta", "mixup", "oversample", "channels_last"}


@pytest.mark.parametrize(
    "task, folders",
    [
        ("classification", ["sl_train/mel"]),
        ("segmentation", ["sl_train/images", "sl_train/masks"]),
        ("detection", ["images/sl_train", "annotations"]),
    ],
)
def test_layout_detection_asks_each_task_schema(tmp_path, task, folders):
    for folder in folders:
        (tmp_path / folder).mkdir(parents=True)
    assert detect_layout(tmp_path, ["sl_train"]) == task


def test_fourth_task_runs_validate_to_analyze(tmp_path, spot_task):
    root = tmp_path / "data"
    toy_task.write_dataset(root, "sl_train", 24, seed=0)
    toy_task.write_dataset(root, "sl_test", 10, seed=1)
    params = params_from_dict(
        {
            "task": toy_task.NAME,
            "out_dir": str(tmp_path / "out"),
            "data": {
                "root": str(root),
                "wl_train": [],
                "sl_train": ["sl_train"],
                "sl_tests": ["sl_test"],
                "allow_leaks": True,
            },
            "preprocess": {"size": 32, "workers": 1},
            "train": {"input_size": 32, "bs": 8, "epochs": 6, "lr": 0.02, "pretrained": False, "augment": False},
            "analyze": {"n_boot": 100},
        }
    )
    assert pipeline.validate(params).ok
    manifest = pipeline.preprocess(params)
    assert sum(len(records) for records in manifest["datasets"].values()) == 68
    pipeline.train(params)
    config = json.loads((params.out / "model" / "model.json").read_text())
    assert config["task"] == toy_task.NAME and config["classes"] == toy_task.CLASSES
    pipeline.infer(params)
    assert len((params.out / "predictions" / "sl_test.csv").read_text().splitlines()) == 1 + 20
    metrics = pipeline.analyze(params)["sl_test"]
    assert metrics["n"] == 20
    assert metrics["overall"]["accuracy"]["value"] >= 0.75  # a bright 10x10 square on 32x32 noise is learnable


def _task_name_branches(tree: ast.AST, names: set[str]) -> list[int]:
    """Lines that compare with a task name (==, !=, in, match) or spell task names in a Literal[...]."""

    def is_name(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant) and node.value in names:
            return True
        return isinstance(node, (ast.Tuple, ast.List, ast.Set)) and any(is_name(e) for e in node.elts)

    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(is_name(n) for n in [node.left, *node.comparators]):
            lines.append(node.lineno)
        elif isinstance(node, ast.match_case) and any(is_name(n) for n in ast.walk(node.pattern)):
            lines.append(node.pattern.lineno)
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.value, ast.Name)
            and node.value.id == "Literal"
            and is_name(node.slice)
        ):
            lines.append(node.lineno)
    return lines


def test_no_core_module_branches_on_a_task_name():
    names = set(builtin_task_names())
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).parts
        if parts[0] == "tasks" and len(parts) > 2:  # inside dermdl/tasks/<name>/: the task's own business
            continue
        for line in _task_name_branches(ast.parse(path.read_text(encoding="utf-8")), names):
            offenders.append(f"{path.relative_to(PACKAGE.parent)}:{line}")
    assert offenders == []


def test_the_branch_finder_finds_branches():
    code = 'if task == "detection": pass\nx = t in ("segmentation", "y")\nT = Literal["classification"]\n'
    assert _task_name_branches(ast.parse(code), {"detection", "segmentation", "classification"}) == [1, 2, 3]
