"""Peak memory of tiled segmentation (``infer.tile_size``) on a 6000x4000 vs a 1500x1000 image.

Each size runs in its own process (``ru_maxrss`` is a per-process peak). Printed per size: the RSS before
predicting (model + image loaded), the peak while predicting, and the bytes of the (k, H, W) float32
output. Tiled prediction should add little more than the output itself: the extra beyond it stays flat
when the image grows 16x. Run: ``python bench/tiled_memory.py`` (``--tile 512 --input 256`` to match a
512-px patch model; the defaults are small so the run takes about a minute on a laptop CPU).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

SIZES = [(1500, 1000), (6000, 4000)]


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def one(width: int, height: int, tile: int, input_size: int, overlap: float) -> dict:
    import numpy as np
    import torch

    from dermdl.models import ModelConfig
    from dermdl.tasks.segmentation.model import build_unet
    from dermdl.tasks.segmentation.tiled import predict_image

    torch.manual_seed(0)
    model, (mean, std) = build_unet("efficientnet_lite0", 2, input_size, pretrained=False)
    config = ModelConfig(
        task="segmentation", arch="efficientnet_lite0", classes=["skin", "lesion"], input_size=input_size,
        mean=list(mean), std=list(std), preprocess_size=input_size, resize="squish",
    )  # fmt: skip
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    predict_image(model, config, image[:tile, :tile], tile, overlap)  # warm-up: allocator pools, kernels
    before = _rss_mib()
    start = time.perf_counter()
    out = predict_image(model, config, image, tile, overlap)
    peak = _rss_mib()
    output_mib = out.nbytes / 2**20
    return {
        "image": f"{width}x{height}",
        "seconds": round(time.perf_counter() - start, 1),
        "rss_before_mib": round(before),
        "peak_mib": round(peak),
        "output_mib": round(output_mib),
        "extra_beyond_output_mib": round(peak - before - output_mib),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--input", type=int, default=64, help="model input size each tile is resized to")
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--one", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(*args.one, args.tile, args.input, args.overlap)))
        return
    for width, height in SIZES:
        cmd = [sys.executable, __file__, "--one", str(width), str(height)]
        cmd += ["--tile", str(args.tile), "--input", str(args.input), "--overlap", str(args.overlap)]
        print(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
