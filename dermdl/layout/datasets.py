"""Root and dataset-folder checks shared by every folder-based layout (each task's ``layout.py``).

Why shared: every layout starts the same way (does the root exist, is each dataset name one folder
inside it, can it be listed), and the messages a user sees for those mistakes should not depend on
the task.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from dermdl.images import is_ignored
from dermdl.layout.report import Report


def list_entries(folder: Path, report: Report) -> list[Path] | None:
    """Non-ignored entries of a folder, sorted by name; None (and a problem) if unreadable."""
    try:
        children = list(folder.iterdir())
    except OSError as exc:
        report.add(
            folder,
            f"cannot list the folder ({exc.strerror or exc})",
            "check that it exists and that you have permission to read it",
        )
        return None
    return sorted((c for c in children if not is_ignored(c)), key=lambda c: c.name)


def _check_dataset_names(root: Path, datasets: list[str], report: Report) -> list[str]:
    """Report duplicated or malformed dataset names; return the usable names, order kept."""
    counts = Counter(datasets)
    for name, count in counts.items():
        if count > 1:
            report.add(root / name, f"dataset '{name}' is listed {count} times", "list each dataset only once")
    usable: list[str] = []
    for name in counts:
        if not name or name in (".", "..") or "/" in name or "\\" in name or os.sep in name:
            report.add(
                root / name,
                f"dataset name {name!r} is not a single folder name",
                f"use the name of a folder directly inside {root}",
            )
        else:
            usable.append(name)
    return usable


def dataset_dirs(root: Path, datasets: list[str], report: Report, how_to_create: str) -> list[tuple[str, Path]] | None:
    """Root and dataset-folder checks shared by the folder-based layouts.

    Returns ``(name, folder)`` for each usable dataset, or None when the root itself is unusable;
    ``how_to_create`` (with ``{dir}``) tells the user what a dataset folder must contain.
    """
    if not root.exists():
        report.add(
            root,
            "data root folder does not exist",
            "check the path (data.root in params.yaml, or the --data option) or create the folder",
        )
        return None
    if not root.is_dir():
        report.add(root, "data root is a file, not a folder", "pass the folder that holds the datasets")
        return None
    found = []
    for name in _check_dataset_names(root, list(datasets), report):
        ds_dir = root / name
        if not ds_dir.is_dir():
            what = "is a file, not a folder" if ds_dir.exists() else "does not exist"
            report.add(
                ds_dir,
                f"dataset folder '{name}' {what}",
                f"{how_to_create.format(dir=ds_dir)}, or remove '{name}' from the dataset list",
            )
            continue
        found.append((name, ds_dir))
    return found
