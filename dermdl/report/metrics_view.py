"""report.json as HTML tables, for any task: the page shows what the file contains, whatever its shape.

Why generic: each task (and any plug-in task) nests its metrics differently (per class, per subgroup,
before/after calibration, boundary distances...). The shapes are few, though: a value with a CI
(``{value, lo, hi}``), a plain scalar, a list, and dicts of those. A dict whose children are all flat
records (scalars/CIs) becomes one matrix (rows = children: classes, subgroups); other dicts become
sub-sections. No key is interpreted, so no task name or metric name is compared.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dermdl.report.html import cell, esc, raw_cell, table

#: Lists longer than this show their first rows and a count (galleries list every case).
MAX_LIST_ROWS = 40
#: Headline rows shown at most; metrics.json is meant to hold a handful (see analyze).
MAX_HEADLINE = 20


def is_ci(value: Any) -> bool:
    return isinstance(value, Mapping) and {"value", "lo", "hi"} <= set(value)


def label(key: str) -> str:
    """'macro_auc' -> 'Macro AUC' (acronyms upper-case), for any metric or section key."""
    from dermdl.evaluation.subgroups import metric_label

    return metric_label(str(key))


def ci_text(value: Mapping[str, Any]) -> str:
    """'0.812 (0.771-0.850)'; 'n/a' when undefined; no interval when the bounds are missing."""
    point = value.get("value")
    if point is None:
        return "n/a"
    lo, hi = value.get("lo"), value.get("hi")
    text = _fmt(point)
    return f"{text} ({_fmt(lo)}\u2013{_fmt(hi)})" if lo is not None and hi is not None else text


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.3f}" if abs(value) < 1000 else f"{value:.0f}"


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _leaf(value: Any) -> bool:
    """Shown in one cell: a scalar, a CI, a list of scalars or a dict of scalars (``validation``)."""
    if _scalar(value) or is_ci(value):
        return True
    if isinstance(value, list):
        return all(_scalar(v) for v in value)
    return isinstance(value, Mapping) and all(_scalar(v) for v in value.values())


def _leaf_cell(value: Any, stacked: bool = True) -> str:
    """One cell; a CI ``stacked`` as the value over its interval keeps wide matrices narrow."""
    if is_ci(value):
        if value.get("value") is None:
            return cell(None)
        lo, hi = value.get("lo"), value.get("hi")
        if stacked and lo is not None and hi is not None:
            markup = f'{esc(_fmt(value["value"]))}<br><span class="ci">{esc(_fmt(lo))}\u2013{esc(_fmt(hi))}</span>'
            return raw_cell(markup, numeric=True)
        return raw_cell(esc(ci_text(value)), numeric=True)
    if isinstance(value, list):
        return cell(", ".join(str(v) for v in value) if value else "none")
    if isinstance(value, Mapping):
        return raw_cell("<br>".join(f"{esc(k)} {esc(_fmt(v))}" for k, v in value.items()))
    if isinstance(value, float):
        return raw_cell(esc(_fmt(value)), numeric=True)
    return cell(value)


def _record(value: Any) -> bool:
    return isinstance(value, Mapping) and not is_ci(value) and bool(value) and all(_leaf(v) for v in value.values())


def _columns(records: list[Mapping[str, Any]]) -> list[str]:
    columns: list[str] = []
    for record in records:
        columns += [k for k in record if k not in columns]
    return columns


def matrix(rows: Mapping[str, Mapping[str, Any]], row_title: str = "") -> str:
    """Rows = the dict's keys (classes, subgroups), columns = the union of their keys in first-seen order."""
    columns = _columns(list(rows.values()))
    body = [
        [raw_cell(f"<b>{esc(name)}</b>")] + [_leaf_cell(record[c]) if c in record else cell("") for c in columns]
        for name, record in rows.items()
    ]
    return table([row_title] + [label(c) for c in columns], body, raw=True)


def _list_table(items: list[Any]) -> str:
    shown = items[:MAX_LIST_ROWS]
    more = (
        f'<p class="muted">... and {len(items) - len(shown)} more (see report.json)</p>' if items[len(shown) :] else ""
    )
    if all(isinstance(v, Mapping) for v in shown):
        columns = _columns(shown)
        body = [
            [_leaf_cell(v.get(c, "")) if _leaf(v.get(c, "")) else cell(str(v.get(c))) for c in columns] for v in shown
        ]
        return table([label(c) for c in columns], body, raw=True) + more
    return table(["value"], [[_leaf_cell(v) if _leaf(v) else cell(str(v))] for v in shown], raw=True) + more


def render_tree(tree: Mapping[str, Any], depth: int = 0) -> str:
    """One dict of report.json: its leaves as a name/value table, flat-record children as one matrix when
    all children are records, every other child as a sub-section (headings h4, h5, ...)."""
    leaves = [(k, v) for k, v in tree.items() if _leaf(v) and not _record(v)]
    parts = []
    if leaves:
        parts.append(
            table(["", "value"], [[raw_cell(f"<b>{esc(label(k))}</b>"), _leaf_cell(v)] for k, v in leaves], raw=True)
        )
    leaf_keys = {k for k, _ in leaves}
    children = [(k, v) for k, v in tree.items() if k not in leaf_keys]
    if children and all(_record(v) for _, v in children) and not leaves:
        return matrix(dict(children))
    heading = f"h{min(4 + depth, 6)}"
    shapes: dict[tuple[str, ...], list[str]] = {}
    for key, value in children:
        if _record(value):
            shapes.setdefault(tuple(value), []).append(key)
    done: set[str] = set()
    for key, value in children:
        if key in done:
            continue
        title = f"<{heading}>{esc(label(key))}</{heading}>"
        same = shapes.get(tuple(value), []) if _record(value) else []
        if len(same) > 1:  # sibling records of one shape (before/after): one table, a row each
            parts.append(matrix({k: tree[k] for k in same}))
            done.update(same)
        elif _record(value):
            parts.append(title + table([label(c) for c in value], [[_leaf_cell(v) for v in value.values()]], raw=True))
        elif isinstance(value, list):
            parts.append(title + _list_table(value))
        elif isinstance(value, Mapping) and value:
            parts.append(title + render_tree(value, depth + 1))
        elif isinstance(value, Mapping):
            parts.append(title + '<p class="muted">none</p>')
    return "".join(parts)


def flatten(tree: Any, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Leaf paths of a JSON tree (a CI counts as one leaf)."""
    if isinstance(tree, Mapping) and not is_ci(tree):
        return [item for key, value in tree.items() for item in flatten(value, (*prefix, str(key)))]
    return [(prefix, tree)]


def _lookup(tree: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(tree, Mapping) or key not in tree:
            return None
        tree = tree[key]
    return tree


def _tokens(path: tuple[str, ...]) -> set[str]:
    return {t for part in path for t in str(part).lower().replace("-", "_").split("_") if t}


def find_ci(section: Any, path: tuple[str, ...], point: float) -> Any:
    """The CI in report.json behind a headline number: at the same path, else the CI with this exact
    value whose path shares the most words with the headline's (``macro_auc`` -> ``macro.auc``; ties:
    the shorter path). None when no CI has this value (the number is shown without an interval)."""
    same = _lookup(section, path)
    if is_ci(same):
        return same
    wanted = _tokens(path)
    candidates = [
        (len(wanted & _tokens(p)), -len(p), v)
        for p, v in flatten(section)
        if is_ci(v)
        and isinstance(v.get("value"), (int, float))
        and abs(v["value"] - point) <= 1e-12 * max(1.0, abs(point))
    ]
    best = max(candidates, key=lambda c: c[:2], default=None)
    return best[2] if best and (best[0] > 0 or len(candidates) == 1) else None


def headline_rows(metrics: Mapping[str, Any] | None, section: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The test set's entries of metrics.json (the numbers `dvc exp show` lists), each with its CI from
    report.json when one holds the same number there; numbers only, at most MAX_HEADLINE."""
    rows: list[tuple[str, Any]] = []
    for path, value in flatten(metrics or {}):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            continue
        full = find_ci(section, path, float(value)) if value is not None else None
        rows.append((" \u203a ".join(label(p) for p in path), full if full is not None else value))
    return rows[:MAX_HEADLINE]


def headline_table(rows: list[tuple[str, Any]]) -> str:
    return table(
        ["metric", "value (95% CI)"],
        [[raw_cell(f"<b>{esc(k)}</b>"), _leaf_cell(v, stacked=False)] for k, v in rows],
        raw=True,
    )


def undefined_metrics(section: Any) -> list[str]:
    """Paths of CIs whose value is undefined (a class never predicted, a single-class subgroup)."""
    return [" \u203a ".join(path) for path, value in flatten(section) if is_ci(value) and value.get("value") is None]


def find_key(tree: Any, key: str, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every (path, value) where ``key`` occurs in a nested dict (e.g. the flags a section carries)."""
    found = []
    if isinstance(tree, Mapping):
        for k, v in tree.items():
            if k == key:
                found.append(((*prefix, str(k)), v))
            found += find_key(v, key, (*prefix, str(k)))
    return found
