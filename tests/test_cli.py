"""The `dermdl` command line: help without a GPU, thesis flags, validate exit codes, predict."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from dermdl.cli import THESIS_FLAGS, _load, main
from dermdl.cli_parser import build_parser
from dermdl.models import ModelConfig, save_model
from dermdl.tasks.classification.model import build_classifier

SUBCOMMANDS = ["validate", "preprocess", "train", "infer", "analyze", "predict", "demo-data"]


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command):
    result = subprocess.run(
        [sys.executable, "-m", "dermdl.cli", command, "--help"],
        capture_output=True,
        text=True,
        env={"CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert "usage: dermdl" in result.stdout


def test_thesis_flags_map_onto_params(tmp_path):
    params_file = tmp_path / "params.yaml"
    params_file.write_text("task: classification\n")
    argv = [
        "train",
        "--params",
        str(params_file),
        "--data",
        "/d",
        "--wl-train",
        "wl_a",
        "wl_b",
        "--sl-train",
        "sl",
        "--sl-tests",
        "t1",
        "t2",
        "--input-size",
        "96",
        "--bs",
        "8",
        "--exp-name",
        "run1",
        "--epochs",
        "3",
        "--fepochs",
        "2",
        "--lr",
        "1e-4",
        "--model",
        "efficientnet-b0",
        "--seed",
        "7",
    ]
    params = _load(build_parser().parse_args(argv))
    assert params.data.root == "/d"
    assert params.data.wl_train == ("wl_a", "wl_b") and params.data.sl_tests == ("t1", "t2")
    assert (params.train.input_size, params.train.bs, params.train.epochs, params.train.fepochs) == (96, 8, 3, 2)
    assert (params.train.lr, params.model, params.train.seed, params.train.exp_name) == (
        1e-4,
        "efficientnet-b0",
        7,
        "run1",
    )
    assert {a for a in argv if a.startswith("--") and a != "--params"} <= set(THESIS_FLAGS)


def test_bad_params_exit_2_with_key(tmp_path, capsys):
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({"train": {"lr": -1}}))
    assert main(["validate", "--params", str(params_file)]) == 2
    assert "train.lr" in capsys.readouterr().err


def _layout(root: Path, classes=("a", "b"), datasets=("sl_train", "sl_test")):
    for d, ds in enumerate(datasets):  # distinct pixels per dataset: identical train/test files are a leak
        for i, cls in enumerate(classes):
            folder = root / ds / cls
            folder.mkdir(parents=True)
            for j in range(2):
                Image.new("RGB", (40, 30), (50 * i + 20, 80 + 40 * d, 10 * j)).save(folder / f"{cls}{j}.png")


def test_validate_collects_all_problems_and_fails(tmp_path, capsys):
    root = tmp_path / "data"
    _layout(root)
    (root / "sl_test" / "a" / "broken.jpg").write_bytes(b"")
    (root / "sl_test" / "b" / "notes.txt").write_text("x")
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({"data": {"root": str(root)}, "out_dir": str(tmp_path / "out")}))
    assert main(["validate", "--params", str(params_file)]) == 1
    report = json.loads((tmp_path / "out" / "validate" / "report.json").read_text())
    paths = {p["path"] for p in report["problems"]}
    assert any("broken.jpg" in p for p in paths) and any("notes.txt" in p for p in paths)
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "Fix:" in err


def test_validate_passes_on_good_layout(tmp_path):
    root = tmp_path / "data"
    _layout(root)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({"data": {"root": str(root)}, "out_dir": str(tmp_path / "out")}))
    assert main(["validate", "--params", str(params_file)]) == 0


def test_predict_folder_writes_csv(tmp_path):
    model, (mean, std) = build_classifier("efficientnet_lite0", 2, pretrained=False)
    config = ModelConfig(
        task="classification",
        arch="efficientnet_lite0",
        classes=["benign", "malignant"],
        input_size=32,
        mean=mean,
        std=std,
        preprocess_size=48,
        resize="pad",
    )
    save_model(model, config, tmp_path / "model")
    images = tmp_path / "new photos"
    images.mkdir()
    Image.new("RGB", (90, 60), (150, 90, 60)).save(images / "lésion 1.jpg")
    Image.new("L", (50, 70), 100).save(images / "b.png")
    (images / ".DS_Store").write_bytes(b"junk")
    out = tmp_path / "pred.csv"
    assert main(["predict", "--model", str(tmp_path / "model"), str(images), "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [Path(r["path"]).name for r in rows] == ["b.png", "lésion 1.jpg"]
    for row in rows:
        assert row["predicted_label"] in ("benign", "malignant")
        assert abs(float(row["prob_benign"]) + float(row["prob_malignant"]) - 1) < 1e-4


def test_predict_missing_input_is_clear(tmp_path, capsys):
    assert main(["predict", "--model", str(tmp_path), str(tmp_path / "nope.jpg")]) == 1
    assert "nope.jpg" in capsys.readouterr().err
