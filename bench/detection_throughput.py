"""Training and inference throughput (images/second) of a dermdl detector on this machine.

    python bench/detection_throughput.py                                   # default detector, 128 px, batch 16
    python bench/detection_throughput.py --model retinanet_resnet50_fpn --size 512 --bs 8 --device cuda

Synthetic images with one box each, so it measures the model + optimizer step alone (no data
loading). Reports the BEST of ``--repeats`` timings of ``--steps`` steps: on a machine whose cores
are shared with other jobs, the best run is the closest to what dedicated cores give. The
end-to-end figure of a real run is in outputs/model/train.json ("images_per_second").
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from dermdl.tasks.detection.model import build_detector, splitter


def measure(name: str, size: int, bs: int, steps: int, repeats: int, device: str) -> dict:
    torch.manual_seed(0)
    model, _ = build_detector(name, 3, pretrained=False, size=size)
    model = model.to(device)
    images = torch.rand(bs, 3, size, size, device=device)
    box = torch.tensor([[0.2, 0.25, 0.75, 0.8]], device=device) * size
    targets = [{"boxes": box, "labels": torch.tensor([1 + i % 3], device=device)} for i in range(bs)]

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def best(fn) -> float:
        fn()  # warm-up (allocations, cuDNN autotune)
        sync()
        timings = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(steps):
                fn()
            sync()
            timings.append(time.perf_counter() - start)
        return bs * steps / min(timings)

    result = {"model": name, "size": size, "bs": bs, "device": device, "threads": torch.get_num_threads()}
    body, rest = splitter(model)
    for phase, params in (("frozen", rest), ("unfrozen", body + rest)):
        for p in model.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        optimizer = torch.optim.Adam(params, lr=1e-4)

        def train_step(optimizer: torch.optim.Optimizer = optimizer) -> None:
            model.train()
            loss = sum(model(images, targets).values())
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        result[f"train_{phase}_images_per_second"] = round(best(train_step), 1)
    model.eval()

    def infer_step() -> None:
        with torch.inference_mode():
            model(images)

    result["infer_images_per_second"] = round(best(infer_step), 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="fasterrcnn_efficientnet_lite0_fpn")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--bs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    print(json.dumps(measure(args.model, args.size, args.bs, args.steps, args.repeats, args.device)))


if __name__ == "__main__":
    main()
