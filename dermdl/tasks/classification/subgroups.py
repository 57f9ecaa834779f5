"""Classification subgroups: balanced accuracy, macro AUC and accuracy per metadata subgroup.

Why these three: balanced accuracy and macro AUC are the headline numbers of an imbalanced dermatology
test set; accuracy is what a reader compares with other papers. The subgroup arithmetic, table and plots
are the task-independent ones of :mod:`dermdl.evaluation.subgroups`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dermdl.bootstrap import resample_weights, with_ci
from dermdl.evaluation.operating_points import group_score, operating_resamples
from dermdl.tasks.classification.metrics import classification_metrics
from dermdl.tasks.classification.predictions_csv import TestPredictions


def subgroups_section(
    test: TestPredictions, all_params: Any, plots_dir: Path, decisions: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """``metrics["subgroups"]`` for one test set; None when analyze.subgroups is empty. The bootstrap
    resamples lesions/patients within a subgroup when the test set's group ids are known. ``decisions``
    (the operating-points section's class groups) adds each group's sensitivity and specificity at its
    validation-chosen threshold: the same threshold everywhere, as a clinic would use it."""
    from dermdl.evaluation.metadata import read_metadata
    from dermdl.evaluation.subgroups import subgroup_section

    params = all_params.analyze
    if not params.subgroups:
        return None
    metadata = read_metadata(all_params, list(test.frame["path"]), params.subgroups)

    def metrics_of(index: np.ndarray) -> dict[str, dict[str, float | None]]:
        groups = None if test.groups is None else [test.groups[i] for i in index]
        m = classification_metrics(
            test.y_true[index],
            test.probs[index],
            test.classes,
            n_boot=params.n_boot,
            ci=params.ci,
            seed=params.seed,
            groups=groups,
        )
        out = {
            "balanced_accuracy": m["overall"]["balanced_accuracy"],
            "macro_auc": m["macro"]["auc"],
            "accuracy": m["overall"]["accuracy"],
        }
        weights = resample_weights(len(index), params.n_boot, params.seed, groups)
        for name, decision in (decisions or {}).items():
            if decision.get("threshold") is None:
                continue
            members = [test.classes.index(c) for c in decision["classes"]]
            positive = np.isin(test.y_true[index], members)
            score = group_score(test.probs[index], members)
            point = operating_resamples(positive, score, decision["threshold"], np.ones((1, len(index))))
            boot = operating_resamples(positive, score, decision["threshold"], weights)
            for key in ("sensitivity", "specificity"):
                out[f"{name}_{key}"] = with_ci(point[key][0], boot[key], params.ci)
        return out

    return subgroup_section(metadata, params.bands, metrics_of, test.name, plots_dir)
