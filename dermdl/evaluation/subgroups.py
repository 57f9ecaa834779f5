"""Subgroup analysis, task-independent: labels per image, every headline metric per subgroup, flags,
a text table, a forest plot and DVC plot data.

Why: a model can be good on average and poor for one group (older patients, acral sites, dark skin). For
each metadata column the task's metrics are recomputed on each subgroup with their CIs; a subgroup is
flagged when its whole CI lies below the overall value (the model is worse there beyond sampling noise).
The task supplies ``metrics_of(indices)``; everything else is here so every task reports the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dermdl.bootstrap import format_value
from dermdl.io import atomic_write_json

#: Subgroups with fewer images are listed with their n only: a CI over 1-4 images says nothing.
MIN_N = 5
#: Label of the images whose value is missing (empty, NaN, "unknown", no row in the table).
MISSING = "missing"
#: A numeric column without a band width and with at most this many distinct values is categorical
#: (Fitzpatrick types 1-6, a 0/1 flag), not cut into quartiles.
MAX_CODES = 8

Metrics = dict[str, dict[str, float | None]]


def _numbers(values: Sequence[str | None]) -> list[float] | None:
    """The values as finite floats when every present one is a number, else None (categorical)."""
    out = []
    for v in values:
        if v is None:
            continue
        try:
            x = float(v)
        except ValueError:
            return None
        if not math.isfinite(x):
            return None
        out.append(x)
    return out or None


def _num(x: float) -> str:
    return f"{x:g}"


def subgroup_labels(values: Sequence[str | None], width: float | None = None) -> tuple[list[str], list[str]]:
    """(label of each image, subgroups in display order). Categorical values are kept as they are; a
    numeric column is cut into bands ``[k*width, (k+1)*width)`` (age 10 -> "40-49" for whole numbers) or,
    without a width, into quartiles ("[30, 45]", "(45, 60]", ...); None -> "missing" (listed last)."""
    numbers = _numbers(values)
    if numbers is None or (width is None and len(set(numbers)) <= MAX_CODES):
        if width is not None and numbers is None and any(v is not None for v in values):
            example = next(v for v in values if v is not None and _numbers([v]) is None)
            raise ValueError(f"band width {width} given for a column that is not numeric (e.g. {example!r})")
        labels = [MISSING if v is None else v for v in values]
        present = sorted({v for v in labels if v != MISSING}, key=lambda v: (float(v), v) if numbers else (0, v))
    else:
        keys: list[float | None]
        if width is not None:
            whole = all(x.is_integer() for x in numbers) and float(width).is_integer()
            keys = [None if v is None else math.floor(float(v) / width) * width for v in values]
            names = {
                k: f"{int(k)}-{int(k + width - 1)}" if whole else f"[{_num(k)}, {_num(k + width)})"
                for k in {k for k in keys if k is not None}
            }
        else:
            edges = np.unique(np.quantile(np.asarray(numbers), [0.0, 0.25, 0.5, 0.75, 1.0]))
            # right-closed quartile bins (the lowest includes its left edge), like pandas.qcut
            keys = [
                None if v is None else float(edges[max(0, int(np.searchsorted(edges, float(v), "left")) - 1)])
                for v in values
            ]
            names = {
                float(lo): f"{'[' if i == 0 else '('}{_num(lo)}, {_num(hi)}]"
                for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:]))
            }
        labels = [MISSING if k is None else names[k] for k in keys]
        used = {k for k in keys if k is not None}
        present = [names[k] for k in sorted(used)]
    order = present + ([MISSING] if MISSING in labels else [])
    return labels, order


def analyze_subgroups(
    labels: Mapping[str, tuple[Sequence[str], Sequence[str]]],
    metrics_of: Callable[[np.ndarray], Metrics],
    min_n: int = MIN_N,
) -> dict[str, Any]:
    """Per column (``labels``: column -> (label per image, subgroup order)) and subgroup: ``n``, each metric
    ``{value, lo, hi}`` from ``metrics_of(indices)`` and ``below_overall`` (metrics whose CI upper bound lies
    below the overall value). Subgroups with fewer than ``min_n`` images get only ``n``."""
    if not labels:
        raise ValueError("no subgroup columns given")
    n = len(next(iter(labels.values()))[0])
    overall = metrics_of(np.arange(n))
    columns: dict[str, dict[str, Any]] = {}
    for column, (per_image, order) in labels.items():
        if len(per_image) != n:
            raise ValueError(f"subgroup column {column!r} has {len(per_image)} labels for {n} images")
        codes = np.asarray(per_image, dtype=object)
        rows: dict[str, Any] = {}
        for name in order:
            index = np.flatnonzero(codes == name)
            if len(index) < min_n:
                rows[name] = {"n": int(len(index))}
                continue
            values = metrics_of(index)
            below = [m for m, v in values.items() if _below(v.get("hi"), overall[m].get("value"))]
            rows[name] = {"n": int(len(index)), **values, "below_overall": below}
        columns[column] = rows
    return {"n": n, "min_n": min_n, "overall": overall, "columns": columns}


def _below(hi: float | None, overall: float | None) -> bool:
    """A subgroup's CI lies entirely below the overall value (undefined values never flag)."""
    return hi is not None and overall is not None and hi < overall


def metric_label(key: str) -> str:
    """'macro_auc' -> 'Macro AUC' (acronyms upper-case) for tables and plots of any task."""
    acronyms = {"auc", "ap", "iou", "ppv", "npv", "ece", "hd95", "assd"}
    words = key.split("_")
    return " ".join(w.upper() if w in acronyms else (w.capitalize() if i == 0 else w) for i, w in enumerate(words))


def _metric_names(result: Mapping[str, Any]) -> list[str]:
    return list(result["overall"])


def format_subgroups(result: Mapping[str, Any], digits: int = 2) -> str:
    """One aligned table per column: overall line, then each subgroup with n and metric (CI); ``*`` marks a
    CI entirely below the overall value."""
    names = _metric_names(result)
    blocks = []
    for column, rows in result["columns"].items():
        title = f"Subgroups by {column} (* = CI entirely below overall; fewer than {result['min_n']} images: n only)"
        table = [["subgroup", "n", *(metric_label(m) for m in names)]]
        table.append(["overall", str(result["n"]), *(format_value(result["overall"][m], digits) for m in names)])
        for name, row in rows.items():
            cells = [
                "" if m not in row else format_value(row[m], digits) + ("*" if m in row["below_overall"] else "")
                for m in names
            ]
            table.append([name, str(row["n"]), *cells])
        widths = [max(len(r[j]) for r in table) for j in range(len(table[0]))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table]
        rule = "-" * len(lines[0])
        blocks.append("\n".join([title, rule, lines[0], rule, lines[1], *lines[2:]]))
    return "\n\n".join(blocks) + "\n"


def plot_records(result: Mapping[str, Any], column: str) -> list[dict[str, Any]]:
    """DVC plot data of one column: {subgroup, metric, value, lo, hi, n} for each computed subgroup."""
    return [
        {"subgroup": name, "metric": m, "value": row[m]["value"], "lo": row[m]["lo"], "hi": row[m]["hi"], "n": row["n"]}
        for name, row in result["columns"][column].items()
        for m in _metric_names(result)
        if m in row
    ]


def plot_forest(result: Mapping[str, Any], column: str, path: Path, title: str) -> None:
    """Forest plot of one column: a panel per metric, point and CI per subgroup, the overall value as a
    vertical line; flagged subgroups in red with a filled marker, subgroups too small to score greyed."""
    from matplotlib.figure import Figure

    from dermdl.figures import save_figure

    names = _metric_names(result)
    rows = result["columns"][column]
    fig = Figure(figsize=(3.2 * len(names) + 1.5, 0.4 * len(rows) + 1.4))
    axes = fig.subplots(1, len(names), sharey=True, squeeze=False)[0]
    ticks = [f"{name} (n={row['n']}{'' if 'below_overall' in row else ', too few'})" for name, row in rows.items()]
    ys = np.arange(len(rows))[::-1]
    for ax, m in zip(axes, names):
        for y, row in zip(ys, rows.values()):
            if m not in row or row[m]["value"] is None:
                continue
            v = row[m]
            flagged = m in row["below_overall"]
            color = "tab:red" if flagged else "tab:blue"
            if v["lo"] is not None and v["hi"] is not None:
                ax.plot([v["lo"], v["hi"]], [y, y], color=color, lw=1.5)
            ax.plot([v["value"]], [y], "o" if flagged else "s", color=color, mfc=color if flagged else "white")
        if result["overall"][m]["value"] is not None:
            ax.axvline(result["overall"][m]["value"], color="0.4", ls="--", lw=1)
        ax.set_title(metric_label(m), fontsize=9)
        if _unit_interval(result, m):
            ax.set_xlim(-0.02, 1.02)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(ys, ticks, fontsize=8)
    fig.suptitle(f"{title} (dashed: overall; red: CI entirely below it)", fontsize=10)
    save_figure(fig, path)


def _unit_interval(result: Mapping[str, Any], metric: str) -> bool:
    values = [result["overall"][metric]] + [
        row[metric] for rows in result["columns"].values() for row in rows.values() if metric in row
    ]
    bounds = [x for v in values for x in (v["value"], v["lo"], v["hi"]) if x is not None]
    return bool(bounds) and 0.0 <= min(bounds) and max(bounds) <= 1.0


def write_subgroup_plots(result: Mapping[str, Any], test: str, plots_dir: Path) -> None:
    """plots/subgroups/<test>--<column>.json (DVC) and plots/figures/<test>_subgroups_<column>.png."""
    for column in result["columns"]:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in column)
        atomic_write_json(plots_dir / "subgroups" / f"{test}--{safe}.json", plot_records(result, column))
        plot_forest(
            result, column, plots_dir / "figures" / f"{test}_subgroups_{safe}.png", f"{test}: metrics by {column}"
        )


def subgroup_section(
    metadata: Mapping[str, Sequence[str | None]],
    bands: Mapping[str, float],
    metrics_of: Callable[[np.ndarray], Metrics],
    test: str,
    plots_dir: Path,
    min_n: int = MIN_N,
) -> dict[str, Any]:
    """The whole section for one test set: label, score, write plots; returns the ``subgroups`` record.
    Any task calls this with its metadata values (column -> value per image) and its ``metrics_of``."""
    labels = {}
    for column, values in metadata.items():
        try:
            labels[column] = subgroup_labels(values, bands.get(column))
        except ValueError as exc:
            raise ValueError(f"analyze.bands.{column}: {exc}; remove it from analyze.bands") from None
    result = analyze_subgroups(labels, metrics_of, min_n)
    write_subgroup_plots(result, test, plots_dir)
    return result
