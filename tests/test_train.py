"""The training core: with train.deterministic, the same seed gives the same model and metrics."""

from __future__ import annotations

import json

import pytest
import torch

from dermdl import pipeline
from dermdl.demo import generate_demo
from dermdl.params import params_from_dict

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("train_core")]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    base = tmp_path_factory.mktemp("train")
    generate_demo(base / "demo", n_train=6, n_test=2, n_weak=0, size=48)
    params = params_from_dict(
        {
            "out_dir": str(base / "out"),
            "data": {"root": str(base / "demo" / "classification"), "wl_train": [], "sl_tests": ["sl_test"]},
            "preprocess": {"size": 48, "workers": 1},
            "train": {"input_size": 48, "bs": 6, "fepochs": 1, "epochs": 1, "deterministic": True},
        }
    )
    pipeline.preprocess(params)
    return params


def _train_once(params) -> tuple[dict, dict]:
    pipeline.train(params)
    state = torch.load(params.out / "model" / "model.pt", weights_only=True)
    metrics = json.loads((params.out / "dvclive" / "metrics.json").read_text())
    return state, metrics


def test_same_seed_same_model_and_metrics(prepared):
    first_state, first_metrics = _train_once(prepared)
    second_state, second_metrics = _train_once(prepared)
    assert first_metrics == second_metrics
    assert first_state.keys() == second_state.keys()
    assert all(torch.equal(first_state[k], second_state[k]) for k in first_state)


def test_other_seed_other_model(prepared):
    first_state, _ = _train_once(prepared)
    other_state, _ = _train_once(prepared.override({"train.seed": 7}))
    assert any(not torch.equal(first_state[k], other_state[k]) for k in first_state)
