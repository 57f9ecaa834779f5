"""Detection pictures: per-image overlays (infer/predict), the GT-vs-prediction gallery and PR curves.

Overlays are drawn with PIL on the ORIGINAL image (downscaled to at most ``max_side`` pixels so a
folder of 20-megapixel photos stays browsable); figures use matplotlib's ``Figure`` (no GUI backend)
and every file is written atomically (:func:`dermdl.figures.save_figure`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

from dermdl.figures import save_figure
from dermdl.images import ImageError, open_rgb

GALLERY_SIZE = 8
GT_COLOUR = (40, 200, 60)
PALETTE = [
    (230, 25, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (170, 110, 40),
]


def colour(k: int) -> tuple[int, int, int]:
    return PALETTE[k % len(PALETTE)]


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def draw_boxes(
    image: Image.Image,
    boxes: Any,
    labels: Sequence[str],
    scores: Sequence[float] | None = None,
    colours: Sequence[tuple[int, int, int]] | None = None,
    max_side: int = 1024,
    min_side: int = 384,
) -> Image.Image:
    """A copy of ``image`` with boxes (xyxy, image pixels) and 'class score' captions, resized so its
    longer side is between ``min_side`` (captions stay readable) and ``max_side``."""
    longest = max(image.size)
    scale = max_side / longest if longest > max_side else (min_side / longest if longest < min_side else 1.0)
    out = image.convert("RGB")
    if scale != 1.0:
        out = out.resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BILINEAR
        )
    draw = ImageDraw.Draw(out)
    width = max(1, round(max(out.size) / 200))
    font = _font(max(10, round(max(out.size) / 40)))
    for index, box in enumerate(np.asarray(boxes, dtype=np.float64).reshape(-1, 4)):
        x0, y0, x1, y1 = (float(v) * scale for v in box)
        rgb = colours[index] if colours else GT_COLOUR
        draw.rectangle([x0, y0, x1, y1], outline=rgb, width=width)
        text = labels[index] + (f" {scores[index]:.2f}" if scores is not None else "")
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        y_text = y0 - bottom - 3 if y0 - bottom - 3 >= 0 else y0  # above the box, or inside at the top
        draw.rectangle([x0, y_text, x0 + right + 4, y_text + bottom + 2], fill=rgb)
        draw.text((x0 + 2, y_text), text, fill=(255, 255, 255), font=font)
    return out


def save_png(image: Image.Image, path: str | os.PathLike) -> None:
    """A predicted overlay (patient image): encrypted when the run is (``data.encrypted``)."""
    import io

    from dermdl.crypto.outputs import write_output

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    write_output(path, buffer.getvalue())


def _panel(ax, image: np.ndarray, boxes: np.ndarray, texts: list[str], colours: list, title: str) -> None:
    from matplotlib.patches import Rectangle

    ax.imshow(image)
    for (x0, y0, x1, y1), text, rgb in zip(boxes, texts, colours):
        c = tuple(v / 255 for v in rgb)
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=c, linewidth=1.5))
        ax.text(x0, y0, text, color="white", fontsize=6, va="bottom", bbox={"facecolor": c, "pad": 1, "lw": 0})
    ax.set_title(title, fontsize=7)
    ax.set_axis_off()


def plot_gallery(cases: list[dict], path: str | os.PathLike, title: str) -> None:
    """Pairs of panels (ground truth | prediction) per case; ``cases`` hold ``image`` (HWC uint8),
    ``gt``/``pred`` boxes (xyxy), ``gt_labels``, ``pred_labels``, ``pred_scores``, ``pred_colours``, ``name``."""
    per_row = 2
    rows = max(1, -(-len(cases) // per_row))
    fig = Figure(figsize=(2.6 * 2 * per_row, 2.8 * rows))
    for index, case in enumerate(cases):
        gt_ax = fig.add_subplot(rows, 2 * per_row, 2 * index + 1)
        pred_ax = fig.add_subplot(rows, 2 * per_row, 2 * index + 2)
        _panel(
            gt_ax,
            case["image"],
            case["gt"],
            case["gt_labels"],
            [GT_COLOUR] * len(case["gt"]),
            f"{case['name'][:28]}\nground truth ({len(case['gt'])})",
        )
        pred_texts = [f"{n} {s:.2f}" for n, s in zip(case["pred_labels"], case["pred_scores"])]
        _panel(
            pred_ax,
            case["image"],
            case["pred"],
            pred_texts,
            case["pred_colours"],
            f"{case['note']}\nprediction ({len(case['pred'])})",
        )
    if not cases:
        fig.add_subplot().text(0.5, 0.5, "no images", ha="center")
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path, dpi=110, private=True)  # patient images: encrypted in an encrypted run


def plot_pr_curves(curves: dict[str, list[dict]], path: str | os.PathLike, title: str) -> None:
    """Precision-recall curve per category (IoU 0.5), AP50 in the legend."""
    fig = Figure(figsize=(6, 5))
    ax = fig.add_subplot()
    for k, (name, points) in enumerate(curves.items()):
        if not points:
            ax.plot([], [], label=f"{name} (n/a)")
            continue
        recall = [p["recall"] for p in points]
        precision = [p["precision"] for p in points]
        ap50 = sum(precision) / 101  # points with precision 0 were dropped: they add nothing
        ax.step(
            recall, precision, where="post", color=tuple(v / 255 for v in colour(k)), label=f"{name} (AP50 {ap50:.3f})"
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision (interpolated)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(title)
    save_figure(fig, path, dpi=110)


def _gallery_cases(gt: dict, results: list[dict], threshold: float) -> list[dict]:
    """Images with the most mistakes at IoU 0.5 (missed objects + wrong boxes above threshold) first."""
    import torch  # lazy: predict's overlays (this module too) run without torch on the ONNX path
    from torchvision.ops import box_iou

    names = {c["id"]: c["name"] for c in gt["categories"]}
    order = {c["id"]: k for k, c in enumerate(gt["categories"])}

    def xyxy(items: list[dict]) -> np.ndarray:
        return np.array(
            [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in items],
            dtype=np.float64,
        ).reshape(-1, 4)

    by_image: dict[int, tuple[list, list]] = {img["id"]: ([], []) for img in gt["images"]}
    for ann in gt["annotations"]:
        by_image[ann["image_id"]][0].append(ann)
    for res in results:
        if res["score"] >= threshold and res["image_id"] in by_image:
            by_image[res["image_id"]][1].append(res)
    cases = []
    for img in gt["images"]:
        truth, preds = by_image[img["id"]]
        g, p = xyxy(truth), xyxy(preds)
        matched = 0
        if len(g) and len(p):
            iou = box_iou(torch.from_numpy(p), torch.from_numpy(g)).numpy()
            same = np.array([[pr["category_id"] == t["category_id"] for t in truth] for pr in preds])
            matched = min(int(((iou >= 0.5) & same).any(axis=1).sum()), int(((iou >= 0.5) & same).any(axis=0).sum()))
        errors = (len(g) - matched) + (len(p) - matched)
        cases.append(
            {
                "img": img,
                "errors": errors,
                "gt": g,
                "pred": p,
                "gt_labels": [names[t["category_id"]] for t in truth],
                "pred_labels": [names[r["category_id"]] for r in preds],
                "pred_scores": [r["score"] for r in preds],
                "pred_colours": [colour(order[r["category_id"]]) for r in preds],
            }
        )
    cases.sort(key=lambda c: (-c["errors"], c["img"]["file_name"]))
    return cases


def _with_pictures(cases: list[dict], limit: int) -> list[dict]:
    """The first ``limit`` cases whose original image file is found, with the picture (at most 384 px)
    and boxes scaled to it; a case's own ``note`` (the tile caption) is kept."""
    shown: list[dict[str, Any]] = []
    for case in cases:
        if len(shown) == limit:
            break
        try:
            picture = open_rgb(case["img"].get("path", ""))
        except ImageError:
            continue
        scale = min(1.0, 384 / max(picture.size))
        if scale < 1.0:
            picture = picture.resize(
                (round(picture.width * scale), round(picture.height * scale)), Image.Resampling.BILINEAR
            )
        note = "correct" if not case["errors"] else f"{case['errors']} mistake(s)"
        shown.append(
            {"note": note}
            | case
            | {
                "image": np.asarray(picture),
                "gt": case["gt"] * scale,
                "pred": case["pred"] * scale,
                "name": case["img"]["file_name"],
            }
        )
    return shown


def plot_coco_gallery(gt: dict, results: list[dict], threshold: float, path: Path, title: str) -> None:
    """:func:`plot_gallery` of the first ``GALLERY_SIZE`` test images (mistakes first) whose original
    file is found, from a COCO ground-truth dict and COCO results (boxes scoring >= ``threshold``)."""
    plot_gallery(_with_pictures(_gallery_cases(gt, results, threshold), GALLERY_SIZE), path, title)


def plot_worst_ap_gallery(
    gt: dict, results: list[dict], threshold: float, worst: list[tuple[int, float]], path: Path, title: str
) -> None:
    """:func:`plot_gallery` of the images ``worst`` names (image id, per-image AP50), in that order,
    each tile captioned with its AP50; boxes scoring >= ``threshold`` are drawn."""
    by_id = {case["img"]["id"]: case for case in _gallery_cases(gt, results, threshold)}
    cases = [by_id[image_id] | {"note": f"image AP50 {ap:.2f}"} for image_id, ap in worst if image_id in by_id]
    plot_gallery(_with_pictures(cases, len(cases)), path, title)
