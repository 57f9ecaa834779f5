"""Predictions of every test set with a model in memory: the infer stage's and each self-training round's.

Why a module of its own: infer and the train stage's self-training rounds predict the test sets the same way
(whole images or by tiles, with the params' TTA), so that one loop lives here, below both, with the round
evaluator that scores a round's model from its predictions.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from dermdl.manifest import _records
from dermdl.params import Params


def predict_tests(task, model, config, params: Params, manifest: dict, dest: Path) -> dict[str, Path]:
    """Predictions of every test set into ``dest``; returns name -> file written."""
    from dermdl.arrays import PreparedImages
    from dermdl.tiling import Tiles

    written = {}
    for name in params.data.sl_tests:
        records = _records(manifest, (name,))
        images = PreparedImages(records)
        if params.infer.tile_size:  # large prepared images (preprocess.size) by tiles: docs/large-images.md
            tiles = Tiles(params.infer.tile_size, params.infer.tile_overlap, params.infer.tile_aggregate)
            preds = task.predict_tiled(model, config, images, params.infer.bs, params.tta, tiles)
        else:
            preds = task.predict(model, config, images, params.infer.bs, params.tta)
        written[name] = task.write_predictions(records, preds, config, dest, name)
    return written


def _round_evaluator(task, params: Params, manifest: dict, rounds_dir: Path):
    """Self-training: score a round's model on every test set (predictions and plots kept per round)."""

    def evaluate(model, config, index: int) -> dict:
        folder = rounds_dir / f"round_{index}"
        shutil.rmtree(folder, ignore_errors=True)  # an interrupted attempt at this round
        predict_tests(task, model, config, params, manifest, folder / "predictions")
        return {
            name: task.analyze(folder / "predictions", name, config, params, folder / "plots")
            for name in params.data.sl_tests
        }

    return evaluate
