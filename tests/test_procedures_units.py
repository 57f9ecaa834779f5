"""Building blocks of the training procedures, without training: monitor, sampler, splits, losses, precision."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from fastai.callback.core import CancelFitException

from dermdl.callbacks import Monitor, balanced_sampler, check_monitor, precision
from dermdl.params import ParamsError, params_from_dict
from dermdl.session import scaled
from dermdl.splits import folds, stratified_split
from dermdl.tasks.segmentation.losses import SegmentationLoss


def _run_monitor(values: list[float], patience: int, keep_best: bool):
    model = torch.nn.Linear(2, 1)
    recorder = SimpleNamespace(metric_names=["epoch", "train_loss", "valid_loss", "time"], values=[])
    monitor = Monitor("valid_loss", 0.0, patience, keep_best)
    monitor.learn = SimpleNamespace(recorder=recorder, model=model)
    monitor.before_fit()
    weights, stopped_at = [], None
    for epoch, value in enumerate(values):
        with torch.no_grad():
            model.weight.fill_(float(epoch))  # weights identify the epoch
        weights.append(model.weight.clone())
        recorder.values.append([0.0, value])
        monitor.epoch = epoch
        try:
            monitor.after_epoch()
        except CancelFitException:
            stopped_at = epoch
            break
    return monitor, model, stopped_at


@pytest.mark.parametrize(
    "values, patience, stopped_at, best_epoch",
    [
        ([1.0, 0.5, 0.8, 0.9, 0.4], 2, 3, 2),  # two epochs without improvement after epoch 2 -> stop
        ([1.0, 0.9, 0.8, 0.7], 2, None, 4),  # always improving: never stops
        ([1.0, 1.2, 0.9], 0, None, 3),  # patience 0 = no early stopping
    ],
)
def test_monitor_early_stopping_and_best_weights(values, patience, stopped_at, best_epoch):
    monitor, model, stopped = _run_monitor(values, patience, keep_best=True)
    assert stopped == stopped_at and monitor.stopped is (stopped_at is not None)
    assert monitor.best_epoch == best_epoch
    monitor.restore_best(model)
    assert torch.all(model.weight == best_epoch - 1)  # the weights of the best epoch are back


def test_monitor_names_unknown_metric():
    from fastai.metrics import accuracy

    check_monitor("accuracy", [accuracy])
    with pytest.raises(ValueError, match="train.monitor: 'dice' is not logged.*valid_loss"):
        check_monitor("dice", [accuracy])


def test_balanced_sampler_equalises_classes():
    np.random.seed(0)
    strata = ["nevus"] * 90 + ["melanoma"] * 10
    draw = balanced_sampler(strata)
    counts = Counter(strata[i] for _ in range(50) for i in draw())
    assert len(draw()) == 100
    assert counts["melanoma"] / sum(counts.values()) == pytest.approx(0.5, abs=0.03)


def _records(n_groups: int, per_group: int) -> list[dict]:
    return [
        {"path": f"{g}-{i}.png", "stratum": "ab"[g % 2], "group": f"lesion{g}"}
        for g in range(n_groups)
        for i in range(per_group)
    ]


@pytest.mark.parametrize("k", [2, 3, 5])
def test_cv_folds_are_grouped_and_cover_every_record_once(k):
    records = _records(20, 3)
    splits = folds(records, k, seed=0)
    held = [r["path"] for _, valid in splits for r in valid]
    assert sorted(held) == sorted(r["path"] for r in records)
    for train, valid in splits:
        assert not {r["group"] for r in train} & {r["group"] for r in valid}
        assert {r["stratum"] for r in valid} == {"a", "b"}


def test_validation_split_keeps_groups_together():
    train, valid = stratified_split(_records(20, 3), 0.2, seed=1)
    assert not {r["group"] for r in train} & {r["group"] for r in valid}
    assert len(valid) == pytest.approx(12, abs=3)


def test_too_few_groups_for_folds():
    with pytest.raises(ValueError, match="cv_folds=5: sl_train has only 3"):
        folds(_records(3, 2), 5, seed=0)


def test_progressive_resizing_scales_size_and_batch():
    params = params_from_dict({"train": {"input_size": 128, "bs": 16}})
    small = scaled(params, 0.5)
    assert (small.train.input_size, small.train.bs) == (64, 64)
    assert scaled(params, 1.0) is params


def _onehot_logits(labels: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels, 2).permute(0, 3, 1, 2).float() * 20 - 10


def test_focal_tversky_weighs_missed_lesion_more_than_false_alarm():
    truth = torch.zeros(1, 8, 8, dtype=torch.long)
    truth[0, 2:6, 2:6] = 1
    loss = SegmentationLoss("focal_tversky", weight=[0.0, 1.0], tversky=(0.7, 0.3, 4 / 3))
    assert float(loss(_onehot_logits(truth), truth)) < 1e-3
    missed, extra = truth.clone(), truth.clone()
    missed[0, 2:4, 2:6] = 0  # 8 lesion pixels missed (false negatives)
    extra[0, 6:8, 2:6] = 1  # 8 skin pixels called lesion (false positives)
    assert float(loss(_onehot_logits(missed), truth)) > float(loss(_onehot_logits(extra), truth))


def test_mixed_precision_is_off_on_cpu_and_chosen_on_gpu(monkeypatch):
    assert precision(torch.device("cpu"), "auto") == "off"
    with pytest.warns(UserWarning, match="CUDA only"):
        assert precision(torch.device("cpu"), "fp16") == "off"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert precision(torch.device("cuda"), "auto") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert precision(torch.device("cuda"), "auto") == "fp16"
    assert precision(torch.device("cuda"), "off") == "off"


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"train": {"cv_folds": 1}}, "cv_folds=1 is not cross-validation"),
        ({"train": {"progressive_resizing": [1.0, 0.5]}}, "increasing size factors"),
        ({"train": {"progressive_resizing": [0.5]}}, "ending with 1.0"),
        ({"train": {"full_data": True, "early_stopping": 2}}, "full_data trains without a validation split"),
        ({"task": "detection", "train": {"mixup": 0.4}}, "not available for detection"),
        ({"task": "segmentation", "train": {"oversample": True}}, "no class to balance"),
        ({"data": {"wl_train": []}, "train": {"weak_labels": "self_train"}}, "needs weakly labelled datasets"),
        ({"train": {"launcher": "slurm"}}, "train.launcher"),
        ({"train": {"nrepeats": 0}}, "train.nrepeats"),
        ({"segmentation": {"loss": "tversky"}}, "segmentation.loss"),
    ],
)
def test_invalid_procedure_params(raw, message):
    with pytest.raises(ParamsError, match=message):
        params_from_dict(raw)
