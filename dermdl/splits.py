"""Train/validation splits that never touch a test set and keep class proportions."""

from __future__ import annotations

from collections import Counter

from sklearn.model_selection import train_test_split

from dermdl.records import Record


def _labels_and_groups(records: list[Record]) -> tuple[list, list]:
    labels = [r.get("stratum") or "" for r in records]
    # no group id: its own group; a patch (preprocess.patch_size) without one: its whole image's group
    groups = [r.get("group") or _image_group(r) or f"#image{i}" for i, r in enumerate(records)]
    return labels, groups


def _image_group(record: Record) -> str | None:
    patch = record.get("patch")
    return f"#source:{patch['source']}" if patch else None


def has_groups(records: list[Record]) -> bool:
    """Whether the split must be grouped: lesion/patient ids, or patches of one image."""
    return any(r.get("group") or r.get("patch") for r in records)


def grouped_split(records: list[Record], valid_size: float, seed: int) -> tuple[list[Record], list[Record]]:
    """Validation split that keeps every lesion/patient group on one side (label-stratified)."""
    from dermdl.grouped_split import group_split

    labels, groups = _labels_and_groups(records)
    side = group_split(labels, groups, {"train": 1 - valid_size, "valid": valid_size}, seed)
    train = [r for r, s in zip(records, side) if s == "train"]
    valid = [r for r, s in zip(records, side) if s == "valid"]
    if not train or not valid:
        raise ValueError(f"sl_train: {len(set(groups))} groups are too few for train.valid_size={valid_size}")
    return train, valid


def folds(records: list[Record], k: int, seed: int) -> list[tuple[list[Record], list[Record]]]:
    """k (train, held-out) pairs; every record is held out once; groups never straddle two folds."""
    from dermdl.grouped_split import group_split

    labels, groups = _labels_and_groups(records)
    if len(set(groups)) < k:
        raise ValueError(f"train.cv_folds={k}: sl_train has only {len(set(groups))} images/groups; lower cv_folds")
    assigned = group_split(labels, groups, {f"fold{i}": 1 / k for i in range(k)}, seed)
    out = []
    for i in range(k):
        held = [r for r, a in zip(records, assigned) if a == f"fold{i}"]
        if not held:
            raise ValueError(f"train.cv_folds={k}: fold {i} is empty; lower cv_folds")
        out.append(([r for r, a in zip(records, assigned) if a != f"fold{i}"], held))
    return out


def stratified_split(records: list[Record], valid_size: float, seed: int) -> tuple[list[Record], list[Record]]:
    """Seeded split of ``sl_train``, stratified by each record's ``stratum`` when the task sets one;
    grouped (no lesion/patient on both sides) when records carry a ``group``.

    A stratum too small to split is an error rather than a silently unstratified split.
    """
    if has_groups(records):
        return grouped_split(records, valid_size, seed)
    strata = [s for r in records if (s := r.get("stratum")) is not None]
    if not records or len(strata) < len(records):  # some record has no stratum: an unstratified split
        n_valid = max(1, round(len(records) * valid_size))
        if len(records) - n_valid < 1:
            raise ValueError(f"sl_train: {len(records)} images are too few for train.valid_size={valid_size}")
        train_idx, valid_idx = train_test_split(list(range(len(records))), test_size=n_valid, random_state=seed)
        return [records[i] for i in sorted(train_idx)], [records[i] for i in sorted(valid_idx)]
    counts = Counter(strata)
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
        list(range(len(records))), test_size=n_valid, stratify=strata, random_state=seed
    )
    return [records[i] for i in sorted(train_idx)], [records[i] for i in sorted(valid_idx)]
