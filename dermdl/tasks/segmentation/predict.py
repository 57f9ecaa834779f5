"""Segmentation inference: class probabilities for any images and self-training pseudo-labels (the masks,
overlays and CSV are written by :mod:`.writer`, which needs no torch, so ONNX Runtime predictions share it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dermdl.arrays import TARGETS, PreparedImages
from dermdl.inference import softmax_tta, to_input_tensor
from dermdl.models import ModelConfig
from dermdl.prepare import open_source
from dermdl.records import Record
from dermdl.tasks.segmentation.data import resize_probs
from dermdl.tasks.segmentation.writer import (  # noqa: F401  (re-exported: callers import them from here)
    PROBABILITIES,
    SegPrediction,
    _unique_stem,
    write_predictions,
)


@torch.inference_mode()
def predict(
    model: torch.nn.Module, config: ModelConfig, paths: Sequence[Path], bs: int = 16, tta: str = "none"
) -> list[SegPrediction]:
    """Probabilities for any images, prepared or raw: the training geometry is re-applied."""
    device = next(model.parameters()).device
    model.eval()
    out: list[SegPrediction] = []
    for start in range(0, len(paths), bs):
        images = [open_source(p, config.color_constancy) for p in paths[start : start + bs]]
        batch = torch.stack([to_input_tensor(im, config) for im in images]).to(device)
        probs = softmax_tta(model, batch, tta, spatial=True).cpu().numpy().astype(np.float16)
        out += [SegPrediction(p, *im.size) for p, im in zip(probs, images)]
    return out


def pseudo_label(
    model: torch.nn.Module, config: ModelConfig, records: Sequence[Record], params: Any, work_dir: Path
) -> list[Record]:
    """Self-training: the teacher's class ids of each weakly labelled image, at the prepared size, in
    ``work_dir/targets.npy``; the records point training there (``target_arrays``, ``target_row``)."""
    size = config.preprocess_size
    preds = predict(model, config, PreparedImages(records), params.infer.bs, params.training_tta)
    work_dir.mkdir(parents=True, exist_ok=True)
    labels = np.lib.format.open_memmap(work_dir / TARGETS, mode="w+", dtype=np.uint8, shape=(len(records), size, size))
    out: list[Record] = []
    for index, (record, pred) in enumerate(zip(records, preds)):
        labels[index] = resize_probs(pred.probs, size).argmax(axis=0)
        out.append({**record, "target_arrays": str(work_dir), "target_row": index})
    labels.flush()
    return out
