"""The baseline of bench/versus_bare.py: plain PyTorch loops a researcher would write by hand.

No Learner, no callbacks, no logging, no checkpoints: images already decoded into one uint8 array in
RAM, per-sample flips/transposes with ``torch.where``, ``torch.optim.AdamW`` + ``OneCycleLR``, NHWC
(channels-last) model and batches as an informed CPU user would write them; on a GPU (``device``) each
batch goes through pinned memory, and ``amp`` is plain ``torch.autocast`` (+ ``GradScaler`` for fp16). The
model, loss and normalisation are the same objects dermdl builds, so a difference in speed is the
engine's, not the network's. The flips are written out here on purpose rather than imported from
dermdl.augment: the baseline must not share the code it is measured against.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # CUDA runs asynchronously: time the work, not its launch


def _where(flag: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(flag.view((-1,) + (1,) * (a.dim() - 1)), a, b)


def flips(x: torch.Tensor, masks: torch.Tensor | None, bits: torch.Tensor):
    """Per-sample left-right flip, up-down flip, transpose (images and masks alike)."""
    for bit, op in ((1, lambda t: t.flip(-1)), (2, lambda t: t.flip(-2)), (4, lambda t: t.transpose(-1, -2))):
        chosen = bits & bit > 0
        x = _where(chosen, op(x), x)
        masks = None if masks is None else _where(chosen, op(masks), masks)
    return x, masks


def flip_boxes(boxes: torch.Tensor, bits: int, size: int) -> torch.Tensor:
    x0, y0, x1, y1 = boxes.unbind(-1)
    if bits & 1:
        x0, x1 = size - x1, size - x0
    if bits & 2:
        y0, y1 = size - y1, size - y0
    if bits & 4:
        x0, y0, x1, y1 = y0, x0, y1, x1
    return torch.stack([x0, y0, x1, y1], -1)


def train(
    model: torch.nn.Module,
    images: np.ndarray,
    targets: Any,
    loss_fn: Callable,
    *,
    bs: int,
    lr: float,
    epochs: int,
    norm: tuple | None,
    kind: str,
    device: str = "cpu",
    amp: str = "off",
) -> dict:
    """Train ``epochs`` epochs; ``kind``: labels | masks | boxes; ``amp``: off | bf16 | fp16 (CUDA).
    Returns training images/s."""
    n = len(images)
    steps = epochs * (n // bs)
    if steps < 1:
        raise ValueError(f"{n} training images make no batch of {bs}; lower the batch size (--bs)")
    dev = torch.device(device)
    model.to(dev)
    if hasattr(loss_fn, "to"):
        loss_fn.to(dev)  # class weights
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.25)
    mean, std = (None, None) if norm is None else (torch.tensor(v, device=dev).view(1, 3, 1, 1) for v in norm)
    dtype = AMP_DTYPES.get(amp)
    scaler = torch.amp.GradScaler(dev.type, enabled=amp == "fp16")
    if kind != "boxes":
        model.to(memory_format=torch.channels_last)
    model.train()
    seen, began = 0, time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(n)
        for start in range(0, n - bs + 1, bs):
            idx = order[start : start + bs]
            x = torch.from_numpy(images[idx.numpy()])
            x = (x.pin_memory() if dev.type == "cuda" else x).to(dev, non_blocking=True)
            x = x.permute(0, 3, 1, 2).float().div_(255)
            bits = torch.randint(0, 8, (len(idx),))
            with torch.autocast(dev.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                if kind == "boxes":
                    x, _ = flips(x, None, bits.to(dev))
                    y = [
                        {
                            "boxes": flip_boxes(targets[i]["boxes"], int(b), x.shape[-1]).to(dev),
                            "labels": targets[i]["labels"].to(dev),
                        }
                        for i, b in zip(idx.tolist(), bits)
                    ]
                    loss = sum(model(x, y).values())
                else:
                    masks = torch.from_numpy(targets[idx.numpy()]).to(dev).long() if kind == "masks" else None
                    x, masks = flips(x, masks, bits.to(dev))
                    x = (x - mean) / std
                    x = x.contiguous(memory_format=torch.channels_last)  # NHWC: oneDNN's / cuDNN's fast convolutions
                    loss = loss_fn(model(x), masks if kind == "masks" else targets[idx].to(dev))
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            seen += len(idx)
    _sync(dev)
    seconds = time.perf_counter() - began
    return {"images": seen, "seconds": seconds, "images_per_second": seen / seconds}


@torch.inference_mode()
def predict(model: torch.nn.Module, paths: list[str], size: int, bs: int, norm: tuple | None) -> dict:
    """Decode + resize (PIL, squish) + forward (+ softmax) for raw image files, batch by batch."""
    model.eval()
    dev = next(model.parameters()).device  # the trained model's device, as dermdl's predict
    mean, std = (None, None) if norm is None else (torch.tensor(v, device=dev).view(1, 3, 1, 1) for v in norm)
    began = time.perf_counter()
    for start in range(0, len(paths), bs):
        arrays = [
            np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.Resampling.BICUBIC))
            for p in paths[start : start + bs]
        ]
        x = torch.from_numpy(np.stack(arrays)).to(dev).permute(0, 3, 1, 2).float().div_(255)  # NHWC strides
        if mean is None:
            model(list(x))
        else:
            torch.softmax(model((x - mean) / std), dim=1).cpu()
    _sync(dev)
    seconds = time.perf_counter() - began
    return {"images": len(paths), "seconds": seconds, "images_per_second": len(paths) / seconds}


def decode_into_memory(paths: list[str], size: int) -> dict:
    """The preprocessing baseline: decode and resize every image into one array, one process."""
    began = time.perf_counter()
    out = np.empty((len(paths), size, size, 3), np.uint8)
    for i, p in enumerate(paths):
        out[i] = np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.Resampling.BICUBIC))
    return {"images": len(paths), "seconds": time.perf_counter() - began}
