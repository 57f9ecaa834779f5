"""Synthetic dermoscopy-like demo data for all three tasks, generated from a seed.

Why: the pipeline needs a small, license-free, byte-reproducible dataset for tests, docs and
smoke runs. Classes differ the way real lesions do (ABCD: asymmetry, border, colour
variegation, diameter) while global shortcuts are deliberately neutralised: skin tone, lighting
and the lesion's mean brightness (and, half-way, its mean hue) come from one class-independent
distribution and lesion areas overlap, so a classifier must use shape/texture/colour *pattern*.
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from dermdl.io import atomic_dir
from dermdl.tasks import builtin_task_names, get_task

CLASSES = ["melanoma", "nevus", "seborrheic_keratosis"]
DATASETS = ["sl_train", "wl_train", "sl_test"]
ANNOTATED_DATASETS = ["sl_train", "sl_test"]  # detection (COCO) layouts: no weakly labelled set
NEGATIVE = "negative"
CHROMA = 0.5  # how far each lesion's mean hue is pulled to the shared target (brightness: fully)

# Lesion area as a fraction of the image, per class: deliberately overlapping ranges.
AREA_RANGE = {"nevus": (0.15, 0.42), "melanoma": (0.22, 0.60), "seborrheic_keratosis": (0.15, 0.52)}


def _noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth noise in ~[-1, 1]: a coarse random grid upsampled bicubically."""
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    field = cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
    return field / (np.abs(field).max() + 1e-6)


def _skin(rng: np.random.Generator, size: int) -> np.ndarray:
    """Skin-toned background with low-frequency blotches, erythema and fine grain."""
    light, dark = np.array([0.95, 0.80, 0.72]), np.array([0.62, 0.42, 0.32])
    base = light + (dark - light) * rng.uniform(0.0, 1.0)
    base = base * rng.normal(1.0, 0.03, 3)
    img = np.ones((size, size, 3), np.float32) * base.astype(np.float32)
    img *= (1.0 + 0.06 * _noise(rng, size, int(rng.integers(3, 7))))[..., None]
    red = np.clip(_noise(rng, size, int(rng.integers(3, 6))), 0, 1)[..., None]
    img += rng.uniform(0.0, 0.08) * red * np.array([0.3, -0.6, -0.4], np.float32)
    grain = cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), 0.8)
    return img * (1.0 + 0.03 * grain[..., None])


def _shape(
    rng: np.random.Generator,
    size: int,
    area: float,
    amps: dict[int, float],
    aspect: tuple[float, float],
    notches: int = 0,
) -> np.ndarray:
    """Anti-aliased lesion alpha (uint8) of a star-shaped polar outline with the given area fraction.

    r(t) = 1 + sum_k a_k cos(k t + phi_k), minus Gaussian notches; low k gives asymmetry,
    high k gives an irregular border.
    """
    t = np.linspace(0, 2 * np.pi, 360, endpoint=False)
    r = np.ones_like(t)
    for k, a in amps.items():
        r += rng.uniform(0.5, 1.0) * a * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    for _ in range(notches):
        d = np.angle(np.exp(1j * (t - rng.uniform(0, 2 * np.pi))))
        r -= rng.uniform(0.12, 0.28) * np.exp(-0.5 * (d / rng.uniform(0.05, 0.14)) ** 2)
    r = np.clip(r, 0.25, None)
    pts = np.stack([r * np.cos(t) * rng.uniform(*aspect), r * np.sin(t)], 1)
    rot = rng.uniform(0, np.pi)
    pts = pts @ np.array([[np.cos(rot), np.sin(rot)], [-np.sin(rot), np.cos(rot)]])
    pts *= np.sqrt(area * size * size / cv2.contourArea(pts.astype(np.float32)))
    span = pts.max(0) - pts.min(0)
    pts *= min(1.0, (size - 6) / span.max())  # keep the whole lesion inside the frame
    lo, hi = -pts.min(0) + 3, size - 3 - pts.max(0)
    centre = np.clip(size / 2 + rng.normal(0, 0.06 * size, 2), lo, np.maximum(lo, hi))
    poly = np.round((pts + centre) * 16).astype(np.int32)
    alpha = np.zeros((size, size), np.uint8)
    cv2.fillPoly(alpha, [poly], 255, lineType=cv2.LINE_AA, shift=4)
    return alpha


def _supersampled(size: int, draw: Callable[[np.ndarray, int], None], up: int = 4) -> np.ndarray:
    """Float alpha in [0, 1] of shapes drawn by ``draw(layer, up)`` at ``up``x, area-downsampled (clean AA)."""
    layer = np.zeros((size * up, size * up), np.uint8)
    draw(layer, up)
    return cv2.resize(layer, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)[..., None] / 255.0


def _dots(
    rng: np.random.Generator,
    field: np.ndarray,
    where: np.ndarray,
    n: int,
    colour: np.ndarray,
    radius: tuple[float, float],
) -> None:
    """Paint n round dots (globules, milia, comedo openings) centred at random pixels of ``where``."""
    ys, xs = np.nonzero(where)
    if len(xs) == 0:
        return
    pick, rads = rng.integers(0, len(xs), n), rng.uniform(*radius, n)

    def draw(layer: np.ndarray, up: int) -> None:
        for i, rad in zip(pick, rads):
            cv2.circle(layer, (int(xs[i] * up + up // 2), int(ys[i] * up + up // 2)), int(rad * up), 255, -1)

    a = _supersampled(field.shape[0], draw) * np.float32(rng.uniform(0.75, 0.95))
    field[:] = field * (1 - a) + colour.astype(np.float32) * a


def _nevus(rng: np.random.Generator, size: int, area: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Benign naevus: symmetric round/oval, smooth border, one brown, regular fine network."""
    alpha = _shape(rng, size, area, {2: 0.04, 3: 0.02}, (0.75, 1.0))
    brown = np.array([0.50, 0.32, 0.20]) * rng.normal(1.0, 0.05, 3)
    field = np.ones((size, size, 3), np.float32) * brown.astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    f, rot = rng.uniform(0.9, 1.3), rng.uniform(0, np.pi)
    u, v = xx * np.cos(rot) + yy * np.sin(rot), -xx * np.sin(rot) + yy * np.cos(rot)
    net = np.abs(np.sin(u * f)) * np.abs(np.sin(v * f))  # regular reticular network
    dist = cv2.distanceTransform((alpha > 127).astype(np.uint8), cv2.DIST_L2, 3)
    centre = np.clip(dist / (dist.max() + 1e-6), 0, 1)  # symmetric, central-darker profile
    field *= 1.0 + 0.10 * (net[..., None] - 0.25) - 0.15 * centre[..., None]
    return field, alpha, rng.uniform(1.2, 2.2)  # soft, fading edge


def _melanoma(rng: np.random.Generator, size: int, area: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Melanoma: asymmetric, notched irregular border, 3-5 colours in blotchy regions, atypical dots."""
    amps = {1: 0.22, 2: 0.20, 3: 0.15, 5: 0.07, 7: 0.06, 11: 0.05, 13: 0.04, 17: 0.03}
    alpha = _shape(rng, size, area, amps, (0.6, 1.0), notches=int(rng.integers(2, 5)))
    palette = np.array(
        [
            [0.38, 0.22, 0.13],
            [0.10, 0.07, 0.07],
            [0.42, 0.48, 0.58],
            [0.78, 0.36, 0.36],
            [0.66, 0.46, 0.30],
            [0.86, 0.82, 0.84],
        ],
        np.float32,
    )
    pick = np.concatenate([[0, 1], rng.choice([2, 3, 4, 5], int(rng.integers(2, 4)), replace=False)])
    fields = np.stack([_noise(rng, size, int(rng.integers(3, 6))) + 0.35 * _noise(rng, size, 11) for _ in pick])
    ramp = np.linspace(-1, 1, size, dtype=np.float32)
    ang = rng.uniform(0, 2 * np.pi)  # push the dark colours to one side: colour asymmetry
    fields[1] += 0.6 * (np.cos(ang) * ramp[None, :] + np.sin(ang) * ramp[:, None])
    w = np.exp(fields * 9.0)
    w /= w.sum(0, keepdims=True)
    field = np.einsum("khw,kc->hwc", w, palette[pick])
    inside = alpha > 127
    edge = inside & (cv2.distanceTransform(inside.astype(np.uint8), cv2.DIST_L2, 3) < 0.18 * size)
    _dots(rng, field, edge, int(rng.integers(4, 12)), palette[1], (0.8, 2.2))
    return field, alpha, rng.uniform(0.5, 1.2)


def _sk(rng: np.random.Generator, size: int, area: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Seborrhoeic keratosis: sharp 'stuck-on' edge, waxy tan, cerebriform fissures, milia and comedones."""
    alpha = _shape(rng, size, area, {2: 0.08, 3: 0.06, 4: 0.05, 9: 0.015}, (0.7, 1.0))
    tan = np.array([0.72, 0.56, 0.40]) * rng.normal(1.0, 0.05, 3)
    field = np.ones((size, size, 3), np.float32) * tan.astype(np.float32)
    band = _noise(rng, size, int(rng.integers(12, 17))) + _noise(rng, size, 5) * 0.3
    ridges = np.exp(-((band / 0.16) ** 2))  # winding fissures along zero crossings: cerebriform look
    field *= 1.0 - 0.4 * ridges[..., None]
    field *= 1.0 + 0.08 * _noise(rng, size, 6)[..., None]  # waxy sheen
    inside = cv2.erode((alpha > 127).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    _dots(rng, field, inside, int(rng.integers(8, 18)), np.array([0.95, 0.93, 0.82]), (1.0, 1.9))
    _dots(rng, field, inside, int(rng.integers(6, 14)), np.array([0.16, 0.11, 0.08]), (1.0, 2.0))
    return field, alpha, 0.35


RENDER: dict[str, Callable] = {"nevus": _nevus, "melanoma": _melanoma, "seborrheic_keratosis": _sk}


def _hairs(rng: np.random.Generator, img: np.ndarray, centre: tuple[float, float]) -> None:
    """Thin dark curved hairs (quadratic Bezier curves), some forced through the lesion centre.

    Drawn at 4x and area-downsampled: clean anti-aliased sub-pixel-wide strands.
    """
    size = img.shape[0]
    curves = []
    for h in range(int(rng.integers(0, 8))):
        mid = np.array(centre) + rng.normal(0, 0.1 * size, 2) if h % 2 == 0 else rng.uniform(0, size, 2)
        ang, half = rng.uniform(0, np.pi), rng.uniform(0.25, 0.7) * size
        d = np.array([np.cos(ang), np.sin(ang)]) * half
        ctrl = mid + np.array([-d[1], d[0]]) * rng.uniform(-0.5, 0.5)
        s = np.linspace(0, 1, 40)[:, None]
        pts = (1 - s) ** 2 * (mid - d) + 2 * s * (1 - s) * ctrl + s**2 * (mid + d)
        curves.append((pts, int(rng.integers(170, 256)), int(rng.integers(2, 5))))

    def draw(layer: np.ndarray, up: int) -> None:
        for pts, shade, width in curves:
            cv2.polylines(layer, [np.round(pts * up).astype(np.int32)], False, shade, width)

    a = _supersampled(size, draw)
    colour = np.float32(rng.uniform(0.05, 0.18)) * np.array([1.0, 0.8, 0.7], np.float32)
    img[:] = img * (1 - a) + colour * a


def _vignette(rng: np.random.Generator, img: np.ndarray) -> None:
    """Dark circular dermoscope border with a soft edge."""
    size = img.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cx, cy = size / 2 + rng.normal(0, 0.03 * size, 2)
    d = np.hypot(xx - cx, yy - cy)
    radius, width = rng.uniform(0.58, 0.72) * size, rng.uniform(0.04, 0.12) * size
    v = np.clip((radius - d) / width, 0, 1)
    v = (v * v * (3 - 2 * v))[..., None]
    img[:] = img * v + np.float32(rng.uniform(0.01, 0.06)) * (1 - v)


def render(rng: np.random.Generator, size: int, cls: str | None) -> tuple[np.ndarray, np.ndarray]:
    """One RGB uint8 image and its exact 0/255 lesion mask (all zero for cls=None)."""
    img = _skin(rng, size)
    mask = np.zeros((size, size), np.uint8)
    centre = (size / 2, size / 2)
    if cls is not None:
        field, alpha, soft = RENDER[cls](rng, size, rng.uniform(*AREA_RANGE[cls]))
        mask = np.where(alpha > 127, 255, 0).astype(np.uint8)
        inside = mask > 0
        # Class-independent mean lesion colour: removes the "melanoma = dark/blue" shortcut.
        target = np.array([0.50, 0.34, 0.24]) * rng.uniform(0.55, 1.25) * rng.normal(1.0, 0.04, 3)
        mean = field[inside].mean(0)
        hue_shift = (target / target.mean()) / (mean / mean.mean())
        gain = np.clip(target.mean() / mean.mean() * hue_shift**CHROMA, 0.3, 3.0)
        field = np.clip(field * gain.astype(np.float32), 0, 1)
        a = cv2.GaussianBlur(alpha.astype(np.float32) / 255.0, (0, 0), soft)[..., None]
        texture = img / img.mean((0, 1))  # let skin texture show through the pigment a little
        img = img * (1 - a) + field * (0.85 + 0.15 * texture) * a
        ys, xs = np.nonzero(inside)
        centre = (float(xs.mean()), float(ys.mean()))
    _hairs(rng, img, centre)
    img *= (rng.uniform(0.75, 1.15) * rng.normal(1.0, 0.04, 3)).astype(np.float32)  # lighting
    ramp = np.linspace(-1, 1, size, dtype=np.float32)
    img *= 1 + rng.uniform(-0.12, 0.12) * ramp[None, :, None] + rng.uniform(-0.12, 0.12) * ramp[:, None, None]
    _vignette(rng, img)
    img += rng.normal(0, 0.008, img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), mask


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def coco_annotation(mask: np.ndarray) -> dict:
    """COCO bbox/area/polygons of a 0/255 mask (bbox tight around the mask's pixels)."""
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    contours, _ = cv2.findContours((mask > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]
    return {
        "bbox": [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1],
        "area": int(len(xs)),
        "iscrowd": 0,
        "segmentation": polys,
    }


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def generate_demo(
    out: Path,
    seed: int = 0,
    size: int = 128,
    n_train: int = 80,
    n_test: int = 40,
    n_weak: int = 40,
    n_negative: int = 2,
) -> dict:
    """Write the demo dataset (classification, segmentation, detection) to ``out`` atomically.

    Counts are per class; ``n_negative`` lesion-free images are added to each detection set.
    Each image has its own RNG stream keyed on (seed, dataset, class, index), so the output is
    byte-identical for a given seed and independent of generation order.
    """
    counts = {"sl_train": n_train, "wl_train": n_weak, "sl_test": n_test}
    layouts = {name: get_task(name).layout for name in builtin_task_names()}
    summary: dict = {"seed": seed, "size": size, "classes": list(CLASSES)} | {name: {} for name in layouts}
    with atomic_dir(out) as tmp:
        for d, ds in enumerate(DATASETS):
            # layouts with annotation files (COCO) get the annotated sets only, plus lesion-free images
            annotated = [n for n, layout in layouts.items() if layout.annotations and ds in ANNOTATED_DATASETS]
            coco: dict[str, tuple[list, list]] = {n: ([], []) for n in annotated}
            jobs: list[tuple[int, str | None, int]] = [
                (c, cls, i) for c, cls in enumerate(CLASSES) for i in range(counts[ds])
            ]
            if annotated:
                jobs += [(len(CLASSES), None, i) for i in range(n_negative)]
            for c, cls, i in jobs:
                img, mask = render(np.random.default_rng([seed, d, c, i]), size, cls)
                name = f"{cls or NEGATIVE}_{ds}_{i:04d}.png"
                png = _png(img)
                for task, layout in layouts.items():
                    if task in coco:
                        images, anns = coco[task]
                        _write(tmp / task / layout.image_path(ds, name), png)
                        images.append({"id": len(images) + 1, "file_name": name, "width": size, "height": size})
                        if cls is not None:
                            anns.append(
                                {
                                    "id": len(anns) + 1,
                                    "image_id": len(images),
                                    "category_id": c + 1,
                                    **coco_annotation(mask),
                                }
                            )
                    elif cls is not None and not layout.annotations:
                        _write(tmp / task / layout.image_path(ds, name, cls), png)
                        if layout.mask:
                            _write(tmp / task / layout.mask_path(ds, name), _png(mask))
            for task, layout in layouts.items():
                if task in coco:
                    images, anns = coco[task]
                    document = {
                        "images": images,
                        "annotations": anns,
                        "categories": [
                            {"id": k + 1, "name": n, "supercategory": "lesion"} for k, n in enumerate(CLASSES)
                        ],
                    }
                    _write(tmp / task / layout.annotation_path(ds), (json.dumps(document, indent=1) + "\n").encode())
                    summary[task][ds] = {"images": len(images), "annotations": len(anns), "negatives": n_negative}
                elif layout.mask:
                    summary[task][ds] = counts[ds] * len(CLASSES)
                elif not layout.annotations:
                    summary[task][ds] = {cls: counts[ds] for cls in CLASSES}
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dermdl.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/demo"), help="output folder (replaced)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed = same bytes)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--n-train", type=int, default=80, help="sl_train images per class")
    parser.add_argument("--n-weak", type=int, default=40, help="wl_train images per class")
    parser.add_argument("--n-test", type=int, default=40, help="sl_test images per class")
    parser.add_argument("--n-negative", type=int, default=2, help="lesion-free images per detection set")
    args = parser.parse_args(argv)
    summary = generate_demo(
        args.out,
        seed=args.seed,
        size=args.size,
        n_train=args.n_train,
        n_test=args.n_test,
        n_weak=args.n_weak,
        n_negative=args.n_negative,
    )
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
