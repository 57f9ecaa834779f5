"""What a training run prints for a person: phase titles, the epoch table's rows, the closing summary.

A log of ``dvc repro`` is read after the fact (piped to a file, a CI page), so it gets one line per
epoch that names its phase; a terminal also gets a live batch bar (:class:`dermdl.callbacks.EpochTable`).
Plain text throughout: no dict reprs, no carriage-return frames in a file. No torch/fastai import here.
"""

from __future__ import annotations

import re
import sys
from typing import Any

#: Phase-name parts (dermdl.schedule.phases, weak_labels) -> words; frozen/unfrozen read as they are.
_WORDS = ((re.compile(r"^round(\d+)$"), r"round \1"), (re.compile(r"^x([\d.]+)$"), r"size x\1"))
_NAMED = {"weak": "weak labels", "pseudo": "pseudo-labels"}


def live_bars() -> bool:
    """Batch progress bars only on a terminal (fastprogress would draw them into a piped log too)."""
    return sys.stdout.isatty()


def phase_title(name: str, context: str = "") -> str:
    """``round1_pseudo_frozen`` -> ``round 1 pseudo-labels frozen``; ``context`` (e.g. ``fold 2/5``) first."""
    words = []
    for part in filter(None, name.split("_")):
        for pattern, replacement in _WORDS:
            if pattern.match(part):
                part = pattern.sub(replacement, part)
                break
        words.append(_NAMED.get(part, part))
    return " ".join(filter(None, [context, *words]))


def phase_start(context: str, phase: Any, skip: int, description: str) -> str:
    """The line before a phase's table: its name as logged (dvclive, checkpoints) and its LR plan."""
    where = f"{context}: " if context else ""
    return f"train: {where}phase {phase.name} - epochs {skip + 1}-{phase.epochs} of {phase.epochs}, {description}"


def cell(value: Any) -> str:
    """One table cell: floats to 4 decimals, undefined as '-', anything else as text."""
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def table_line(cells: list[str], widths: list[int]) -> str:
    return "  ".join(text.ljust(width) for text, width in zip(cells, widths)).rstrip()


def train_summary(summary: dict[str, Any]) -> str:
    """The last line of ``dermdl train``: what was trained, on how much, how fast, in words."""
    phases = summary.get("phases") or []
    per_phase = ", ".join(f"{phase_title(p['phase'])} {p['epochs']}" for p in phases)
    text = (
        f"train: done in {summary['seconds']:.1f} s - {summary['epochs']} epoch(s)"
        + (f" ({per_phase})" if per_phase else "")
        + f" on {summary['train_images']} images, {summary['valid_images']} for validation"
    )
    if summary.get("weak_images"):
        text += f", {summary['weak_images']} weakly labelled"
    if summary.get("grouped_images"):
        text += f" ({summary['grouped_images']} with a lesion/patient group)"
    text += (
        f"; {summary['train_images_per_second']:.1f} training images/s"
        f" ({summary['data_loading_share']:.0%} of it making batches)"
        f"; lr {summary['lr']:.1e}, {summary['optimizer']}, precision {_precision(summary['mixed_precision'])}"
    )
    if summary.get("best_epoch"):
        text += f"; kept the weights of epoch {summary['best_epoch']}"
    if summary.get("stopped_early"):
        text += "; stopped early"
    return text


def _precision(mode: str) -> str:
    return "fp32" if mode == "off" else mode
