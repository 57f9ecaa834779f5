"""The heatmap overlay and the explanation gallery figure: one row per question (confident errors,
unsure correct cases, each class's clearest cases), each tile the image under its heatmap with true /
predicted class and probability.

Why apart from :mod:`~dermdl.tasks.classification.explain`: that module computes maps (torch, captum);
this one only lays out pixels (matplotlib), like the other ``plots`` modules.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

Tile = tuple[tuple[np.ndarray, np.ndarray], str]  # ((display pixels, heatmap), caption)


def overlay(pixels: np.ndarray, heat: np.ndarray, strength: float = 0.6) -> np.ndarray:
    """The heatmap in the jet colour map over the image, opaque where the evidence is strong and clear
    where there is none, so the lesion stays visible under a weak map."""
    from matplotlib import colormaps  # lazy: matplotlib is slow to import

    colour = colormaps["jet"](heat)[..., :3] * 255.0
    alpha = strength * heat[..., None]
    return np.clip((1 - alpha) * pixels + alpha * colour + 0.5, 0, 255).astype(np.uint8)


def plot_explanations(rows: Sequence[tuple[str, Sequence[Tile]]], path: str | os.PathLike, title: str) -> None:
    """A grid: rows as given, as many columns as the longest row; a row without cases says so."""
    from matplotlib.figure import Figure

    from dermdl.figures import save_figure

    columns = max([len(tiles) for _, tiles in rows] + [1])
    fig = Figure(figsize=(1.9 * columns + 1.2, 2.3 * len(rows) + 0.4), layout="constrained")
    axes = fig.subplots(len(rows), columns, squeeze=False)
    for r, (label, tiles) in enumerate(rows):
        for c in range(columns):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(tiles):
                (pixels, heat), caption = tiles[c]
                ax.imshow(overlay(pixels, heat), interpolation="nearest")
                ax.set_xlabel(caption, fontsize=7)
            else:
                for spine in ax.spines.values():
                    spine.set_visible(False)
                if c == 0:
                    ax.text(0.5, 0.5, "no such case", ha="center", va="center", fontsize=8, transform=ax.transAxes)
        axes[r][0].set_ylabel(label.replace(": ", ":\n"), fontsize=8)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path, dpi=110, private=True)  # patient images: encrypted in an encrypted run
