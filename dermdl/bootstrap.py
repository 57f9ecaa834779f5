"""Bootstrap statistics shared by every task's metrics: resamples, percentile CIs, the value/lo/hi
record and its text form.

Why one module: each task computes its metrics differently (confusion counts, pixel histograms,
COCO evaluations), but a CI must mean the same thing in every report, so the resampling and the
interval live here once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def bootstrap_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """Return ``(n_boot, n)`` sample indices drawn with replacement.

    Exposed separately so tests (and a naive reference loop) can reuse the exact same resamples.
    """
    if n < 1 or n_boot < 0:
        raise ValueError(f"need n >= 1 and n_boot >= 0, got n={n}, n_boot={n_boot}")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def group_weights(groups: Sequence[Any], n_boot: int, seed: int) -> np.ndarray:
    """Cluster bootstrap: ``(n_boot, n)`` multiplicities of the n images when their G groups (lesions,
    patients) are drawn with replacement. Images of one lesion are not independent; resampling the
    lesions gives honest CIs. Same draws as :func:`bootstrap_indices` over the G groups, so n images that
    are k copies of G images give exactly the CIs of those G images."""
    names, codes = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
    drawn = bootstrap_indices(len(names), n_boot, seed)
    counts = np.zeros((n_boot, len(names)))
    np.add.at(counts, (np.arange(n_boot)[:, None], drawn), 1.0)
    return counts[:, codes]


def resample_weights(n: int, n_boot: int, seed: int, groups: Sequence[Any] | None = None) -> np.ndarray:
    """``(n_boot, n)`` per-sample multiplicities: of the images (the draws of :func:`bootstrap_indices`), or
    of their groups when ``groups`` is given (:func:`group_weights`). Every statistic computed from
    multiplicities shares one set of resamples, so all CIs of a report describe the same resamples."""
    if groups is not None:
        return group_weights(groups, n_boot, seed)
    drawn = bootstrap_indices(n, n_boot, seed)
    counts = np.zeros((n_boot, n))
    np.add.at(counts, (np.arange(n_boot)[:, None], drawn), 1.0)
    return counts


def percentile_ci(values: np.ndarray, ci: float = 0.95) -> tuple[float | None, float | None]:
    """Percentile CI over the defined (non-NaN) resample values; (None, None) if there are none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return None, None
    alpha = (1.0 - ci) / 2.0
    lo, hi = np.percentile(v, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return float(lo), float(hi)


def with_ci(value: float, boot: np.ndarray, ci: float) -> dict[str, float | None]:
    """The JSON record of one metric: NaN (undefined) becomes None so metrics files stay valid JSON."""
    lo, hi = percentile_ci(boot, ci)
    return {"value": None if math.isnan(value) else float(value), "lo": lo, "hi": hi}


def point_values(tree: Any) -> Any:
    """Strip CIs for ``dvc metrics``/``exp show`` (the CIs stay in report.json)."""
    if isinstance(tree, dict):
        if set(tree) >= {"value", "lo", "hi"}:
            return tree["value"]
        return {key: point_values(value) for key, value in tree.items()}
    return tree


def format_value(m: dict[str, float | None] | float | None, digits: int = 2) -> str:
    """'0.81 (0.77-0.85)' for a value with CI, '0.81' for a bare number; 'n/a' for undefined values,
    so no table ever shows 'nan'. Shared by every task's summary table."""
    if m is None or (isinstance(m, dict) and m.get("value") is None):
        return "n/a"
    if not isinstance(m, dict):
        return f"{m:.{digits}f}"
    text = f"{m['value']:.{digits}f}"
    if m.get("lo") is not None and m.get("hi") is not None:
        text += f" ({m['lo']:.{digits}f}-{m['hi']:.{digits}f})"
    return text
