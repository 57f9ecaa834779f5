"""Task plug-ins: what differs between classification, segmentation and detection.

The training/evaluation core (:mod:`dermdl.pipeline`, :mod:`dermdl.train`) only talks to a
:class:`Task`; adding a task means one new module here and one entry in ``_MODULES``.
Task modules never import each other: anything two tasks share moves down into the core.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn


def _no_callbacks(params: Any) -> list:
    return []


def _no_config_extra(params: Any) -> dict:
    return {}


def _no_target_array(params: Any) -> None:
    return None


def _body_head_split(model: nn.Module) -> list:
    """fastai's default: parameter groups (body, head) so the body can be frozen."""
    from fastai.vision.learner import default_split

    return default_split(model)


@dataclass(frozen=True)
class Task:
    """The explicit interface a task provides to the shared core (plain functions, no inheritance).

    - ``scan(params, datasets, check_images)`` -> (items, classes, Report) for the task's layout
    - ``prepare_item(source, relative, target, dst_root, size, policy, color_constancy)`` -> manifest record
      (JSON-able dict with at least ``path`` (a unique name), ``source``, ``target``; ``stratum`` when splits
      should stratify) plus ``pixels``, the prepared uint8 image that preprocess moves into the arrays
    - ``target_array(params)`` -> None, or a picklable ``f(record) -> (size, size) uint8`` class-id map that
      preprocess stacks into ``targets.npy`` beside the images (spatial targets: masks)
    - ``dataloaders(train_records, valid_records, classes, params, norm)`` -> fastai DataLoaders
      (of :class:`dermdl.batches.ArrayLoader`: batches gathered from the prepared arrays)
    - ``build_model(config, pretrained)`` -> (model, (mean, std)); ``config`` is a ModelConfig
    - ``loss_and_metrics(params, classes, train_records)`` -> (loss function, fastai metrics)
    - ``predict(model, config, paths, bs, tta)`` -> predictions for images, prepared or raw (``tta``: infer.tta)
    - ``pseudo_label(model, config, records, params, work_dir)`` -> copies of weakly labelled records whose
      ``target`` is the model's prediction (self-training); files it needs go to ``work_dir``
    - ``write_predictions(records, predictions, config, out_dir, name)`` -> path written
    - ``analyze(predictions_dir, name, config, params, plots_dir)`` -> metrics dict (CIs as value/lo/hi)
    - ``table(metrics, title)`` -> the readable summary printed at the end of a run
    - ``splitter(model)`` / ``callbacks(params)`` -> fastai parameter groups / extra training callbacks
    - ``config_extra(params)`` -> JSON-able entries for ``ModelConfig.extra`` that predict/infer need
      without params.yaml (e.g. segmentation's mask value convention)
    """

    name: str
    scan: Callable[..., Any]
    prepare_item: Callable[..., dict]
    dataloaders: Callable[..., Any]
    build_model: Callable[..., tuple[nn.Module, Any]]
    loss_and_metrics: Callable[..., Any]
    predict: Callable[..., Any]
    pseudo_label: Callable[..., list[dict]]
    write_predictions: Callable[..., Path]
    analyze: Callable[..., dict]
    table: Callable[[dict, str], str]
    splitter: Callable[[nn.Module], list] = _body_head_split
    callbacks: Callable[[Any], list] = _no_callbacks
    config_extra: Callable[[Any], dict] = _no_config_extra
    target_array: Callable[[Any], Any] = _no_target_array


_MODULES = {
    "classification": "dermdl.tasks.classification",
    "segmentation": "dermdl.tasks.segmentation",
    "detection": "dermdl.tasks.detection",
}


def get_task(name: str) -> Task:
    if name not in _MODULES:
        raise ValueError(f"unknown task {name!r}; set task in params.yaml to one of {', '.join(_MODULES)}")
    try:
        module = importlib.import_module(_MODULES[name])
    except ModuleNotFoundError as exc:
        if exc.name != _MODULES[name]:
            raise
        raise NotImplementedError(f"task {name!r} is not available in this dermdl version") from None
    return module.TASK
