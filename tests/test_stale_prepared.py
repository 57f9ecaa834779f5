"""Train and infer refuse prepared data built from another data root or size (issue 15, item 5)."""

from __future__ import annotations

import os
import shutil

import pytest

from dermdl import pipeline
from dermdl.cli import main
from dermdl.demo import generate_demo
from dermdl.errors import StageError
from dermdl.params import params_from_dict
from dermdl.stale_prepared import check_prepared


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    base = tmp_path_factory.mktemp("stale")
    generate_demo(base / "demo", n_train=2, n_test=1, n_weak=0, size=32)
    root = base / "demo" / "classification"
    shutil.copytree(root, base / "other")  # same images, another root
    params = params_from_dict(
        {
            "out_dir": str(base / "out"),
            "data": {"root": str(root), "wl_train": []},
            "preprocess": {"size": 32, "workers": 1},
        }
    )
    return params, pipeline.preprocess(params), base


CHANGES = [  # override -> the key the error names
    ({"data.root": "OTHER"}, "data.root"),
    ({"preprocess.size": 48}, "preprocess.size"),
    ({"preprocess.resize": "pad"}, "preprocess.resize"),
]


@pytest.mark.parametrize(("change", "key"), CHANGES)
@pytest.mark.parametrize("stage", ["train", "infer"])
def test_train_and_infer_refuse_prepared_data_of_other_params(prepared, stage, change, key):
    params, _manifest, base = prepared
    change = {k: str(base / "other") if v == "OTHER" else v for k, v in change.items()}
    with pytest.raises(StageError, match=rf"{key} .*re-run preprocess"):
        getattr(pipeline, stage)(params.override(change))


def test_same_root_spelled_relative_is_accepted(prepared, monkeypatch):
    params, manifest, base = prepared
    monkeypatch.chdir(base)
    check_prepared(params.override({"data.root": os.path.join("demo", "classification")}), manifest)
    check_prepared(params, manifest | {"source_root": "demo/classification"})  # a relative root in the manifest
    with pytest.raises(StageError, match="data.root"):
        check_prepared(params, manifest | {"source_root": "other"})


def test_cli_train_with_another_data_is_one_line(prepared, tmp_path, capsys):
    params, _manifest, base = prepared
    params_file = tmp_path / "params.yaml"
    import yaml

    params_file.write_text(yaml.safe_dump(params.to_dict()))
    assert main(["train", "--params", str(params_file), "--data", str(base / "other")]) == 1
    err = capsys.readouterr().err.strip()
    assert "re-run preprocess" in err and str(base / "other") in err and "\n" not in err
