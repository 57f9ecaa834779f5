"""Every thesis flag sets its params key to the value the README table promises (issue 15, item 5)."""

from __future__ import annotations

import pytest
import yaml

from dermdl.cli import _load, main
from dermdl.cli_parser import build_parser
from dermdl.errors import ParamsError
from dermdl.thesis_flags import THESIS_FLAGS, Flag

CASES = [  # task, flags -> (section, key, expected value)
    ("classification", ["--cross-val"], ("train", "cv_folds", 5)),
    ("classification", ["--cross-val", "--nfolds", "3"], ("train", "cv_folds", 3)),
    ("classification", ["--use-wl"], ("train", "weak_labels", "pretrain")),
    ("classification", ["--nrepeats", "3"], ("train", "nrepeats", 3)),
    ("classification", ["--progr-size"], ("train", "progressive_resizing", (0.5, 1.0))),
    ("classification", ["--full-precision"], ("train", "mixed_precision", "off")),
    ("classification", ["--focal-loss"], ("classification", "loss", "focal")),
    ("segmentation", ["--focal-loss"], ("segmentation", "loss", "focal")),
    ("classification", ["--weighted-loss"], ("classification", "class_weights", "balanced")),
    ("classification", ["--early-stop"], ("train", "early_stopping", 3)),
    ("classification", ["--early-stop", "7"], ("train", "early_stopping", 7)),
    ("classification", ["--reduce-lr-on-plateau"], ("train", "plateau", 2)),
    ("classification", ["--reduce-lr-on-plateau", "4"], ("train", "plateau", 4)),
    ("classification", ["--mixup"], ("train", "mixup", 0.4)),
    ("classification", ["--mixup", "0.2"], ("train", "mixup", 0.2)),
    ("classification", ["--oversample"], ("train", "oversample", True)),
    ("classification", ["--full-data"], ("train", "full_data", True)),
    ("classification", ["--deterministic"], ("train", "deterministic", True)),
    ("classification", ["--auto-lr"], ("train", "auto_lr", True)),
    ("segmentation", ["--model", "resnet18"], ("segmentation", "model", "resnet18")),
    ("classification", ["--encrypted"], ("data", "encrypted", True)),
]


def _params_file(tmp_path, task: str, **extra):
    path = tmp_path / "params.yaml"
    data = {"wl_train": ["wl_train"]} if task == "classification" else {}
    path.write_text(yaml.safe_dump({"task": task, "data": data} | extra))
    return path


@pytest.mark.parametrize(("task", "flags", "expected"), CASES)
def test_flag_sets_its_key(tmp_path, task, flags, expected):
    section, key, value = expected
    default = getattr(
        getattr(_load(build_parser().parse_args(["train", "--params", str(_params_file(tmp_path, task))])), section),
        key,
    )
    params = _load(build_parser().parse_args(["train", "--params", str(_params_file(tmp_path, task)), *flags]))
    assert getattr(getattr(params, section), key) == value
    if flags[0] not in ("--deterministic", "--weighted-loss"):  # already the default in params.yaml
        assert default != value  # the flag changed something


def test_every_flag_is_in_the_table_and_the_readme():
    tested = {flag for _task, flags, _ in CASES for flag in flags if flag.startswith("--")}
    untested = set(THESIS_FLAGS) - tested - {"--data", "--wl-train", "--sl-train", "--sl-tests", "--input-size"}
    untested -= {"--bs", "--exp-name", "--epochs", "--fepochs", "--lr", "--seed"}  # tests/test_cli.py
    assert not untested
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    missing = [flag for flag in THESIS_FLAGS if f"`{flag}" not in readme]
    assert not missing, f"README thesis-flag table lacks {missing}"


def test_flag_without_a_params_key_is_one_error(tmp_path, capsys, monkeypatch):
    """A thesis flag whose feature this dermdl lacks (as --encrypted was before data.encrypted existed)."""
    monkeypatch.setitem(THESIS_FLAGS, "--thesis-only", Flag("train.no_such_key", "switch", True))
    assert main(["train", "--params", str(_params_file(tmp_path, "classification")), "--thesis-only"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--thesis-only" in err and "train.no_such_key" in err and "\n" not in err


def test_nfolds_without_cross_val_is_an_error(tmp_path):
    with pytest.raises(ParamsError, match="--cross-val"):
        _load(
            build_parser().parse_args(
                ["train", "--params", str(_params_file(tmp_path, "classification")), "--nfolds", "3"]
            )
        )


def test_focal_loss_for_a_task_without_a_loss_names_the_key(tmp_path):
    with pytest.raises(ParamsError, match="detection.loss"):
        _load(
            build_parser().parse_args(["train", "--params", str(_params_file(tmp_path, "detection")), "--focal-loss"])
        )
