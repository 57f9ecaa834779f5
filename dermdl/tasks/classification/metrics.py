"""Classification metrics with bootstrap confidence intervals and a text table.

Why bootstrap CIs: dermatology test sets are small and imbalanced (a few dozen melanomas), so a
point estimate alone overstates certainty. Every metric is reported as value plus a seeded
percentile CI over resampled test samples.

Why vectorised: the naive approach (sklearn per resample) costs seconds to minutes per stage. Here
each resample is represented by per-sample multiplicities, so confusion matrices come from one
``bincount`` and one-vs-rest AUCs from a weighted Mann-Whitney statistic over all resamples at once.
The exact same code computes the point estimate (all multiplicities 1), so point and CI can't drift.

Output is JSON-safe: an undefined metric (no positives, class never predicted, ...) is ``None``,
never NaN, so ``json.dumps(..., allow_nan=False)`` and DVC metrics files work.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dermdl.bootstrap import bootstrap_indices, format_value, group_weights, with_ci

__all__ = [
    "CLASS_METRICS",
    "LABELS",
    "OVERALL_METRICS",
    "classification_metrics",
    "format_table",
    "resample_metrics",
]

#: Per-class (one-vs-rest) metric keys, in display order; "macro" uses the same keys.
CLASS_METRICS: tuple[str, ...] = ("precision", "recall", "specificity", "f1", "npv", "auc")
#: Whole-dataset metric keys.
OVERALL_METRICS: tuple[str, ...] = ("accuracy", "balanced_accuracy")
#: Human labels used by :func:`format_table` (and the plots).
LABELS: dict[str, str] = {
    "precision": "Precision",
    "recall": "Recall",
    "specificity": "Specificity",
    "f1": "F1",
    "npv": "NPV",
    "auc": "AUC",
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
}

# Bound the (resamples x samples) working arrays to ~32 MB of float64 per chunk.
_CHUNK_ELEMENTS = 4_000_000


def _validate(y_true: Any, probs: Any, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Check shapes/values early so a bad caller gets a clear message, not a numpy traceback."""
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] < 1 or p.shape[1] < 2:
        raise ValueError(f"probs must have shape (n >= 1, k >= 2), got {p.shape}")
    if k is not None and p.shape[1] != k:
        raise ValueError(f"probs has {p.shape[1]} columns but there are {k} classes")
    if y.shape != (p.shape[0],):
        raise ValueError(f"y_true must have shape ({p.shape[0]},), got {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise ValueError("y_true must contain integer class indices")
    y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise ValueError(f"y_true values must be in [0, {p.shape[1]}), got {y.min()}..{y.max()}")
    if not np.all(np.isfinite(p)):
        raise ValueError("probs contains NaN or infinite values")
    return y, p


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num/den with NaN where den == 0 (undefined), without warnings."""
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _nanmean(a: np.ndarray, axis: int) -> np.ndarray:
    """Mean over defined entries (sklearn's ``zero_division=np.nan`` macro); NaN if none, silently."""
    ok = ~np.isnan(a)
    count = ok.sum(axis=axis)
    return _divide(np.where(ok, a, 0.0).sum(axis=axis), count.astype(np.float64))


def _chunk_metrics(
    y: np.ndarray, pred: np.ndarray, probs: np.ndarray, weights: np.ndarray, auc_prep: list
) -> dict[str, np.ndarray]:
    """Metrics for a block of resamples given as per-sample multiplicities ``weights`` (b, n); arrays are
    (b, k) per class or (b,). Multiplicities cover plain and cluster (group) bootstraps alike."""
    b, n = weights.shape
    k = probs.shape[1]
    rows = np.arange(b)[:, None]
    # Confusion matrices of all resamples in one weighted bincount: cell (row, true, pred).
    codes = np.broadcast_to(y * k + pred, (b, n))
    conf = np.bincount((rows * k * k + codes).ravel(), weights=weights.ravel(), minlength=b * k * k)
    conf = conf.reshape(b, k, k)
    total = weights.sum(axis=1)
    tp = np.diagonal(conf, axis1=1, axis2=2)
    actual = conf.sum(axis=2)
    predicted = conf.sum(axis=1)
    fp, fn = predicted - tp, actual - tp
    tn = total[:, None] - tp - fp - fn
    out = {
        "precision": _divide(tp, tp + fp),
        "recall": _divide(tp, tp + fn),
        "specificity": _divide(tn, tn + fp),
        "f1": _divide(2 * tp, 2 * tp + fp + fn),
        "npv": _divide(tn, tn + fn),
        "accuracy": _divide(tp.sum(axis=1), total),
    }
    out["balanced_accuracy"] = _nanmean(out["recall"], axis=1)
    # Multiplicity of each sample in each resample -> weighted Mann-Whitney AUC per class.
    auc = np.empty((b, k))
    for c, (order, starts, is_pos) in enumerate(auc_prep):
        w = weights[:, order]
        pos_g = np.add.reduceat(w * is_pos, starts, axis=1)  # positive weight per tied-score group
        neg_g = np.add.reduceat(w, starts, axis=1) - pos_g
        neg_below = np.cumsum(neg_g, axis=1) - neg_g  # negatives strictly below the group
        num = (pos_g * (neg_below + 0.5 * neg_g)).sum(axis=1)  # ties count one half
        auc[:, c] = _divide(num, pos_g.sum(axis=1) * neg_g.sum(axis=1))
    out["auc"] = auc
    return out


def resample_metrics(
    y_true: Any,
    probs: Any,
    indices: np.ndarray | None = None,
    weights: np.ndarray | None = None,
    macro_over: Sequence[int] | np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """All metrics for each resample — ``indices`` (B, n) drawn samples, or ``weights`` (B, n) per-sample
    multiplicities (a cluster bootstrap); NaN marks undefined values.

    Keys: every name in CLASS_METRICS -> (B, k); ``macro_<name>`` -> (B,); OVERALL_METRICS -> (B,).
    Passing ``np.arange(n)[None]`` gives the point estimate (B = 1). ``macro_over`` restricts the macro
    means to those class columns (None: all classes).
    """
    y, p = _validate(y_true, probs)
    n, k = p.shape
    if weights is None:
        idx = np.asarray(indices, dtype=np.int64)
        if idx.ndim != 2 or (idx.size and (idx.min() < 0 or idx.max() >= n)):
            raise ValueError(f"indices must be a 2-D array of values in [0, {n})")
        if idx.shape[1] != n:
            raise ValueError(f"each resample must have n={n} indices, got {idx.shape[1]}")
        rows = np.arange(len(idx))[:, None]
        weights = np.bincount((rows * n + idx).ravel(), minlength=len(idx) * n).reshape(len(idx), n)
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 2 or weights.shape[1] != n:
        raise ValueError(f"weights must have shape (B, {n}), got {weights.shape}")
    pred = p.argmax(axis=1)
    auc_prep = []
    for c in range(k):  # sort once per class; the resamples only change the weights
        order = np.argsort(p[:, c], kind="stable")
        s = p[order, c]
        starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
        auc_prep.append((order, starts, (y[order] == c).astype(np.float64)))
    step = max(1, _CHUNK_ELEMENTS // n)
    parts = [_chunk_metrics(y, pred, p, weights[i : i + step], auc_prep) for i in range(0, len(weights), step)]
    if not parts:
        parts = [_chunk_metrics(y, pred, p, weights[:0], auc_prep)]
    out = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
    columns = np.arange(k) if macro_over is None else np.asarray(macro_over, dtype=np.int64)
    for name in CLASS_METRICS:
        out[f"macro_{name}"] = _nanmean(out[name][:, columns], axis=1)
    return out


def classification_metrics(
    y_true: Any,
    probs: Any,
    classes: Sequence[str],
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    indices: np.ndarray | None = None,
    groups: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """Metrics dict of the CONTRACTS.md shape; prediction = argmax(probs).

    Macro = unweighted mean over the classes where the metric is defined (sklearn's
    ``zero_division=np.nan`` behaviour), so one never-predicted class doesn't void macro precision.
    Classes with no image in ``y_true`` (an external test set holding a subset of the classes) are
    listed in ``absent_classes`` and left out of every macro, so all macros and the balanced accuracy
    average the same present classes; an absent class's own row keeps what is still defined (its
    precision is 0 when the model predicts it: every such prediction is a false positive).
    ``indices`` overrides the seeded resamples (used to compare against a reference loop). ``groups``
    (lesion/patient id per sample) makes the bootstrap resample groups instead of images.
    """
    classes = [str(c) for c in classes]
    if len(set(classes)) != len(classes):
        raise ValueError(f"class names must be unique, got {classes}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    y, p = _validate(y_true, probs, len(classes))
    n = len(y)
    present = np.unique(y)
    macro_over = None if len(present) == len(classes) else present
    point = resample_metrics(y, p, np.arange(n)[None], macro_over=macro_over)
    if groups is not None:
        if len(groups) != n:
            raise ValueError(f"{len(groups)} group ids for {n} samples")
        boot = resample_metrics(y, p, weights=group_weights(groups, n_boot, seed), macro_over=macro_over)
        unit = {"unit": "group", "n_groups": len(set(map(str, groups)))}
    else:
        idx = bootstrap_indices(n, n_boot, seed) if indices is None else np.asarray(indices)
        boot = resample_metrics(y, p, idx, macro_over=macro_over)
        n_boot, unit = len(idx), {"unit": "image"}
    return {
        "n": int(n),
        "overall": {m: with_ci(point[m][0], boot[m], ci) for m in OVERALL_METRICS},
        "per_class": {
            cls: {m: with_ci(point[m][0, c], boot[m][:, c], ci) for m in CLASS_METRICS} for c, cls in enumerate(classes)
        },
        "macro": {m: with_ci(point[f"macro_{m}"][0], boot[f"macro_{m}"], ci) for m in CLASS_METRICS},
        "absent_classes": [cls for c, cls in enumerate(classes) if c not in set(present.tolist())],
        "bootstrap": {"n_boot": int(n_boot), "ci": float(ci), "seed": int(seed)} | unit,
    }


def _absent_notes(metrics: dict[str, Any]) -> list[str]:
    """What a test set without some classes cannot tell: ``["over K of N classes present (a, b)",
    "<class>: no images in this test set; recall and AUC not defined", ...]``; empty when all are present."""
    absent = metrics.get("absent_classes") or []
    if not absent:
        return []
    classes = list(metrics["per_class"])
    present = [c for c in classes if c not in absent]
    notes = [f"over the {len(present)} of {len(classes)} classes present: {', '.join(present)}"]
    for cls in absent:
        values = metrics["per_class"][cls]
        undefined = [
            LABELS[m] if LABELS[m].isupper() else LABELS[m].lower() for m in CLASS_METRICS if values[m]["value"] is None
        ]
        listed = ", ".join(undefined[:-1]) + " and " + undefined[-1] if len(undefined) > 1 else "".join(undefined)
        note = f"{cls}: no images in this test set; {listed or 'nothing'} not defined"
        if values["precision"]["value"] is not None:
            note += " (precision 0: each image predicted as it is a false positive)"
        notes.append(note)
    return notes


def format_table(metrics: dict[str, Any], title: str = "Classification metrics", digits: int = 2) -> str:
    """Readable report: overall lines, an aligned class x metric grid, then one line per value.

    The per-value lines ("F1 melanoma: 0.81 (0.77-0.85)") are greppable and quotable in papers;
    the grid is for reading at a glance.
    """
    boot = metrics.get("bootstrap", {})
    ci_text = f"{100 * boot['ci']:g}% bootstrap CI, {boot['n_boot']} resamples" if boot else "bootstrap CI"
    if boot.get("unit") == "group":
        ci_text += f" of {boot['n_groups']} lesion/patient groups"
    lines = [title, "=" * len(title), f"n = {metrics['n']} samples; values: point ({ci_text})", ""]
    overall = metrics.get("overall", {})
    width = max(len(LABELS[m]) for m in OVERALL_METRICS) + 1
    lines += [f"{LABELS[m] + ':':<{width}} {format_value(overall.get(m), digits)}" for m in OVERALL_METRICS]
    absent_notes = _absent_notes(metrics)
    if absent_notes:
        lines[-1] += f" ({absent_notes[0]})"

    rows = [(cls, vals) for cls, vals in metrics["per_class"].items()] + [("macro", metrics["macro"])]
    cells = [[format_value(vals.get(m), digits) for m in CLASS_METRICS] for _, vals in rows]
    name_w = max(len("class"), *(len(r[0]) for r in rows))
    col_w = [max(len(LABELS[m]), *(len(row[j]) for row in cells)) for j, m in enumerate(CLASS_METRICS)]
    header = "  ".join([f"{'class':<{name_w}}"] + [f"{LABELS[m]:<{w}}" for m, w in zip(CLASS_METRICS, col_w)])
    header = header.rstrip()
    lines += ["", header, "-" * len(header)]
    for (name, _), row in zip(rows, cells):
        if name == "macro":
            lines.append("-" * len(header))
        lines.append("  ".join([f"{name:<{name_w}}"] + [f"{c:<{w}}" for c, w in zip(row, col_w)]).rstrip())
    if absent_notes:
        lines += ["", f"macro: mean {absent_notes[0]}"] + absent_notes[1:]

    detail = [(f"{LABELS[m]} {name}:", format_value(vals.get(m), digits)) for m in CLASS_METRICS for name, vals in rows]
    label_w = max(len(label) for label, _ in detail)
    lines += ["", "Details:"] + [f"{label:<{label_w}} {value}" for label, value in detail]
    return "\n".join(lines) + "\n"
