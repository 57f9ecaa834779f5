"""Train/validation splits that never touch a test set and keep class proportions."""

from __future__ import annotations

from collections import Counter

from sklearn.model_selection import train_test_split


def stratified_split(records: list[dict], valid_size: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Seeded split of ``sl_train``, stratified by each record's ``stratum`` when the task sets one.

    A stratum too small to split is an error rather than a silently unstratified split.
    """
    if not records or any(r.get("stratum") is None for r in records):
        n_valid = max(1, round(len(records) * valid_size))
        if len(records) - n_valid < 1:
            raise ValueError(f"sl_train: {len(records)} images are too few for train.valid_size={valid_size}")
        train_idx, valid_idx = train_test_split(list(range(len(records))), test_size=n_valid, random_state=seed)
        return [records[i] for i in sorted(train_idx)], [records[i] for i in sorted(valid_idx)]
    counts = Counter(r["stratum"] for r in records)
    too_small = sorted(c for c, n in counts.items() if n < 2)
    if too_small:
        raise ValueError(
            f"sl_train: classes {too_small} have fewer than 2 images, so a stratified validation split is "
            "impossible; add images to them or remove the classes"
        )
    n_valid = max(round(len(records) * valid_size), len(counts))
    if len(records) - n_valid < len(counts):
        raise ValueError(f"sl_train: {len(records)} images are too few for train.valid_size={valid_size}")
    train_idx, valid_idx = train_test_split(
        list(range(len(records))), test_size=n_valid, stratify=[r["stratum"] for r in records], random_state=seed
    )
    return [records[i] for i in sorted(train_idx)], [records[i] for i in sorted(valid_idx)]
