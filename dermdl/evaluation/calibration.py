"""Calibration of class probabilities: expected calibration error, Brier score, reliability diagram data,
and temperature scaling.

Why it matters clinically: a reader acts on "melanoma 0.92" differently from "0.55"; a network trained
with cross-entropy is usually over-confident, so its probabilities need checking (ECE, reliability
diagram) and fixing (one temperature fitted on the validation split: Guo et al. 2017, "On calibration of
modern neural networks"). Temperature scaling never changes which class is predicted.

Conventions: top-label ECE over ``bins`` equal-width confidence bins (the confidence is the largest
probability), the multi-class Brier score (mean over images of the squared distance between the
probability vector and the one-hot truth; 0 = perfect, 2 = worst) and the log loss. All are computed from per-sample
multiplicities, so point values and bootstrap CIs (image or cluster resamples) come from the same code.
"""

from __future__ import annotations

import math

import numpy as np

_EPS = 1e-12
TEMPERATURE_BOUNDS = (0.05, 20.0)  # outside these a fit means broken validation data, not calibration


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): the calibrated probabilities (T = 1 returns ``probs``, renormalised).

    Working from probabilities rather than logits lets the same scaling follow test-time augmentation,
    which averages probabilities over views."""
    logp = np.log(np.clip(np.asarray(probs, dtype=np.float64), _EPS, None)) / float(temperature)
    logp -= logp.max(axis=1, keepdims=True)
    out = np.exp(logp)
    return out / out.sum(axis=1, keepdims=True)


def rescale(probs: np.ndarray, applied: float, wanted: float) -> np.ndarray:
    """Probabilities that were scaled with temperature ``applied``, re-expressed at ``wanted``
    (``applied = T, wanted = 1`` undoes the scaling): softmax(log p · applied / wanted)."""
    return apply_temperature(probs, wanted / applied)


def negative_log_likelihood(probs: np.ndarray, y_true: np.ndarray) -> float:
    p = np.asarray(probs, dtype=np.float64)[np.arange(len(y_true)), np.asarray(y_true)]
    return float(-np.log(np.clip(p, _EPS, None)).mean())


def fit_temperature(probs: np.ndarray, y_true: np.ndarray) -> float:
    """The temperature that minimises the validation negative log-likelihood (a convex problem in
    1/T; bounded search over log T)."""
    from scipy.optimize import minimize_scalar

    y = np.asarray(y_true, dtype=np.int64)
    if len(y) == 0:
        raise ValueError("cannot fit a temperature on an empty validation split")
    lo, hi = (math.log(b) for b in TEMPERATURE_BOUNDS)
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(apply_temperature(probs, math.exp(log_t)), y),
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": 1e-5},
    )
    return float(math.exp(result.x))


def _bin_index(confidence: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width bins over [0, 1]; a confidence of exactly 1 falls in the last bin."""
    return np.minimum((np.asarray(confidence) * bins).astype(np.int64), bins - 1)


def calibration_resamples(probs: np.ndarray, y_true: np.ndarray, weights: np.ndarray, bins: int) -> dict:
    """ECE, Brier score and negative log-likelihood for each row of per-sample multiplicities ``weights``
    (B, n) -> arrays (B,)."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y_true, dtype=np.int64)
    w = np.asarray(weights, dtype=np.float64)
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    onehot = np.zeros((len(y), bins))
    onehot[np.arange(len(y)), _bin_index(confidence, bins)] = 1.0
    total = w.sum(axis=1)
    gap = w @ (onehot * (correct - confidence)[:, None])  # (B, bins): sum of (accuracy - confidence)
    truth = np.zeros_like(p)
    truth[np.arange(len(y)), y] = 1.0
    brier = ((p - truth) ** 2).sum(axis=1)
    nll = -np.log(np.clip(p[np.arange(len(y)), y], _EPS, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"ece": np.abs(gap).sum(axis=1) / total, "brier": (w @ brier) / total, "nll": (w @ nll) / total}


def reliability_points(probs: np.ndarray, y_true: np.ndarray, bins: int) -> list[dict[str, float]]:
    """One record per non-empty confidence bin (DVC plot data and the diagram): mean confidence,
    observed accuracy, image count."""
    p = np.asarray(probs, dtype=np.float64)
    confidence = p.max(axis=1)
    correct = p.argmax(axis=1) == np.asarray(y_true)
    index = _bin_index(confidence, bins)
    out = []
    for b in range(bins):
        chosen = index == b
        if chosen.any():
            out.append(
                {
                    "bin": (b + 0.5) / bins,
                    "confidence": float(confidence[chosen].mean()),
                    "accuracy": float(correct[chosen].mean()),
                    "count": int(chosen.sum()),
                }
            )
    return out
