"""Every application preset (presets/*.yaml) runs end to end on demo-sized data through the CLI, exactly as its
doc says, with only the data folder and the sizes made tiny (issue 15, item 4)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from dermdl.cli import main
from dermdl.demo import generate_demo
from dermdl.images import open_mask
from dermdl.params import load_params

PRESETS = Path(__file__).resolve().parents[1] / "presets"
NAMES = sorted(p.stem for p in PRESETS.glob("*.yaml"))
TINY = {  # what the test changes; everything else is the preset's own
    "preprocess": {"size": 48, "workers": 1},
    "train": {"input_size": 48, "bs": 8, "epochs": 1, "fepochs": 0},
    "analyze": {"n_boot": 100, "explain": 0},
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    base = tmp_path_factory.mktemp("presets")
    generate_demo(base / "demo", size=48, n_train=3, n_test=2, n_weak=0, n_negative=1)
    return base / "demo"


def _tiny(name: str, demo: Path, out: Path) -> Path:
    raw = yaml.safe_load((PRESETS / f"{name}.yaml").read_text())
    task = raw["task"]
    raw["data"]["root"] = str(demo / task)
    raw["out_dir"] = str(out)
    for section, values in TINY.items():
        raw.setdefault(section, {}).update(values)
    path = out.parent / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_every_preset_has_a_doc_and_an_index_entry():
    index = (PRESETS / "README.md").read_text()
    for name in NAMES:
        assert (PRESETS / f"{name}.md").is_file(), f"presets/{name}.md missing"
        assert f"{name}.yaml" in index and f"{name}.md" in index
        load_params(PRESETS / f"{name}.yaml")  # valid as shipped
    assert len(NAMES) >= 5


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_preset_runs_end_to_end(name, demo, tmp_path, capsys):
    out = tmp_path / "out"
    params_file = _tiny(name, demo, out)
    for stage in ("validate", "preprocess", "train", "infer", "analyze"):
        assert main([stage, "--params", str(params_file)]) == 0, capsys.readouterr().err
    params = load_params(params_file)
    assert (out / "metrics.json").is_file() and (out / "report.html").is_file()
    test = params.data.sl_tests[0]
    if "dermdl grade" in (PRESETS / f"{name}.yaml").read_text():  # the grading recipe
        assert main(["grade", "--params", str(params_file), "--min-area", "5"]) == 0, capsys.readouterr().err
        _check_grading(out, test, min_area=5)


def _check_grading(out: Path, test: str, min_area: int) -> None:
    """The grading table against an independent count: OpenCV's 8-connected components of the masks infer wrote."""
    table = pd.read_csv(out / "grading" / f"{test}.csv")
    predicted = pd.read_csv(out / "predictions" / f"{test}.csv")
    assert list(table["image"]) == list(predicted["image"]) and len(table) > 0
    for row in table.itertuples():
        lesion = (open_mask(out / "predictions" / row.mask) != 0).astype(np.uint8)
        n, _labels, stats, _ = cv2.connectedComponentsWithStats(lesion, connectivity=8)
        areas = stats[1:n, cv2.CC_STAT_AREA]
        kept = areas[areas >= min_area]
        assert row.lesions == len(kept)
        assert row.affected_share == pytest.approx(kept.sum() / lesion.size, abs=1e-6)
    assert (out / "grading" / f"{test}.png").stat().st_size > 1000
