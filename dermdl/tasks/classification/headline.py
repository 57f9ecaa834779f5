"""Classification's headline numbers for ``metrics.json`` (``dvc exp show``); everything else stays in
report.json. Balanced accuracy and macro AUC rank models on imbalanced classes, accuracy is what
readers expect, ECE says whether the probabilities in the predictions can be read as risks; each class
group of ``analyze.class_groups`` adds the numbers of its binary decision."""

from __future__ import annotations

from dermdl.headline import Headline, value

#: A class group's numbers: AUC, and sensitivity/specificity at its validation operating point.
GROUP_METRICS = ("auc", "sensitivity", "specificity")


def headline(metrics: dict) -> Headline:
    calibration = metrics.get("calibration") or {}
    reported = calibration.get(calibration.get("reported") or "") or {}  # the probabilities predictions hold
    out: Headline = {
        "balanced_accuracy": value(metrics["overall"]["balanced_accuracy"]),
        "macro_auc": value(metrics["macro"]["auc"]),
        "accuracy": value(metrics["overall"]["accuracy"]),
        "ece": value(reported.get("ece")),
    }
    groups = (metrics.get("operating_points") or {}).get("groups") or {}
    for group, row in groups.items():
        if group in out:
            raise ValueError(
                f"analyze.class_groups: the group name {group!r} is also a headline metric; rename the group"
            )
        out[group] = {name: value(row.get(name)) for name in GROUP_METRICS}
    return out
