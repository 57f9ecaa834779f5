"""Task plug-ins: what differs between classification, segmentation and detection.

The training/evaluation core (:mod:`dermdl.pipeline`, :mod:`dermdl.train`) only talks to a
:class:`Task`; adding a task means one new module here and one entry in :func:`get_task`.
Task modules never import each other: anything two tasks share moves down into the core.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn


@dataclass(frozen=True)
class Task:
    """The explicit interface a task provides to the shared core (plain functions, no inheritance).

    - ``scan(root, datasets, check_images)`` -> (items, classes, report) for the task's layout
    - ``prepare_item(source, relative, target, dst_root, size, policy)`` -> manifest record
    - ``dataloaders(train, valid, classes, train_params, norm)`` -> fastai DataLoaders
    - ``build_model(arch, n_classes, pretrained)`` -> (model as Sequential(body, head), (mean, std))
    - ``loss_and_metrics(train_params)`` -> (loss function, fastai metrics)
    - ``predict(model, config, paths, bs)`` -> per-image predictions (task-specific array)
    - ``write_predictions(records, predictions, config, path)``
    - ``analyze(predictions_path, config, analyze_params, plots_dir, name)`` -> metrics dict
    - ``table(metrics, title)`` -> the readable summary printed at the end of a run
    """

    name: str
    scan: Callable[..., Any]
    prepare_item: Callable[..., dict]
    dataloaders: Callable[..., Any]
    build_model: Callable[..., tuple[nn.Module, Any]]
    loss_and_metrics: Callable[..., Any]
    predict: Callable[..., Any]
    write_predictions: Callable[..., Path]
    analyze: Callable[..., dict]
    table: Callable[[dict, str], str]


_MODULES = {"classification": "dermdl.tasks.classification"}


def get_task(name: str) -> Task:
    if name not in _MODULES:
        implemented = ", ".join(sorted(_MODULES))
        raise NotImplementedError(f"task {name!r} is not implemented yet (available: {implemented}); set task in params.yaml")
    return importlib.import_module(_MODULES[name]).TASK
