"""Training and inference throughput (images/second) of a dermdl model on this machine.

    python bench/train_throughput.py                         # efficientnet_lite0, 112 px, batch 32
    python bench/train_throughput.py --model resnet18 --size 224 --steps 5 --device cuda
    python bench/train_throughput.py --size 224 --bs 256 --steps 20 --device cuda --amp bf16 --channels-last

Synthetic tensors, so it measures the model + optimizer step alone (no data loading); the
end-to-end figure of a real run is in outputs/model/train.json ("images_per_second"). ``--amp``:
``torch.autocast`` at that dtype for training (with a ``GradScaler`` for fp16) and inference.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from dermdl.tasks.classification.model import build_classifier


def measure(
    model_name: str, size: int, bs: int, steps: int, device: str, channels_last: bool, amp: str = "off"
) -> dict:
    torch.manual_seed(0)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    device_type = torch.device(device).type
    scaler = torch.amp.GradScaler(device_type, enabled=amp == "fp16")

    def autocast():
        return torch.autocast(device_type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)

    model, _ = build_classifier(model_name, 3, pretrained=False)
    model = model.to(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(bs, 3, size, size, device=device).to(memory_format=memory_format)
    y = torch.randint(0, 3, (bs,), device=device)

    def train_step() -> torch.dtype:
        with autocast():
            logits = model(x)
            loss = torch.nn.functional.cross_entropy(logits, y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return logits.dtype  # bfloat16/float16 when autocast really ran

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    model.train()
    output_dtype = train_step()  # warm-up (allocations, cuDNN autotune)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        train_step()
    sync()
    train_ips = bs * steps / (time.perf_counter() - start)
    model.eval()
    with torch.inference_mode(), autocast():
        model(x)
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            model(x)
        sync()
    infer_ips = bs * steps / (time.perf_counter() - start)
    return {
        "model": model_name,
        "size": size,
        "bs": bs,
        "device": device,
        "threads": torch.get_num_threads(),
        "channels_last": channels_last,
        "amp": amp,
        "output_dtype": str(output_dtype).removeprefix("torch."),
        "steps": steps,
        "train_images_per_second": round(train_ips, 1),
        "infer_images_per_second": round(infer_ips, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--bs", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--amp", choices=["off", "bf16", "fp16"], default="off", help="mixed precision")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    result = measure(args.model, args.size, args.bs, args.steps, args.device, args.channels_last, args.amp)
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
