"""Task plug-ins: what differs between classification, segmentation, detection — and any task a user adds.

The training/evaluation core (:mod:`dermdl.pipeline`, :mod:`dermdl.train`, :mod:`dermdl.params`, the CLI,
the leak check, the importer) talks to a task only through :class:`Task`: it asks the task what it can do
(:class:`Capabilities`) and where its files are (:class:`~dermdl.layout.schema.LayoutSchema`); it never
compares task names. A task is one package ``dermdl/tasks/<name>/`` (found by listing this folder) or
any object registered with :func:`register_task`. Task packages never import each other.

Declaring a task imports no torch: each package's ``__init__.py`` names its functions with :class:`Lazy`,
so ``dermdl --help``, params validation and the layout checks stay fast.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from dermdl.layout.schema import LayoutSchema

if TYPE_CHECKING:  # records import numpy; declaring a task stays light
    from dermdl.records import Record

#: Procedures of the shared core that a task may not support; each unsupported one carries the reason
#: shown to the user. The single source of these names: params checks and the core read it.
#: ``explain``: explanation heatmaps (``dermdl predict --explain``, analyze's gallery);
#: ``label_maps``: a test set's folder names mapped to the model's classes (data.label_maps);
#: ``onnx_export``: ``dermdl export --format onnx`` and predicting with the exported file.
PROCEDURES = (
    "tta",
    "mixup",
    "oversample",
    "progressive_resizing",
    "channels_last",
    "explain",
    "label_maps",
    "onnx_export",
)


@dataclass(frozen=True)
class Capabilities:
    """What the shared core may do with a task. ``unsupported`` maps a procedure to why it is not
    available (the text the user reads, e.g. ``"boxes do not mix"``); everything else is supported."""

    unsupported: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.unsupported) - set(PROCEDURES)
        if unknown:
            raise ValueError(f"unknown procedure(s) {sorted(unknown)}; known: {', '.join(PROCEDURES)}")
        object.__setattr__(self, "unsupported", MappingProxyType(dict(self.unsupported)))

    def supports(self, procedure: str) -> bool:
        if procedure not in PROCEDURES:
            raise ValueError(f"unknown procedure {procedure!r}; known: {', '.join(PROCEDURES)}")
        return procedure not in self.unsupported

    def why_not(self, procedure: str) -> str:
        return self.unsupported.get(procedure, "")


@dataclass(frozen=True)
class Lazy:
    """A function named by module and attribute, imported on first call (picklable, so it can be sent to
    preprocess workers): a task's declaration costs no torch/fastai import."""

    module: str
    attribute: str

    def resolve(self) -> Callable[..., Any]:
        return getattr(importlib.import_module(self.module), self.attribute)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)


def parts_of(package: str) -> Callable[[str, str], Lazy]:
    """``part = parts_of(__name__)``, then ``part("predict", "predict")``: a task package names its
    functions by submodule without importing them."""

    def part(module: str, attribute: str) -> Lazy:
        return Lazy(f"{package}.{module}", attribute)

    return part


@runtime_checkable
class Task(Protocol):
    """The interface a task provides to the shared core.

    - ``scan(params, datasets, check_images)`` -> (items, classes, Report) for the task's layout
    - ``prepare_item(source, relative, target, dst_root, size, policy, color_constancy)`` -> manifest record
      (a :class:`dermdl.records.Record`, where every key is declared: at least ``path`` (a unique name),
      ``source``, ``target``; ``stratum`` when splits should stratify; ``pixels``, the prepared uint8 image
      that preprocess moves into the arrays; the rest JSON-able)
    - ``target_array(params)`` -> None, or a picklable ``f(record) -> (size, size) uint8`` class-id map that
      preprocess stacks into ``targets.npy`` beside the images (spatial targets: masks)
    - ``prepare_settings(params)`` -> JSON-able task settings the prepared data depends on (fingerprint)
    - ``dataloaders(train_records, valid_records, classes, params, norm)`` -> fastai DataLoaders
      (of :class:`dermdl.batches.ArrayLoader`: batches gathered from the prepared arrays)
    - ``build_model(config, pretrained)`` -> (model, (mean, std)); ``config`` is a ModelConfig
    - ``loss_and_metrics(params, classes, train_records)`` -> (loss function, fastai metrics)
    - ``predict(model, config, paths, bs, tta)`` -> predictions for images, prepared or raw
    - ``concat_predictions(parts)`` -> one prediction container from several (cross-validation folds)
    - ``pseudo_label(model, config, records, params, work_dir)`` -> copies of weakly labelled records whose
      ``target`` is the model's prediction (self-training); files it needs go to ``work_dir``
    - ``write_predictions(records, predictions, config, out_dir, name)`` -> path written
    - ``analyze(predictions_dir, name, config, params, plots_dir)`` -> metrics dict (CIs as value/lo/hi)
    - ``table(metrics, title)`` -> the readable summary printed at the end of a run
    - ``headline(metrics)`` -> the few point values of one test set's metrics that go into ``metrics.json``
      (``dvc exp show`` columns): numbers or None, optionally grouped; CIs stay in report.json
      (:mod:`dermdl.headline`). Default: the point values of the ``overall`` section
    - ``splitter(model)`` / ``callbacks(params)`` -> fastai parameter groups / extra training callbacks
    - ``config_extra(params)`` -> JSON-able entries for ``ModelConfig.extra`` that predict/infer need
      without params.yaml (e.g. segmentation's mask value convention)
    - ``after_training(model, config, valid_records, params, model_dir)`` -> the config to save, once the
      weights are final (classification fits its temperature on the validation split here)
    - ``explain(model, config, paths, predictions, out_dir, method)`` -> heatmap PNGs written for images (``dermdl
      predict --explain``), one per image, for the class ``predictions`` chose, made with ``method``
      (options.EXPLAIN_METHODS); only where ``explain`` is supported
    - ``onnx_graph(model, config)`` -> :class:`dermdl.export.graph.OnnxGraph`: the torch module to trace for
      ``dermdl export --format onnx`` (input ``image``), its outputs and metadata
    - ``predict_tiled(model, config, paths, bs, tta, tiles)`` -> the same predictions as ``predict``, each
      image predicted by tiles at its original resolution (:class:`dermdl.tiling.Tiles`; large images)
    - ``onnx_predict(onnx_model, config, paths, bs, tta)`` -> the same predictions as ``predict``, from an
      exported file (:class:`dermdl.export.runtime.OnnxModel`) with ONNX Runtime and numpy, no torch; the
      two only where ``onnx_export`` is supported
    """

    name: str
    capabilities: Capabilities
    stratify_by_target: bool
    layout: LayoutSchema
    scan: Callable[..., Any]
    prepare_item: Callable[..., Record]
    target_array: Callable[[Any], Any]
    prepare_settings: Callable[[Any], dict]
    dataloaders: Callable[..., Any]
    build_model: Callable[..., tuple[Any, Any]]
    loss_and_metrics: Callable[..., Any]
    predict: Callable[..., Any]
    concat_predictions: Callable[[list[Any]], Any]
    pseudo_label: Callable[..., list[Record]]
    write_predictions: Callable[..., Path]
    analyze: Callable[..., dict]
    table: Callable[[dict, str], str]
    headline: Callable[[dict], dict]
    splitter: Callable[[Any], list]
    callbacks: Callable[[Any], list]
    config_extra: Callable[[Any], dict]
    after_training: Callable[..., Any]
    explain: Callable[..., list[Path]]
    onnx_graph: Callable[..., Any]
    onnx_predict: Callable[..., Any]
    predict_tiled: Callable[..., Any]


def _no_callbacks(params: Any) -> list:
    return []


def _no_settings(params: Any) -> dict:
    return {}


def _no_target_array(params: Any) -> None:
    return None


def _body_head_split(model: Any) -> list:
    """fastai's default: parameter groups (body, head) so the body can be frozen."""
    from fastai.vision.learner import default_split

    return default_split(model)


def _config_as_trained(model: Any, config: Any, valid_records: list, params: Any, model_dir: Path) -> Any:
    return config


def _no_explanations(
    model: Any, config: Any, paths: Any, predictions: Any, out_dir: Path, method: str = ""
) -> list[Path]:
    raise NotImplementedError(
        "this task's plug-in has no explain hook: give it one, or declare 'explain' unsupported in its Capabilities"
    )


def overall_headline(metrics: dict) -> dict:
    """A plug-in's default headline: the numbers of its ``overall`` section, CIs stripped."""
    from dermdl.headline import value

    return {name: value(entry) for name, entry in (metrics.get("overall") or {}).items()}


def _no_onnx(*args: Any, **kwargs: Any) -> Any:
    raise NotImplementedError(
        "this task's plug-in has no onnx_graph/onnx_predict hooks: give it them, or declare 'onnx_export' "
        "unsupported in its Capabilities"
    )


def _no_tiles(*args: Any, **kwargs: Any) -> Any:
    raise ValueError("--tile-size: this task predicts whole images only (its plug-in has no predict_tiled hook)")


def concat_lists(parts: list[Any]) -> list[Any]:
    return [item for part in parts for item in part]


@dataclass(frozen=True)
class TaskPlugin:
    """A :class:`Task` made of plain functions (no inheritance), with the defaults most tasks want."""

    name: str
    layout: LayoutSchema
    scan: Callable[..., Any]
    prepare_item: Callable[..., Record]
    dataloaders: Callable[..., Any]
    build_model: Callable[..., tuple[Any, Any]]
    loss_and_metrics: Callable[..., Any]
    predict: Callable[..., Any]
    pseudo_label: Callable[..., list[Record]]
    write_predictions: Callable[..., Path]
    analyze: Callable[..., dict]
    table: Callable[[dict, str], str]
    capabilities: Capabilities = Capabilities()
    stratify_by_target: bool = False  # validation splits and CV folds keep each target's share
    concat_predictions: Callable[[list[Any]], Any] = concat_lists
    target_array: Callable[[Any], Any] = _no_target_array
    prepare_settings: Callable[[Any], dict] = _no_settings
    splitter: Callable[[Any], list] = _body_head_split
    callbacks: Callable[[Any], list] = _no_callbacks
    config_extra: Callable[[Any], dict] = _no_settings
    after_training: Callable[..., Any] = _config_as_trained
    explain: Callable[..., list[Path]] = _no_explanations
    onnx_graph: Callable[..., Any] = _no_onnx
    onnx_predict: Callable[..., Any] = _no_onnx
    headline: Callable[[dict], dict] = overall_headline
    predict_tiled: Callable[..., Any] = _no_tiles


_REGISTERED: dict[str, Task] = {}


def _packages() -> list[str]:
    """Every sub-package of dermdl.tasks is a task (a new task is one new folder)."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.ispkg)


def register_task(task: Task) -> None:
    """Add a task that lives outside dermdl (a plug-in package, a test); it must satisfy :class:`Task`."""
    if not isinstance(task, Task):
        missing = [name for name in Task.__annotations__ if not hasattr(task, name)]
        raise TypeError(f"{task!r} is not a dermdl task: missing {', '.join(missing)}")
    _REGISTERED[task.name] = task


def unregister_task(name: str) -> None:
    _REGISTERED.pop(name, None)


def builtin_task_names() -> tuple[str, ...]:
    """The tasks that ship with dermdl (the demo data has a layout for each)."""
    return tuple(_packages())


def task_names() -> tuple[str, ...]:
    """Every task a params file may name: the built-in ones, then registered plug-ins."""
    return tuple(_packages()) + tuple(sorted(set(_REGISTERED) - set(_packages())))


def get_task(name: str) -> Task:
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in _packages():
        raise ValueError(f"unknown task {name!r}; set task in params.yaml to one of {', '.join(task_names())}")
    return importlib.import_module(f"{__name__}.{name}").TASK


def detect_layout(root: Path, datasets: list[str]) -> str:
    """The task whose layout ``root`` has; the most specific layout that matches wins."""
    tasks = sorted((get_task(n) for n in task_names()), key=lambda t: (-t.layout.specificity, t.name))
    for task in tasks:
        if task.layout.matches(root, list(datasets)):
            return task.name
    return tasks[-1].name
