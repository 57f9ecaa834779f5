"""Segmentation's headline numbers for ``metrics.json`` (``dvc exp show``): foreground Dice and IoU
(mean over the foreground classes) and the 95th-percentile boundary distance of each foreground
class (``hd95``; ``hd95_<class>`` with several); everything else stays in report.json."""

from __future__ import annotations

from dermdl.headline import Headline, value


def headline(metrics: dict) -> Headline:
    out: Headline = {
        "dice_foreground": value(metrics["overall"]["dice_foreground"]),
        "iou_foreground": value(metrics["overall"]["iou_foreground"]),
    }
    boundary = metrics.get("boundary") or {}
    for cls, row in boundary.items():
        out["hd95" if len(boundary) == 1 else f"hd95_{cls}"] = value(row.get("hd95"))
    return out
