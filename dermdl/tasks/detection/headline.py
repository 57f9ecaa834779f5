"""Detection's headline numbers for ``metrics.json`` (``dvc exp show``): COCO AP@[.50:.95] and AP50;
the other COCO numbers, per-category APs and every CI stay in report.json."""

from __future__ import annotations

from dermdl.headline import Headline, value


def headline(metrics: dict) -> Headline:
    return {name: value(metrics["overall"][name]) for name in ("AP", "AP50")}
