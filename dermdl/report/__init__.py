"""One self-contained HTML report per experiment: ``<out_dir>/report.html``.

Written at the end of ``analyze`` and by ``dermdl report OUT_DIR`` from what the stages left in the
folder: run summary (data, leak check, changed parameters, model, training speed), training curves, per
test set the headline metrics with CIs, every figure and all metrics, and a short model card. Every
image is a ``data:`` URI and the CSS is inline, so the file opens offline in any browser and can be
mailed or archived on its own.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dermdl.io import atomic_write_text
from dermdl.report import sections
from dermdl.report.card import model_card
from dermdl.report.html import page, warning
from dermdl.report.run_files import RunFiles, read_run

REPORT = "report.html"


def build_html(run: RunFiles, current: Mapping[str, Any] | None = None) -> str:
    """The page for one output folder; ``current``: the parameters analyze ran with (shown where they
    differ from training's)."""
    tests = run.test_sets
    by_test, other = sections.figures_by_test(list(run.figures), tests)
    model = run.model or {}
    subtitle = (
        f"{model.get('task', 'dermdl')} \u00b7 {model.get('arch', 'no model yet')} \u00b7 {run.out} \u00b7 "
        f"written {_dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}"
    )
    body = [
        sections.problems(run),
        '<h2 id="summary">Run summary</h2>',
        "<h3>Data sets</h3>",
        sections.data_table(run),
        "<h3>Leak check</h3>",
        sections.leak_check(run),
        "<h3>Parameters that differ from the defaults</h3>",
        sections.changed_params(run, current),
        "<h3>Model</h3>",
        sections.model_summary(run),
        '<h2 id="training">Training</h2>',
        sections.training_summary(run),
        sections.training_curves(run),
    ]
    body += [sections.test_set(run, name, by_test[name]) for name in tests]
    if not tests:
        body.append(warning("No report.json: the analyze stage has not run, so there are no test metrics."))
    body += [sections.other_figures(run, other), sections.console_summary(run), model_card(run)]
    nav = [("summary", "Summary"), ("training", "Training")]
    nav += [("test-" + name, f"Test {name}") for name in tests] + [("model-card", "Model card")]
    return page("dermdl experiment report", subtitle, nav, "".join(body))


def write_report(out: str | Path, current: Mapping[str, Any] | None = None) -> Path:
    """Read ``out`` (an out_dir) and write ``out/report.html`` atomically; returns its path."""
    run = read_run(out)
    return atomic_write_text(Path(out) / REPORT, build_html(run, current))
