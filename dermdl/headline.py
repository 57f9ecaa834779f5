"""``metrics.json``: the few numbers an experiment table compares (``dvc metrics show``, ``dvc exp show``).

``report.json`` keeps every metric with its CI, the bootstrap settings and the tables behind the plots;
a DVC metrics file holding all of that gives ``dvc exp show`` over a hundred columns and hides the
numbers that matter behind "…". So ``metrics.json`` holds, per test set, only the point values each
task names in its ``headline`` hook (:class:`dermdl.tasks.Task`); the core never picks them by name.
"""

from __future__ import annotations

import math
from typing import Any

from dermdl.bootstrap import point_values

#: What a headline may hold: numbers (None = undefined), optionally grouped one or two levels deep
#: (e.g. a class group's AUC/sensitivity/specificity), which DVC shows as ``<test>.<group>.<name>``.
Headline = dict[str, Any]


def value(entry: Any) -> float | None:
    """The point value of a ``{"value", "lo", "hi"}`` record or a bare number; None when undefined/absent."""
    point = point_values(entry)
    if point is None or isinstance(point, bool) or not isinstance(point, (int, float)):
        return None
    return None if math.isnan(point) else float(point)


def headline_metrics(task: Any, full: dict[str, dict]) -> dict[str, Headline]:
    """Per test set (``full``: name -> the task's analyze() dict), the task's headline point values."""
    out: dict[str, Headline] = {}
    for name, metrics in full.items():
        values = task.headline(metrics)
        _check(values, f"the {task.name} task's headline hook")
        out[name] = values
    return out


def _check(values: Any, where: str, depth: int = 0) -> None:
    """A plug-in bug, not a user error: fail loudly if a headline is not a small tree of numbers."""
    if not isinstance(values, dict):
        raise TypeError(f"{where} must return a dict of numbers, got {type(values).__name__}")
    for key, item in values.items():
        if isinstance(item, dict) and set(item) >= {"value", "lo", "hi"}:
            raise TypeError(
                f"{where} [{key}]: a value with its CI; metrics.json takes the point value (headline.value)"
            )
        if isinstance(item, dict) and depth < 2:
            _check(item, f"{where} [{key}]", depth + 1)
        elif item is not None and (isinstance(item, bool) or not isinstance(item, (int, float)) or math.isnan(item)):
            raise TypeError(f"{where} [{key}]: {item!r} is not a number or None (CIs and lists belong in report.json)")
