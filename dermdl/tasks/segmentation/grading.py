"""Disease grading from predicted lesion masks: per image, the number of lesions and the affected-area share.

Why: the thesis graded hand eczema and palmoplantar pustulosis by segmenting lesions and counting them per
image. ``dermdl grade`` reads the masks ``infer`` wrote (``<out_dir>/predictions/<test>/masks``) and writes
``<out_dir>/grading/<test>.csv`` plus a summary plot ``<test>.png``. A lesion is a connected component
(8-connected) of non-background pixels (any class but ``codes[0]``) with at least ``min_area`` pixels, so
specks of a few pixels are not counted; the affected share is the area of the counted lesions over the
image area.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dermdl.images import open_mask
from dermdl.io import atomic_write_text
from dermdl.model_config import ModelConfig

GRADING = "grading"
COLUMNS = ["image", "mask", "lesions", "lesion_pixels", "affected_share", "largest_lesion_pixels"]


@dataclass(frozen=True)
class Grade:
    lesions: int
    lesion_pixels: int
    affected_share: float
    largest_lesion_pixels: int


def grade_mask(lesion: np.ndarray, min_area: int) -> Grade:
    """Lesion count and area of a boolean lesion mask: 8-connected components of >= ``min_area`` pixels."""
    from scipy import ndimage

    if min_area < 1:
        raise ValueError(f"grade --min-area {min_area}: give a number of pixels >= 1")
    components, n = ndimage.label(np.asarray(lesion, dtype=bool), structure=np.ones((3, 3), dtype=int))
    areas = np.bincount(components.ravel(), minlength=n + 1)[1:]
    kept = areas[areas >= min_area]
    total = int(kept.sum())
    return Grade(int(kept.size), total, total / lesion.size if lesion.size else 0.0, int(kept.max(initial=0)))


def grade_test_set(predictions: Path, name: str, config: ModelConfig, min_area: int) -> pd.DataFrame:
    """One row per image of ``predictions/<name>.csv`` (the segmentation infer output)."""
    from dermdl.tasks.segmentation.data import config_value_map

    table_path = predictions / f"{name}.csv"
    if not table_path.is_file():
        raise FileNotFoundError(f"{table_path}: missing; run `dermdl infer` first (with the same --params)")
    table = pd.read_csv(table_path)
    if "mask" not in table.columns:
        raise ValueError(
            f"{table_path} has no mask column: grade needs segmentation predictions (task: segmentation, then infer)"
        )
    vmap = config_value_map(config)
    rows: list[dict[str, Any]] = []
    for image, mask in zip(table["image"], table["mask"]):
        path = predictions / str(mask)
        classes = vmap.to_classes(open_mask(path), path)
        grade = grade_mask(classes != 0, min_area)
        rows.append({"image": image, "mask": str(mask)} | grade.__dict__)
    return pd.DataFrame(rows, columns=COLUMNS)


def plot_grades(frame: pd.DataFrame, title: str, path: Path) -> None:
    """Left: how many images have 0, 1, 2, ... lesions. Right: each image's affected share, sorted."""
    from matplotlib.figure import Figure

    from dermdl.figures import save_figure

    fig = Figure(figsize=(9, 3.5))
    left, right = fig.subplots(1, 2)
    counts = frame["lesions"].to_numpy(dtype=int)
    top = int(counts.max(initial=0))
    left.bar(range(top + 1), np.bincount(counts, minlength=top + 1), color="tab:red")
    left.set(xlabel="lesions per image", ylabel="images", title="lesion count")
    shares = np.sort(frame["affected_share"].to_numpy(dtype=float))[::-1]
    right.bar(range(len(shares)), 100 * shares, color="tab:orange")
    right.set(xlabel="images (sorted)", ylabel="affected area (%)", title="affected-area share")
    fig.suptitle(title)
    save_figure(fig, path)


def grade(out_dir: Path, tests: tuple[str, ...], min_area: int) -> dict[str, pd.DataFrame]:
    """Grade every test set's predicted masks into ``out_dir/grading``; returns name -> table."""
    config = ModelConfig.from_json(out_dir / "model" / "model.json")
    results = {}
    for name in tests:
        frame = grade_test_set(out_dir / "predictions", name, config, min_area)
        atomic_write_text(out_dir / GRADING / f"{name}.csv", frame.to_csv(index=False, float_format="%.6f"))
        plot_grades(frame, f"{name}: {len(frame)} images, lesions >= {min_area} px", out_dir / GRADING / f"{name}.png")
        results[name] = frame
    return results


def summary_line(name: str, frame: pd.DataFrame) -> str:
    if frame.empty:
        return f"grade: {name}: no images"
    return (
        f"grade: {name}: {len(frame)} images, {frame['lesions'].mean():.2f} lesions per image "
        f"(max {frame['lesions'].max()}), mean affected area {100 * frame['affected_share'].mean():.1f}%"
    )
