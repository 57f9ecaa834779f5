"""The layout checkers' case tables (tests/layout/) run again through the command a user types,
``dermdl validate``: every broken tree ends in a non-zero exit, one line per problem on stderr, the
expected problem text, no traceback — and not one byte of the data folder changes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent / "layout"))

import test_coco  # noqa: E402  (the case tables of tests/layout/)
import test_folders  # noqa: E402
import test_masks  # noqa: E402
from digests import tree_digest

from dermdl.cli import main  # noqa: E402

LINE_STARTS = ("ERROR ", "WARNING ", "dermdl:", "  - ", "validate-layout:", "params:")


def _validate(tmp_path: Path, task: str, root: Path, datasets: list[str], capsys) -> tuple[int, str]:
    params = {
        "task": task,
        "out_dir": str(tmp_path / "out"),
        "data": {
            "root": str(root),
            "wl_train": [],
            "sl_train": datasets[:1],
            "sl_tests": datasets[1:],
            "allow_leaks": True,
        },
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    before = tree_digest(root)
    code = main(["validate", "--params", str(path)])
    err = capsys.readouterr().err
    assert tree_digest(root) == before, "validate changed the data folder"
    assert "Traceback" not in err
    assert all(line.startswith(LINE_STARTS) for line in err.splitlines() if line.strip()), err
    return code, err


def _folder_cases(module):
    return [pytest.param(module, *case[1:4], id=f"{module.__name__}-{case[0]}") for case in module.BAD_CASES]


@pytest.mark.parametrize("module, change, datasets, expected", _folder_cases(test_folders) + _folder_cases(test_masks))
def test_broken_folder_layouts_through_the_cli(tmp_path, capsys, module, change, datasets, expected):
    root = tmp_path / "data"
    module.good_tree(root)
    if change is not None:
        change(root)
    task = "classification" if module is test_folders else "segmentation"
    code, err = _validate(tmp_path, task, root, list(datasets), capsys)
    assert code in (1, 2), err
    if code == 1:  # the layout was checked: every expected problem is on stderr
        for _rel, what, _fix in expected:
            assert what.replace("{root}", str(root)) in err, err


@pytest.mark.parametrize("case, mutate, where, text", test_coco.BAD, ids=[c[0] for c in test_coco.BAD])
def test_broken_coco_layouts_through_the_cli(tmp_path, capsys, case, mutate, where, text):
    root = test_coco.make_root(tmp_path)
    data = test_coco._coco()
    replaced = mutate(data, root)
    test_coco.write(root, "sl_train", replaced if replaced is not None else data)
    code, err = _validate(tmp_path, "detection", root, ["sl_train", "sl_test"], capsys)
    assert code == 1 and text in err, err
