"""Typed, validated parameters: ``params.yaml`` is parsed once, here, into frozen objects.

Every stage receives a :class:`Params`; nothing downstream re-reads YAML or trusts a raw dict.
Validation happens at load time so a typo (``train.lr: -1``, ``train.modle``) fails before any
work starts, with one message per problem naming the key and how to fix it.

This module owns the whole (:class:`Params`), loading, the migration of moved keys and the error
messages; the sections live one group per module (data and stages: :mod:`dermdl.stage_params`,
``train:``: :mod:`dermdl.train_params`, each task's: :mod:`dermdl.task_params`) and are re-exported
here, so ``from dermdl.params import TrainParams`` keeps working.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from dermdl.errors import ParamsError
from dermdl.stage_params import AnalyzeParams, DataParams, DemoParams, InferParams, PreprocessParams
from dermdl.task_params import ClassificationParams, DetectionParams, SegmentationParams
from dermdl.task_params import Section as _Section
from dermdl.train_params import TrainParams
from dermdl.yaml_input import parse_yaml

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails


class Params(_Section):
    """The whole of params.yaml."""

    task: str = "classification"  # a package in dermdl/tasks/ or a registered task (dermdl.tasks.task_names)
    out_dir: str = "outputs"
    # CPU threads per process (dermdl.threads): parallel experiments and processes share the cores; 0 = automatic.
    # No stage tracks it in dvc.yaml: it changes the speed (at most the last bits of float sums), not the recipe.
    threads: int = Field(0, ge=0, le=4096)
    data: DataParams = DataParams()
    demo: DemoParams = DemoParams()
    preprocess: PreprocessParams = PreprocessParams()
    train: TrainParams = TrainParams()
    classification: ClassificationParams = ClassificationParams()
    segmentation: SegmentationParams = SegmentationParams()
    detection: DetectionParams = DetectionParams()
    infer: InferParams = InferParams()
    analyze: AnalyzeParams = AnalyzeParams()

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        from dermdl.tasks import task_names

        if value not in task_names():
            raise ValueError(f"unknown task {value!r}; use one of {', '.join(task_names())}")
        return value

    @model_validator(mode="after")
    def _task_supports(self) -> Params:
        """Procedures a task does not support fail at load time, not after preprocessing; the task says
        which (dermdl.tasks.Capabilities) and why."""
        from dermdl.tasks import get_task

        train = self.train
        capabilities = get_task(self.task).capabilities
        asked = {
            "mixup": train.mixup,
            "progressive_resizing": train.progressive_resizing,
            "oversample": train.oversample,
        }
        bad = [key for key, on in asked.items() if on and not capabilities.supports(key)]
        if bad:
            reasons = "; ".join(dict.fromkeys(capabilities.why_not(key) for key in bad))
            raise ValueError(
                f"train.{', train.'.join(bad)}: not available for {self.task} ({reasons}); remove them "
                "or choose another task"
            )
        if self.data.label_maps and not capabilities.supports("label_maps"):
            raise ValueError(
                f"data.label_maps: not available for {self.task} ({capabilities.why_not('label_maps')}); "
                "remove data.label_maps"
            )
        if self.infer.tta not in ("none", "auto") and not capabilities.supports("tta"):
            raise ValueError(
                f"infer.tta: test-time augmentation is not available for {self.task} "
                f"({capabilities.why_not('tta')}); set infer.tta: none"
            )
        from dermdl.io import is_inside

        if is_inside(self.out_dir, self.data.root):
            raise ValueError(
                f"out_dir {self.out_dir!r} is inside data.root {self.data.root!r}: dermdl would write among your "
                "images (and the next validate would find its own files); choose an out_dir outside the data folder"
            )
        if train.weak_labels != "none" and not self.data.wl_train:
            raise ValueError(
                f"train.weak_labels={train.weak_labels} needs weakly labelled datasets: name them in "
                "data.wl_train, or set train.weak_labels: none"
            )
        return self

    @property
    def out(self) -> Path:
        return Path(self.out_dir)

    @property
    def tta(self) -> str:
        """``infer.tta`` with ``auto`` resolved for this task."""
        return resolved_tta(self.infer.tta, self.task)

    @property
    def training_tta(self) -> str:
        """``train.tta`` with ``auto`` resolved: the views training averages when it predicts."""
        return resolved_tta(self.train.tta, self.task)

    @property
    def model(self) -> str:
        """The network the task section names (``<task>.model``); empty for a task without a section."""
        section = getattr(self, self.task, None) if self.task in type(self).model_fields else None
        return str(getattr(section, "model", ""))

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def override(self, updates: dict[str, Any]) -> Params:
        """Return a copy with dotted-key updates (``{"train.lr": 1e-3}``), validated again."""
        raw = self.to_dict()
        task = updates.get("task", self.task)
        for dotted, value in updates.items():
            dotted = _moved_to(dotted.replace("{task}", str(task)), str(task))
            node = raw
            *parents, leaf = dotted.split(".")
            for depth, key in enumerate(parents):
                node = node.setdefault(key, {})
                if not isinstance(node, dict):
                    where = ".".join(parents[: depth + 1])
                    raise ParamsError(
                        f"command line: {dotted}: {where} is a single value, not a section; set {where}=VALUE"
                    )
            if not leaf or any(not part for part in parents):
                raise ParamsError(f"command line: {dotted!r} is not a key; write SECTION.KEY=VALUE, e.g. train.lr=2e-4")
            node[leaf] = value
        return params_from_dict(raw, source="command line")


_NOTED: set[str] = set()


def _moved_to(old: str, task: str) -> str:
    """The current spelling of ``old``: a ``train.*`` key a task section took over (its
    ``moved_from_train``) becomes ``<section>.<key>``, noted once; any other key is itself."""
    section, _, leaf = old.partition(".")
    if section != "train":
        return old
    homes = [
        name for name, field in Params.model_fields.items() if leaf in getattr(field.annotation, "moved_from_train", ())
    ]
    if not homes:
        return old
    new = f"{task if task in homes else homes[0]}.{leaf}"
    if new not in _NOTED:
        _NOTED.add(new)
        print(f"params: {old} is now {new} (the old key works until dermdl 0.3; rename it)", file=sys.stderr)
    return new


def _migrate(raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Move ``train.*`` keys that a task section took over into it; both spellings at once is an error.
    Returns the new dict and new key -> old key, so errors can name the key the user wrote."""
    train = raw.get("train")
    if not isinstance(train, dict):
        return raw, {}
    task = str(raw.get("task", "classification"))
    moved = {key: _moved_to(f"train.{key}", task) for key in train}
    moved = {key: new for key, new in moved.items() if new != f"train.{key}"}
    if not moved:
        return raw, {}
    raw, train = dict(raw), dict(train)
    for key, new in moved.items():
        section, leaf = new.split(".")
        target = dict(raw[section]) if isinstance(raw.get(section), dict) else {}
        if leaf in target:
            raise ValueError(f"train.{key} and {new} are both set; keep only {new}")
        target[leaf] = train.pop(key)
        raw[section] = target
    raw["train"] = train
    return raw, {new: f"train.{key}" for key, new in moved.items()}


# Keys earlier versions had: the error says why they went instead of only "unknown key".
RETIRED_KEYS = {
    "train.workers": "batches are slices of the prepared arrays, built in the training process; remove the key",
}


def resolved_tta(tta: str, task: str) -> str:
    """``auto`` -> the 8 dihedral views, or none where the task cannot average views."""
    if tta != "auto":
        return tta
    from dermdl.tasks import get_task

    return "dihedral" if get_task(task).capabilities.supports("tta") else "none"


def _describe(error: ErrorDetails, old_names: dict[str, str] | None = None) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if old_names and key in old_names:
        key = f"{key} (set as {old_names[key]})"
    kind = error["type"]
    error = {**error, "msg": str(error["msg"]).removeprefix("Value error, ")}  # pydantic's prefix says nothing
    if kind == "extra_forbidden" and key in RETIRED_KEYS:
        return f"{key}: no longer used — {RETIRED_KEYS[key]}"
    if kind == "extra_forbidden":
        return f"{key}: unknown key — remove it or check its spelling (see README, 'Parameters')"
    if kind == "literal_error":
        return f"{key}: {error['input']!r} is not allowed; {error['msg'].lower()}"
    if isinstance(error.get("input"), dict):  # a whole section failed a cross-key check: the message says it
        return f"{key}: {error['msg']}"
    return f"{key}: {error['msg']} (got {error.get('input')!r})"


def params_from_dict(raw: dict[str, Any] | None, source: str = "params") -> Params:
    try:
        migrated, old_names = _migrate(raw or {})
    except ValueError as exc:
        raise ParamsError(f"{source}: {exc}") from None
    try:
        return Params.model_validate(migrated)
    except ValidationError as exc:
        lines = "\n".join(f"  - {_describe(err, old_names)}" for err in exc.errors())
        raise ParamsError(f"{source}: {exc.error_count()} invalid parameter(s):\n{lines}") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: parameter file not found; run from the project root or pass --params PATH")
    try:
        text = path.read_bytes().decode("utf-8-sig")  # a BOM (Windows editors) is fine
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise ParamsError(
            f"{path}: line {line} is not UTF-8 text (byte {exc.object[exc.start]:#x}); save the file as UTF-8"
        ) from None
    try:
        raw = parse_yaml(text)
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ParamsError(f"{path}: the top level must be a mapping of sections (task, data, train, ...)")
    return params_from_dict(raw, source=str(path))
