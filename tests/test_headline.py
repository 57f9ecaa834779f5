"""metrics.json holds each task's headline point values only; dvclive/metrics.json the final training
loss and validation values (the rest are curves). Checked against hand-built report.json sections."""

from __future__ import annotations

import json
import math

import pytest
import toy_task

from dermdl.headline import headline_metrics, value
from dermdl.runlog import RunLog, in_summary
from dermdl.tasks import get_task


def ci(v: float | None) -> dict:
    """A report.json record whose CI differs from the value, so a CI leaking through would show."""
    return {"value": v, "lo": None if v is None else v - 0.1, "hi": None if v is None else v + 0.1}


def classification_report(reported: str = "after", groups: tuple[str, ...] = ("malignant",)) -> dict:
    per_class = {c: {"auc": ci(a), "recall": ci(0.5)} for c, a in (("melanoma", 0.9), ("nevus", 0.7))}
    point = {"auc": ci(0.75), "threshold": 0.3, "validation": {"sensitivity": 1.0}, "n_positive": 3}
    return {
        "n": 10,
        "overall": {"accuracy": ci(0.8), "balanced_accuracy": ci(0.65)},
        "per_class": per_class,
        "macro": {"auc": ci(0.8), "f1": ci(0.6)},
        "bootstrap": {"n_boot": 1000, "ci": 0.95, "seed": 0, "unit": "image"},
        "calibration": {"bins": 15, "before": {"ece": ci(0.2)}, "after": {"ece": ci(0.05)}, "reported": reported},
        "operating_points": {
            "groups": {g: point | {"sensitivity": ci(0.9), "specificity": ci(None)} for g in groups},
            "per_class": {"melanoma": point},
        },
        "subgroups": None,
    }


@pytest.mark.parametrize(
    ("reported", "groups", "expected"),
    [
        (
            "after",
            ("malignant",),
            {
                "balanced_accuracy": 0.65,
                "macro_auc": 0.8,
                "accuracy": 0.8,
                "ece": 0.05,
                "malignant": {"auc": 0.75, "sensitivity": 0.9, "specificity": None},
            },
        ),
        ("before", (), {"balanced_accuracy": 0.65, "macro_auc": 0.8, "accuracy": 0.8, "ece": 0.2}),
    ],
)
def test_classification_headline(reported, groups, expected):
    """ECE of the probabilities the predictions hold; each class group's decision; nothing else."""
    full = {"sl_test": classification_report(reported, groups), "ext": classification_report(reported, groups)}
    assert headline_metrics(get_task("classification"), full) == {"sl_test": expected, "ext": expected}


def test_a_class_group_named_like_a_headline_metric_is_refused():
    with pytest.raises(ValueError, match="analyze.class_groups: the group name 'accuracy'"):
        headline_metrics(get_task("classification"), {"t": classification_report(groups=("accuracy",))})


def segmentation_report(foreground: tuple[str, ...]) -> dict:
    return {
        "n": 4,
        "overall": {"pixel_accuracy": ci(0.9), "dice_foreground": ci(0.7), "iou_foreground": ci(0.55)},
        "per_class": {c: {"dice": ci(0.7)} for c in ("skin", *foreground)},
        "bootstrap": {"n_boot": 1000, "ci": 0.95, "seed": 0},
        "boundary": {c: {"hd95": ci(3.0 + i), "asd": ci(1.0), "n_images": 4} for i, c in enumerate(foreground)},
    }


@pytest.mark.parametrize(
    ("foreground", "distances"),
    [
        (("lesion",), {"hd95": 3.0}),
        (("lesion", "scale"), {"hd95_lesion": 3.0, "hd95_scale": 4.0}),
        ((), {}),
    ],
)
def test_segmentation_headline(foreground, distances):
    got = headline_metrics(get_task("segmentation"), {"t": segmentation_report(foreground)})
    assert got == {"t": {"dice_foreground": 0.7, "iou_foreground": 0.55} | distances}


def test_detection_headline_is_ap_and_ap50():
    overall = {name: ci(0.1 * i) for i, name in enumerate(("AP", "AP50", "AP75", "AR100"), 1)}
    report = {"n": 3, "overall": overall, "per_category": {"melanoma": {"AP": ci(0.5)}}, "bootstrap": {"seed": 0}}
    assert headline_metrics(get_task("detection"), {"t": report}) == {"t": {"AP": 0.1, "AP50": 0.2}}


def test_a_plugin_without_the_hook_reports_its_overall_section():
    report = {"n": 5, "overall": {"accuracy": ci(0.6), "kappa": ci(None)}, "bootstrap": {"n_boot": 100}}
    assert headline_metrics(toy_task.TASK, {"t": report}) == {"t": {"accuracy": 0.6, "kappa": None}}


class _Hook:
    name = "bad"

    def __init__(self, out):
        self.headline = lambda metrics: out


@pytest.mark.parametrize(
    "out",
    [{"auc": ci(0.5)}, {"auc": [0.5]}, {"auc": float("nan")}, {"n": True}, [0.5], {"a": {"b": {"c": {"d": 1.0}}}}],
)
def test_a_headline_that_is_not_a_small_tree_of_numbers_is_a_plugin_bug(out):
    with pytest.raises(TypeError, match="the bad task's headline hook"):
        headline_metrics(_Hook(out), {"t": {}})


@pytest.mark.parametrize(
    ("entry", "expected"), [(ci(0.3), 0.3), (ci(None), None), (0.25, 0.25), (None, None), (float("nan"), None)]
)
def test_value(entry, expected):
    assert value(entry) == expected


@pytest.mark.parametrize(
    ("key", "kept"),
    [
        ("valid/loss", True),
        ("valid/foreground_dice", True),
        ("train/loss", True),
        ("train/loss_box_reg", False),
        ("lr", False),
        ("frozen", False),
        ("round/sl_test/accuracy", False),
    ],
)
def test_dvclive_summary_keeps_the_final_losses_and_validation_values(tmp_path, key, kept):
    """Every key is still a curve; only the kept ones reach dvclive/metrics.json (`dvc exp show`)."""
    log = RunLog(tmp_path, "run", None)
    for step, v in enumerate((0.5, 0.25)):
        log.log(key, v)
        log.log("valid/other", 1.0 + step)
        log.next_step()
    log.close()
    summary = json.loads((tmp_path / "dvclive" / "metrics.json").read_text())
    node: object = summary
    for part in key.split("/"):
        node = node.get(part) if isinstance(node, dict) else None
    assert in_summary(key) is kept and (node == 0.25 if kept else node is None)
    assert summary["valid"]["other"] == 2.0 and summary["step"] == 1  # step: what a resumed run continues from
    assert not [k for k, v in summary.items() if isinstance(v, dict) and not v]  # no empty group left behind
    curve = (tmp_path / "dvclive" / "plots" / "metrics" / f"{key}.tsv").read_text().splitlines()
    assert [math.isclose(float(row.split("\t")[-1]), v) for row, v in zip(curve[1:], (0.5, 0.25))] == [True, True]
