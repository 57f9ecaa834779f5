"""A short model card: intended use, data, limits, the numbers.

Why the limits are computed, not written: a card is only honest if it says what THIS run's files show —
a class missing from a test set, a subgroup whose CI lies below the overall value, leaks, undefined
metrics, uncalibrated probabilities, a small test set. Each flag comes from a file's content (a key such
as ``absent_classes`` or ``below_overall`` wherever a task puts it), never from the task's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dermdl.report.html import esc
from dermdl.report.metrics_view import ci_text, find_key, headline_rows, is_ci, label, undefined_metrics
from dermdl.report.run_files import RunFiles

#: Below this many test images a 95% CI is typically wider than +-0.1 for a proportion near 0.8.
SMALL_TEST = 100
#: Undefined metrics listed by name before the rest is counted.
SHOWN = 4

INTENDED_USE = (
    "Research only: a model trained and evaluated with dermdl for studying skin-lesion images. It is not a "
    "medical device, has not been validated prospectively or cleared by any regulator, and must not be used "
    "to diagnose, triage or treat patients. Its numbers hold for the test sets below only; other clinics, "
    "cameras, populations and skin types can differ."
)


def data_lines(run: RunFiles) -> list[str]:
    params = run.params or {}
    data = params.get("data") or {}
    train = run.train or {}
    datasets = (run.manifest or {}).get("datasets") or {}

    def sized(names: Any) -> str:
        return ", ".join(f"{n} ({len(datasets.get(n, []))} images)" if n in datasets else str(n) for n in names or [])

    lines = []
    if data.get("sl_train"):
        lines.append(f"Training data: {sized(data['sl_train'])}.")
    if data.get("wl_train") and train.get("weak_images"):
        lines.append(f"Weakly labelled data: {sized(data['wl_train'])}.")
    if train:
        settings = params.get("train") or {}
        split = (
            f"{train.get('train_images')} training / {train.get('valid_images')} validation images "
            f"(valid_size {settings.get('valid_size')}, seed {settings.get('seed')}"
        )
        grouped = train.get("grouped_images") or 0
        split += f"; {grouped} images with a lesion/patient id kept on one side)" if grouped else "; no group ids)"
        lines.append(f"Split: {split}.")
    if run.test_sets:
        sizes = [
            f"{name} ({(run.report or {})[name].get('n', '?')} images)"
            for name in run.test_sets
            if isinstance((run.report or {})[name], Mapping)
        ]
        lines.append(f"Test data: {', '.join(sizes)}.")
    if run.classes:
        lines.append(f"Classes: {', '.join(run.classes)}.")
    return lines


def limits(run: RunFiles) -> list[str]:
    flags: list[str] = []
    leaks = (run.validate or {}).get("leaks") or {}
    counts = leaks.get("counts") or {}
    found = sum(v for v in counts.values() if isinstance(v, (int, float)))
    if run.validate is None:
        flags.append("The layout and leak check (validate stage) did not run: train/test independence is unchecked.")
    elif found:
        flags.append(
            f"{found} training/test leak(s) found by the validate stage ({counts}): test metrics are optimistic."
        )
    elif run.validate and not leaks.get("groups_file") and not (run.train or {}).get("grouped_images"):
        flags.append(
            "No lesion/patient ids (data.groups): test independence was checked by image similarity only, and "
            "images of one lesion may be split between training and validation."
        )
    train = run.train or {}
    if train and not train.get("valid_images"):
        flags.append(
            "No validation split (train.full_data): no early stopping, temperature or operating point was "
            "fitted on held-out data."
        )
    calibrated = "temperature" in ((run.model or {}).get("extra") or {})
    for name in run.test_sets:
        section = (run.report or {})[name]
        if not isinstance(section, Mapping):
            continue
        n = section.get("n")
        if isinstance(n, int) and n < SMALL_TEST:
            flags.append(f"{name}: only {n} test images, so the confidence intervals are wide.")
        for _path, absent in find_key(section, "absent_classes"):
            if absent:
                flags.append(f"{name}: no test images of {', '.join(map(str, absent))}: their metrics are undefined.")
        for path, below in find_key(section, "below_overall"):
            if below:
                where = " \u203a ".join(path[:-1])
                flags.append(
                    f"{name}: subgroup {where}: {', '.join(label(m) for m in below)} "
                    "below the overall value (whole CI)."
                )
        undefined = undefined_metrics(section)
        if undefined:
            more = f" and {len(undefined) - SHOWN} more" if len(undefined) > SHOWN else ""
            flags.append(f"{name}: {len(undefined)} metric(s) undefined (e.g. {'; '.join(undefined[:SHOWN])}{more}).")
        if find_key(section, "calibration") and not calibrated:
            flags.append(
                f"{name}: probabilities are not temperature-scaled; see the calibration rows for how far off they are."
            )
    return flags


def numbers(run: RunFiles) -> str:
    items = []
    for name in run.test_sets:
        section = (run.report or {})[name]
        metrics = (run.metrics or {}).get(name)
        if not isinstance(section, Mapping) or not isinstance(metrics, Mapping):
            continue
        shown = [f"{k} {ci_text(v) if is_ci(v) else v}" for k, v in headline_rows(metrics, section)[:6]]
        items.append(f"<li><b>{esc(name)}</b>: {esc('; '.join(shown))}</li>")
    return f"<ul>{''.join(items)}</ul>" if items else '<p class="muted">No test metrics yet (analyze stage).</p>'


def model_card(run: RunFiles) -> str:
    model = run.model or {}
    what = (
        f"{model.get('arch', '?')} ({model.get('task', '?')}, {model.get('input_size', '?')} px input)"
        if model
        else "no model yet"
    )
    flags = limits(run)
    return (
        '<h2 id="model-card">Model card</h2><div class="card">'
        f"<h3>Model</h3><p>{esc(what)}</p>"
        f"<h3>Intended use</h3><p>{esc(INTENDED_USE)}</p>"
        "<h3>Data</h3><ul>" + "".join(f"<li>{esc(line)}</li>" for line in data_lines(run)) + "</ul>"
        "<h3>Limits</h3><ul>"
        + "".join(f"<li>{esc(flag)}</li>" for flag in flags)
        + ("" if flags else "<li>None flagged by this run's files (still: research use only).</li>")
        + "</ul><h3>The numbers (95% CI)</h3>"
        + numbers(run)
        + "</div>"
    )
