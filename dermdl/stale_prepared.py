"""Refuse to train or predict on prepared data built from another data root or with other settings.

Why: ``dermdl train --data OTHER`` (or a changed ``data.root``) used to train silently on the images the
last preprocess prepared from the OLD root. The manifest records what it was built from; train and infer
compare that with the current params and stop with one line that says to re-run preprocess.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dermdl.errors import StageError
from dermdl.params import Params


def _same_root(recorded: str, current: str) -> bool:
    """Both resolved from the working directory, as preprocess resolved its root (a relative root stays
    valid when DVC runs the stage in a copy of the workspace)."""
    return Path(recorded).resolve() == Path(current).resolve()


def check_prepared(params: Params, manifest: dict[str, Any]) -> None:
    """StageError naming what differs when ``manifest`` (prepared/manifest.json) does not match ``params``."""
    current = {
        "data.root": params.data.root,
        "task": params.task,
        "preprocess.size": params.preprocess.size,
        "preprocess.resize": params.preprocess.resize,
    }
    recorded = {
        "data.root": manifest.get("source_root"),
        "task": manifest.get("task"),
        "preprocess.size": manifest.get("size"),
        "preprocess.resize": manifest.get("resize"),
    }
    differ = []
    for key, value in current.items():
        old = recorded[key]
        if old is None:
            continue  # an older manifest without the field: nothing to compare
        same = _same_root(str(old), str(value)) if key == "data.root" else old == value
        if not same:
            differ.append(f"{key} {old!r} (now {value!r})")
    if differ:
        where = params.out / "prepared"
        raise StageError(
            f"{where} was prepared with {', '.join(differ)}; re-run preprocess for these params "
            "(`dermdl preprocess` with the same --params/--set, or `dvc repro`)"
        )
