"""Leak check: training vs test pairing, the Leak/LeakCheck report and the CLI-facing functions."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dermdl.images import ImageError
from dermdl.layout.report import Report, Severity
from dermdl.leaks.groups import VARIANT_NAMES, Groups, dataset_images, detect_task, image_folder
from dermdl.leaks.hashes import Fingerprint, fingerprints
from dermdl.leaks.tuning import KINDS, NEAR_COLOUR, NEAR_NCC, NEAR_NCC_SAME_COLOUR, SAME_COLOUR
from dermdl.leaks.verify import near_duplicates

# --- the check -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Leak:
    """One training/test pair that is not independent."""

    kind: str  # exact | near | group
    train: str  # path of the training image
    test: str  # path of the test image
    train_dataset: str
    test_dataset: str
    distance: float | None  # exact 0.0; near 1 - structural correlation; group None
    group: str | None = None  # the shared group id, when both images have the same group
    detail: dict[str, Any] | None = None  # near: ncc, colour difference, flip/rotation, scale

    def what(self) -> str:
        if self.kind == "exact":
            text = "identical files (same SHA-256)"
        elif self.kind == "near":
            d = self.detail or {}
            text = (
                f"near duplicate, distance {self.distance:.3f} (structure correlation {d.get('ncc')}, "
                f"colour difference {d.get('colour')}/255, test image {d.get('transform')}, scale {d.get('scale')})"
            )
        else:
            text = f"same group '{self.group}'"
        return text + (f", also same group '{self.group}'" if self.group and self.kind != "group" else "")

    def line(self) -> str:
        return (
            f"LEAK {self.kind} {self.train_dataset} -> {self.test_dataset}: {self.train} ~ {self.test}: {self.what()}"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LeakCheck:
    """Every leak found, the problems to report (per exact/near pair, per shared group) and counts."""

    leaks: list[Leak] = field(default_factory=list)
    report: Report = field(default_factory=Report)  # every problem: leaks, and the notes below
    notes: Report = field(default_factory=Report)  # problems that are not leaks (unreadable image ...)
    summary: dict[str, Any] = field(default_factory=dict)

    def lines(self) -> list[str]:
        return [leak.line() for leak in self.leaks]

    def to_dict(self, problems: bool = True) -> dict[str, Any]:
        out = self.summary | {"leaks": [leak.to_dict() for leak in self.leaks]}
        return out | {"problems": self.report.to_dict()["problems"]} if problems else out


_ALLOW = "or, if you accept it, set data.allow_leaks: true (or pass --allow-leaks)"


def find_leaks(
    train: Sequence[tuple[str, Path]],
    test: Sequence[tuple[str, Path]],
    root: str | os.PathLike = ".",
    groups: Groups | None = None,
    workers: int = 2,
    allow: bool = False,
    report_unreadable: bool = True,
) -> LeakCheck:
    """Compare every training image with every test image: exact, near duplicates and shared groups.

    ``train``/``test`` are (dataset, path) pairs. Leaks are errors in the returned report unless ``allow``
    (then warnings). Unreadable images are skipped (a warning each when ``report_unreadable``).
    """
    import time

    started = time.perf_counter()
    root = Path(root)
    severity: Severity = "warning" if allow else "error"
    check = LeakCheck()
    paths = [p for _, p in train] + [p for _, p in test]
    prints = fingerprints(paths, workers)
    usable_tr: list[tuple[tuple[str, Path], Fingerprint]] = []
    usable_te: list[tuple[tuple[str, Path], Fingerprint]] = []
    for k, (item, fp) in enumerate(zip(list(train) + list(test), prints)):
        if isinstance(fp, ImageError):
            if report_unreadable:
                check.notes.add_problem(
                    check.report.add(fp.path, f"not checked for leaks: {fp.problem}", fp.fix, "warning")
                )
            continue
        (usable_tr if k < len(train) else usable_te).append((item, fp))

    def gid(path: Path) -> str | None:
        return groups.get(path, root) if groups is not None else None

    found: dict[tuple[int, int], Leak] = {}
    # exact duplicates: equal SHA-256
    by_hash: dict[str, list[int]] = {}
    for i, (_, fp) in enumerate(usable_tr):
        by_hash.setdefault(fp.sha256, []).append(i)
    for j, ((ds_te, p_te), fp) in enumerate(usable_te):
        for i in by_hash.get(fp.sha256, []):
            (ds_tr, p_tr), _ = usable_tr[i]
            g = gid(p_tr)
            found[(i, j)] = Leak("exact", str(p_tr), str(p_te), ds_tr, ds_te, 0.0, g if g and g == gid(p_te) else None)
    # near duplicates
    for i, j, match in near_duplicates([fp for _, fp in usable_tr], [fp for _, fp in usable_te], workers):
        if (i, j) in found:
            continue
        (ds_tr, p_tr), _ = usable_tr[i]
        (ds_te, p_te), _ = usable_te[j]
        g = gid(p_tr)
        detail = {
            "ncc": match.ncc,
            "colour": match.colour,
            "transform": VARIANT_NAMES[match.variant],
            "scale": match.scale,
        }
        found[(i, j)] = Leak(
            "near",
            str(p_tr),
            str(p_te),
            ds_tr,
            ds_te,
            round(1 - match.ncc, 4),
            g if g and g == gid(p_te) else None,
            detail,
        )
    for _pair, leak in sorted(found.items()):
        check.leaks.append(leak)
        check.report.add(
            leak.test,
            f"{leak.kind} duplicate of training image {leak.train}: {leak.what()}",
            f"remove one of the two images or move them into the same dataset, {_ALLOW}",
            severity,
        )
    # shared groups
    shared = 0
    if groups is not None:
        members_tr: dict[str, list[tuple[str, Path]]] = {}
        for (ds, p), _ in usable_tr:
            g = gid(p)
            if g is not None:
                members_tr.setdefault(g, []).append((ds, p))
        members_te: dict[str, list[tuple[str, Path]]] = {}
        for (ds, p), _ in usable_te:
            g = gid(p)
            if g is not None and g in members_tr:
                members_te.setdefault(g, []).append((ds, p))
        for g in sorted(members_te):
            shared += 1
            for ds_tr, p_tr in members_tr[g]:
                for ds_te, p_te in members_te[g]:
                    check.leaks.append(Leak("group", str(p_tr), str(p_te), ds_tr, ds_te, None, g))
            tr_sets = sorted({d for d, _ in members_tr[g]})
            te_sets = sorted({d for d, _ in members_te[g]})
            check.report.add(
                members_te[g][0][1],
                f"group '{g}' (same lesion/patient) is in training data ({len(members_tr[g])} image(s) in "
                f"{', '.join(tr_sets)}, e.g. {members_tr[g][0][1]}) and in test data ({len(members_te[g])} image(s) "
                f"in {', '.join(te_sets)})",
                f"split by group so that each lesion/patient is in one dataset only (dermdl import does), {_ALLOW}",
                severity,
            )
    counts = {kind: sum(1 for leak in check.leaks if leak.kind == kind) for kind in KINDS}
    check.summary = {
        "root": str(root),
        "train_images": len(usable_tr),
        "test_images": len(usable_te),
        "unreadable": len(paths) - len(usable_tr) - len(usable_te),
        "groups_file": groups.source if groups is not None else None,
        "shared_groups": shared,
        "counts": counts,
        "allowed": allow,
        "seconds": round(time.perf_counter() - started, 2),
        "thresholds": {
            "near_ncc": NEAR_NCC,
            "near_colour": NEAR_COLOUR,
            "same_colour": SAME_COLOUR,
            "near_ncc_same_colour": NEAR_NCC_SAME_COLOUR,
        },
    }
    return check


def check_layout(
    root: str | os.PathLike,
    task: str | None,
    train_sets: Sequence[str],
    test_sets: Sequence[str],
    groups: str | os.PathLike | None = None,
    workers: int = 2,
    allow: bool = False,
    report_missing: bool = True,
) -> LeakCheck:
    """Leak check of a layout root: images of the named training vs test datasets.

    ``task`` None guesses the layout; ``groups`` None uses ``<root>/groups.csv`` when it exists.
    """
    root = Path(root)
    task = task or detect_task(root, [*train_sets, *test_sets])
    problems = Report()
    for name in sorted(set(train_sets) & set(test_sets)):
        problems.add(
            root / name,
            f"dataset '{name}' is named as training AND test data",
            "a test set must never be trained on: remove it from one of the two lists",
        )
    test_sets = [name for name in test_sets if name not in set(train_sets)]
    sides: list[list[tuple[str, Path]]] = [[], []]
    for side, names in enumerate((train_sets, test_sets)):
        for name in dict.fromkeys(names):
            images = dataset_images(root, task, name)
            if images is None:
                if report_missing:
                    folder = image_folder(root, task, name).as_posix()
                    problems.add(
                        folder,
                        f"dataset '{name}' has no image folder (layout: {task})",
                        "check the data root and the dataset names",
                    )
                continue
            sides[side] += [(name, p) for p in images]
    group_file = Path(groups) if groups else (root / "groups.csv")
    table = Groups.read(group_file, problems) if (groups or group_file.is_file()) else None
    check = find_leaks(sides[0], sides[1], root, table, workers, allow, report_unreadable=report_missing)
    check.report.problems[:0] = problems.problems
    check.notes.problems[:0] = problems.problems
    check.summary |= {"task": task, "train": list(dict.fromkeys(train_sets)), "test": list(dict.fromkeys(test_sets))}
    return check


def check_params(params: Any, report_missing: bool = False, workers: int | None = None) -> LeakCheck:
    """The leak check ``validate-layout`` runs: training = wl_train + sl_train, test = sl_tests."""
    data = params.data
    return check_layout(
        data.root,
        params.task,
        [*data.wl_train, *data.sl_train],
        list(data.sl_tests),
        groups=data.groups,
        workers=workers or default_workers(),
        allow=data.allow_leaks,
        report_missing=report_missing,
    )


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def print_check(check: LeakCheck, stream=sys.stderr) -> None:
    for line in check.lines():
        print(line, file=stream)
    c = check.summary.get("counts", {})
    print(
        f"check-leaks: {check.summary.get('train_images', 0)} training vs {check.summary.get('test_images', 0)} test "
        f"images: {c.get('exact', 0)} exact, {c.get('near', 0)} near-duplicate, {c.get('group', 0)} same-group "
        f"pair(s) ({check.summary.get('shared_groups', 0)} shared group(s)) in {check.summary.get('seconds', 0)} s"
        + (" (allowed)" if check.summary.get("allowed") and check.leaks else "")
    )


def run_cli(args: Any, params: Any, overrides: dict[str, Any]) -> int:
    """``dermdl check-leaks`` (arguments: see dermdl/cli.py): exit 1 when leaks or other errors are found."""
    from dermdl.io import atomic_write_json
    from dermdl.params import params_from_dict

    if params is None:  # outside a project: defaults, plus -S overrides
        params = params_from_dict({})
        params = params.override(overrides) if overrides else params
    data = params.data
    check = check_layout(
        args.root or data.root,
        args.task or (None if args.root else params.task),
        args.train or [*data.wl_train, *data.sl_train],
        args.test or list(data.sl_tests),
        groups=args.groups or data.groups,
        workers=args.workers or default_workers(),
        allow=args.allow_leaks or data.allow_leaks,
    )
    out = Path(args.json) if args.json else params.out / "check-leaks" / "leaks.json"
    atomic_write_json(out, check.to_dict())
    for line in check.notes.lines():
        print(line, file=sys.stderr)
    print_check(check, sys.stdout)
    print(f"check-leaks: report written to {out}")
    return 0 if check.report.ok else 1
