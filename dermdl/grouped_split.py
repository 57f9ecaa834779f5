"""Group-aware, label-stratified assignment of items to named datasets (train/test/weak shares).

Why not a per-image split: several images often show the same lesion or patient (HAM10000 has 10,015
images of 7,470 lesions). Splitting images lets one lesion sit in training and test data, and every
test metric then measures memory instead of generalisation. Here a group (lesion or patient id) goes
to exactly one dataset, and the label mix of every dataset stays close to the whole collection's.

Algorithm (deterministic for a given seed, independent of the input order):

1. Groups are ordered by size, largest first; equal sizes in an order drawn from ``seed``.
2. Each group goes to the dataset whose share of the group's labels is least filled relative to its
   target (target = share x label count), i.e. ``sum_l g_l * (count[d, l] + g_l) / target[d, l]``
   is smallest; a dataset that has no item of label ``l`` yet gets a bonus for it, so that every
   label reaches every dataset whenever it has enough groups.

Large groups placed first and small ones filling the gaps is the usual greedy for this bin-packing
like problem (scikit-learn's StratifiedGroupKFold does the same for folds); it keeps each label's
shares within about one group of the target.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np


def group_split(
    labels: Sequence[Hashable], groups: Sequence[Hashable], shares: Mapping[str, float], seed: int = 0
) -> list[str]:
    """Dataset name for every item: items of one group share a dataset, label proportions are kept.

    ``shares`` maps dataset names to fractions summing to 1 (zero-share datasets get nothing).
    """
    if len(labels) != len(groups):
        raise ValueError(f"{len(labels)} labels but {len(groups)} groups")
    names = [n for n, s in shares.items() if s > 0]
    total = sum(shares[n] for n in names)
    if not names or abs(total - 1) > 1e-6 or any(s < 0 for s in shares.values()):
        raise ValueError(f"dataset shares must be >= 0 and sum to 1, got {dict(shares)}")
    if not labels:
        return []
    label_ids = {label: k for k, label in enumerate(sorted(set(labels), key=repr))}
    group_ids = {g: k for k, g in enumerate(sorted(set(groups), key=repr))}
    counts = np.zeros((len(group_ids), len(label_ids)))
    for label, group in zip(labels, groups):
        counts[group_ids[group], label_ids[label]] += 1
    fractions = np.array([shares[n] for n in names])
    target = fractions[:, None] * counts.sum(0)[None, :] + 1e-9  # (datasets, labels)
    filled = np.zeros_like(target)
    rank = np.random.default_rng(seed).permutation(len(group_ids))  # tie order among equal sizes
    order = sorted(range(len(group_ids)), key=lambda g: (-counts[g].sum(), rank[g]))
    assigned = np.empty(len(group_ids), dtype=int)
    for g in order:
        g_counts = counts[g]
        present = g_counts > 0
        cost = ((filled[:, present] + g_counts[present]) / target[:, present] - (filled[:, present] == 0)) @ g_counts[
            present
        ]
        d = int(np.argmin(cost))  # ties: first dataset in ``shares``
        assigned[g] = d
        filled[d] += g_counts
    return [names[assigned[group_ids[group]]] for group in groups]
