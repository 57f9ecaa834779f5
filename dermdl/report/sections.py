"""The report's sections: run summary, training, one block per test set.

Each function takes the parsed :class:`~dermdl.report.run_files.RunFiles` and returns HTML; what a file
does not hold is said in the page (a warning box), never guessed. Nothing here knows a task's name.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from typing import Any

from dermdl.report.html import anchor, esc, figure, key_values, table, warning
from dermdl.report.metrics_view import headline_rows, headline_table, label, render_tree
from dermdl.report.run_files import RunFiles

#: Captions of the figures the analyze stage writes, by the part of the name after ``<test>_``;
#: an unknown name is captioned from the file name (a plug-in task's figure is still shown).
CAPTIONS = {
    "confusion": "Confusion matrix: rows = truth, columns = prediction",
    "roc": "ROC curves (sensitivity against 1 - specificity), one-vs-rest",
    "pr": "Precision-recall curves",
    "metrics": "Metrics with their 95% bootstrap CIs",
    "reliability": "Reliability diagram: observed frequency against predicted probability (diagonal = calibrated)",
    "operating_points": "Operating points chosen on the validation split, with their test values",
    "gallery": "Gallery: ground truth against prediction",
    "gallery_best": "Gallery: best-scored test images",
    "gallery_worst": "Gallery: worst-scored test images",
    "gallery_worst_probability": "Gallery: worst images with the predicted probability map",
    "gallery_worst_ap": "Gallery: images with the lowest per-image AP",
    "explanations": "Explanation heatmaps: where the model looked for its predicted class",
}


def _order(stem: str) -> tuple[int, str]:
    """Figures in reading order: confusion, curves, metrics, calibration, others (subgroups), galleries."""
    known = list(CAPTIONS)
    return (2 * known.index(stem) if stem in known else 2 * known.index("gallery") - 1, stem)


def caption(stem: str) -> str:
    if stem in CAPTIONS:
        return CAPTIONS[stem]
    if stem.startswith("subgroups"):
        return (
            f"Subgroups{stem[len('subgroups') :].replace('_', ' ')}: each metric per subgroup (red: CI below overall)"
        )
    return stem.replace("_", " ").capitalize()


def figures_by_test(names: list[str], tests: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """Figure files per test set (the LONGEST matching ``<test>_`` prefix wins, so ``sl_test`` and
    ``sl_test_b`` never share figures) and the files that belong to no test set."""
    found: dict[str, list[str]] = {test: [] for test in tests}
    other = []
    for name in names:
        owners = [t for t in tests if name.startswith(f"{t}_")]
        if owners:
            found[max(owners, key=len)].append(name)
        else:
            other.append(name)
    return found, other


def class_counts(records: list[Mapping[str, Any]], classes: list[str]) -> tuple[Counter[str], str]:
    """Per class: images whose target is the class name, or objects (targets that are lists of
    ``{"category": ...}``); empty when a target names no class (a mask)."""
    counts: Counter[str] = Counter()
    unit = "images"
    for record in records:
        target = record.get("target")
        if isinstance(target, str) and target in classes:
            counts[target] += 1
        elif isinstance(target, list):
            unit = "objects"
            counts.update(str(o["category"]) for o in target if isinstance(o, Mapping) and "category" in o)
    return counts, unit


def _roles(params: Mapping[str, Any] | None) -> dict[str, str]:
    data = (params or {}).get("data") or {}
    roles: dict[str, str] = {}
    for key, text in (("sl_train", "training"), ("wl_train", "weakly labelled training"), ("sl_tests", "test")):
        for name in data.get(key) or []:
            roles.setdefault(str(name), text)
    return roles


def data_table(run: RunFiles) -> str:
    if not run.manifest:
        return warning("No prepared data (prepared/manifest.json): run the preprocess stage to list the data sets.")
    datasets: Mapping[str, list] = run.manifest.get("datasets") or {}
    classes = run.classes
    roles = _roles(run.params)
    counted = {name: class_counts(records, classes) for name, records in datasets.items()}
    shown = [c for c in classes if any(counts[c] for counts, _ in counted.values())]
    rows = [
        [name, roles.get(name, ""), len(records), unit if shown else ""] + [counted[name][0][c] for c in shown]
        for name, records in datasets.items()
        for unit in [counted[name][1]]
    ]
    note = "" if shown else '<p class="muted">The targets name no class per image (masks): counts are images only.</p>'
    return table(["data set", "role", "images", "per class"] + shown, rows) + note


def leak_check(run: RunFiles) -> str:
    report = run.validate
    if not report:
        return warning("No validate/report.json: the layout and leak check (validate stage) did not run.")
    leaks = report.get("leaks") or {}
    counts = leaks.get("counts") or {}
    found = sum(v for v in counts.values() if isinstance(v, (int, float)))
    status = '<span class="ok">passed</span>' if report.get("ok") and not found else '<span class="bad">problems</span>'
    rows: list[tuple[str, Any]] = [
        ("layout errors", report.get("n_errors")),
        ("layout warnings", report.get("n_warnings")),
        ("train images checked", leaks.get("train_images")),
        ("test images checked", leaks.get("test_images")),
        ("group file", leaks.get("groups_file") or "none (every image its own group)"),
    ]
    rows += [(f"{kind} leaks", n) for kind, n in counts.items()]
    if found and leaks.get("allowed"):
        rows.append(("leaks allowed (data.allow_leaks)", True))
    problems = [p for p in report.get("problems") or [] if isinstance(p, Mapping)][:10]
    listed = (
        table(
            ["severity", "path", "problem", "fix"],
            [[p.get("severity"), p.get("path"), p.get("problem"), p.get("fix")] for p in problems],
        )
        if problems
        else ""
    )
    return f"<p>Layout and train/test leak check: {status}</p>" + key_values(rows) + listed


def _flat(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out |= _flat(value, name + ".")
        else:
            out[name] = value
    return out


def changed_params(run: RunFiles, current: Mapping[str, Any] | None) -> str:
    """The run's parameters that differ from dermdl's defaults (model/params.json against Params()),
    and what the analyze call changed since training."""
    from dermdl.params import Params

    params = run.params or current
    if params is None:
        return warning("No model/params.json: the run's parameters are unknown (train has not run).")
    defaults = _flat(Params().to_dict())
    flat = _flat(params)
    rows = [
        [key, _show(flat[key]), _show(defaults.get(key, "(not a default key)"))]
        for key in flat
        if flat[key] != defaults.get(key)
    ]
    html = table(["parameter", "this run", "default"], rows) if rows else "<p>All parameters are at their defaults.</p>"
    if current is not None and run.params is not None:
        now = _flat(current)
        later = [[k, _show(flat.get(k)), _show(now[k])] for k in now if now[k] != flat.get(k)]
        if later:
            html += "<h4>Changed after training (used by infer/analyze)</h4>" + table(
                ["parameter", "training", "now"], later
            )
    return html


def _show(value: Any) -> str:
    """A parameter value as params.yaml spells it (true, null, [a, b], {k: v})."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def model_summary(run: RunFiles) -> str:
    model = run.model
    if not model:
        return warning("No model/model.json: the train stage has not written a model.")
    extra = model.get("extra") or {}
    rows: list[tuple[str, Any]] = [
        ("task", model.get("task")),
        ("architecture", model.get("arch")),
        ("input size (px)", model.get("input_size")),
        ("prepared size (px), resize", f"{model.get('preprocess_size')}, {model.get('resize')}"),
        ("classes", ", ".join(run.classes)),
        ("temperature (probability scaling)", extra.get("temperature", "none fitted")),
        ("normalisation mean / std", f"{model.get('mean')} / {model.get('std')}"),
        ("dermdl version", model.get("dermdl_version")),
    ]
    rows += [(f"extra: {k}", _show(v)) for k, v in extra.items() if k != "temperature"]
    return key_values(rows)


def training_summary(run: RunFiles) -> str:
    train = run.train
    if not train:
        return warning("No model/train.json: the train stage has not finished.")
    keys = [k for k, v in train.items() if not isinstance(v, (list, Mapping))]
    html = key_values((label(k), train[k]) for k in keys)
    phases = [p for p in train.get("phases") or [] if isinstance(p, Mapping)]
    if phases:
        columns = list(dict.fromkeys(k for p in phases for k in p))
        html += "<h4>Phases</h4>" + table([label(c) for c in columns], [[p.get(c) for c in columns] for p in phases])
    return html


def training_curves(run: RunFiles) -> str:
    from dermdl.report.curves import curves_png

    png = curves_png(run.curves)
    if png is None:
        return warning("No training curves (dvclive/plots/metrics/*.tsv): the train stage has not logged any epoch.")
    return figure(
        png, "Per-epoch training curves (dvclive): losses, validation metrics, learning rate", "training curves"
    )


def test_set(run: RunFiles, name: str, figures: list[str]) -> str:
    section = (run.report or {}).get(name)
    parts = [f'<h2 id="{anchor("test-" + name)}">Test set {esc(name)}</h2>']
    if not isinstance(section, Mapping):
        return parts[0] + warning(f"report.json has no metrics for {name}.")
    n = section.get("n")
    parts.append(f"<p>{esc(n)} images.</p>" if n is not None else "")
    metrics = (run.metrics or {}).get(name)
    rows = headline_rows(metrics if isinstance(metrics, Mapping) else None, section)
    if rows:
        parts.append("<h3>Headline metrics</h3>" + headline_table(rows))
    parts.append("<h3>Figures</h3>")
    if figures:
        stems = sorted((f[len(name) + 1 : -len(".png")] for f in figures), key=_order)
        figures = [f"{name}_{s}.png" for s in stems]
        parts.append(
            '<div class="grid">'
            + "".join(
                figure(run.figures[f], f"{name}: {caption(s)} ({f})", f"{name} {s}") for f, s in zip(figures, stems)
            )
            + "</div>"
        )
    else:
        parts.append(warning(f"No figures for {name} in plots/figures/: re-run the analyze stage."))
    parts.append(
        f"<details open><summary>All metrics of {esc(name)} (report.json)</summary>{render_tree(section)}</details>"
    )
    return "".join(parts)


def other_figures(run: RunFiles, names: list[str]) -> str:
    if not names:
        return ""
    return "<h2>Other figures</h2>" + "".join(figure(run.figures[f], caption(f[:-4]), f) for f in names)


def console_summary(run: RunFiles) -> str:
    if not run.summary:
        return ""
    return f"<details><summary>Printed summary (summary.txt)</summary><pre>{esc(run.summary)}</pre></details>"


def problems(run: RunFiles) -> str:
    return "".join(warning(p) for p in run.problems)
