"""``prepared/manifest.json``: what the preprocess stage's output depends on, and reading it back.

Why a module of its own: preprocess writes the manifest, while train, infer, explanations and the benchmarks
read it; they share one definition of its file name, of the fingerprint that tells preprocess there is
nothing to redo (the settings that shape the arrays and every source file's identity), and of the typed
records that :func:`load_manifest` hands on. The datasets it covers are every dataset named in params.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

from dermdl.errors import StageError
from dermdl.params import Params
from dermdl.records import Record
from dermdl.tasks import get_task

MANIFEST = "manifest.json"


def _roles(params: Params) -> dict[str, tuple[str, ...]]:
    data = params.data
    return {"wl_train": data.wl_train, "sl_train": data.sl_train, "sl_tests": data.sl_tests}


def _all_datasets(params: Params) -> list[str]:
    names: list[str] = []
    for group in _roles(params).values():
        names += [n for n in group if n not in names]
    return names


def _fingerprint(params: Params, items: list) -> str:
    """What the prepared data depends on: the settings that shape it and every source file's identity
    (path, size, modification time; a mask or annotation target too). Equal = nothing to redo."""
    import hashlib

    from dermdl.arrays import FORMAT

    settings = {
        "format": FORMAT,
        "task": params.task,
        "root": str(Path(params.data.root).resolve()),
        "datasets": _all_datasets(params),
        "size": params.preprocess.size,
        "resize": params.preprocess.resize,
        "color_constancy": params.preprocess.color_constancy,
    } | get_task(params.task).prepare_settings(params)
    if params.preprocess.patch_size:  # absent when off: whole-image fingerprints stay as they were
        settings["patches"] = _patch_settings(params)
    if params.data.encrypted:  # clear and encrypted arrays differ on disk (key unchanged: same fingerprint)
        settings["encrypted"] = True
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for item in items:
        digest.update(
            f"{item.dataset}|{item.path}|{_file_identity(item.path)}|{item.target}|"
            f"{_file_identity(item.target)}\n".encode()
        )
    return digest.hexdigest()


def _patch_settings(params: Params) -> list:
    pre = params.preprocess
    return [pre.patch_size, pre.patch_overlap, pre.patch_min_visible]


def _file_identity(value: Any) -> str:
    """Size and modification time when ``value`` names a file (a mask), else empty (a class name, a
    detection annotation: hashed as text)."""
    if not isinstance(value, (str, Path)) or (isinstance(value, str) and (len(value) > 4096 or "\n" in value)):
        return ""
    try:
        stat = Path(value).stat()
    except (OSError, ValueError):
        return ""
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def load_manifest(params: Params) -> dict[str, Any]:
    path = params.out / "prepared" / MANIFEST
    if not path.is_file():
        raise StageError(f"{path}: missing; run the preprocess stage first (`dvc repro preprocess`)")
    from dermdl.arrays import arrays_dir

    manifest = json.loads(path.read_text(encoding="utf-8"))
    # the JSON boundary: preprocess wrote these records (dermdl.records.Record); typed from here on
    datasets = cast(dict[str, list[Record]], manifest["datasets"])
    for dataset, records in datasets.items():
        arrays = str(arrays_dir(path.parent, dataset))
        for record in records:
            if "row" not in record:
                raise StageError(
                    f"{path}: prepared by an older dermdl (no image arrays); "
                    "re-run the preprocess stage (`dvc repro preprocess`)"
                )
            record["dataset"] = dataset
            record["arrays"] = arrays
    return manifest


def _records(manifest: dict, names: tuple[str, ...]) -> list[Record]:
    missing = [n for n in names if n not in manifest["datasets"]]
    if missing:
        raise StageError(f"datasets {missing} are not in the prepared data; re-run `dvc repro preprocess`")
    return [r for n in names for r in manifest["datasets"][n]]
