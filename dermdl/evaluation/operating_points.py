"""Binary decisions from class probabilities: grouped AUC and operating points chosen on validation data.

Why: a dermatologist's decision is binary (excise or refer, or not), usually over a group of classes
(malignant = melanoma, basal cell carcinoma, actinic keratosis). The threshold that reaches a target
sensitivity is chosen on the validation split, never on a test set (a threshold tuned on the test set
reports the sensitivity it was tuned to, not the one a clinic would see); the test set then reports the
sensitivity, specificity, PPV and NPV that threshold really gives, with CIs.

Every statistic is computed from per-sample multiplicities (B, n), so point values (all ones) and
bootstrap CIs (image or cluster resamples) come from the same code.
"""

from __future__ import annotations

import math

import numpy as np

OPERATING_METRICS = ("sensitivity", "specificity", "ppv", "npv")


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def binary_auc(positive: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted Mann-Whitney AUC (ties count one half) for each row of ``weights`` (B, n) -> (B,)."""
    order = np.argsort(score, kind="stable")
    s = np.asarray(score, dtype=np.float64)[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    w = np.asarray(weights, dtype=np.float64)[:, order]
    is_pos = np.asarray(positive, dtype=np.float64)[order]
    pos_g = np.add.reduceat(w * is_pos, starts, axis=1)
    neg_g = np.add.reduceat(w, starts, axis=1) - pos_g
    neg_below = np.cumsum(neg_g, axis=1) - neg_g
    return _divide((pos_g * (neg_below + 0.5 * neg_g)).sum(axis=1), pos_g.sum(axis=1) * neg_g.sum(axis=1))


def threshold_for_sensitivity(positive: np.ndarray, score: np.ndarray, target: float) -> float | None:
    """The highest threshold t with sensitivity (share of positives scoring >= t) of at least ``target``;
    None without positives. Higher thresholds refer fewer patients, so the highest one that still
    reaches the target is the most specific."""
    scores = np.sort(np.asarray(score, dtype=np.float64)[np.asarray(positive, dtype=bool)])[::-1]
    if scores.size == 0:
        return None
    needed = max(1, math.ceil(target * scores.size - 1e-9))
    return float(scores[needed - 1])


def operating_resamples(positive: np.ndarray, score: np.ndarray, threshold: float, weights: np.ndarray) -> dict:
    """Sensitivity, specificity, PPV and NPV at ``threshold`` for each row of ``weights`` -> arrays (B,)."""
    pos = np.asarray(positive, dtype=bool)
    referred = np.asarray(score, dtype=np.float64) >= threshold
    w = np.asarray(weights, dtype=np.float64)
    tp, fp = w @ (pos & referred), w @ (~pos & referred)
    fn, tn = w @ (pos & ~referred), w @ (~pos & ~referred)
    return {
        "sensitivity": _divide(tp, tp + fn),
        "specificity": _divide(tn, tn + fp),
        "ppv": _divide(tp, tp + fp),
        "npv": _divide(tn, tn + fn),
    }


def group_score(probs: np.ndarray, members: list[int]) -> np.ndarray:
    """P(the image belongs to any class of the group): the sum of the members' probabilities."""
    return np.asarray(probs, dtype=np.float64)[:, members].sum(axis=1)
