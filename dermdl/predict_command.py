"""``dermdl predict``: run a trained model on new images, outside the DVC pipeline.

Why its own module: a folder of clinical photos always holds something odd (a broken JPEG, a thumbnail,
a text file named .jpg); this command predicts every readable image, lists the rest with the reason,
and refuses to write among the user's images.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

MIN_SIDE = 32  # pixels: below this a prediction says little (the model saw 100+ px images)


def _readable(paths: list[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Images that decode, and (path, reason) for those that do not; each skipped or tiny image is one
    line on stderr. Predicting stops for nobody's broken file."""
    from dermdl.images import ImageError, open_rgb

    readable, unreadable = [], []
    for path in paths:
        try:
            width, height = open_rgb(path).size
        except ImageError as exc:
            unreadable.append((path, f"{exc.problem}; {exc.fix}"))
            print(f"dermdl predict: skipped {path}: {exc.problem}", file=sys.stderr)
            continue
        if min(width, height) < MIN_SIDE:
            print(
                f"dermdl predict: warning: {path} is {width}x{height} pixels; below {MIN_SIDE} px a prediction "
                "is unreliable",
                file=sys.stderr,
            )
        readable.append(path)
    return readable, unreadable


def _check_explain(args: argparse.Namespace) -> None:
    """``--explain`` fails before any image is predicted: without --out there is no folder for the heatmaps,
    and a task may not have them (its Capabilities say why)."""
    if not args.out:
        raise ValueError("--explain writes one heatmap PNG per image next to the predictions: pass --out FILE.csv")
    from dermdl.models import MODEL_CONFIG, ModelConfig
    from dermdl.tasks import get_task

    config_path = Path(args.model) / MODEL_CONFIG
    if not config_path.is_file():
        return  # load_model names the missing file
    task = get_task(ModelConfig.from_json(config_path).task)
    if not task.capabilities.supports("explain"):
        raise ValueError(f"--explain: not available for {task.name} models: {task.capabilities.why_not('explain')}")


def _predictor(args: argparse.Namespace) -> tuple[Callable[..., Any], Any, Any]:
    """(predict(config, paths, bs, tta), config, PyTorch model or None): an exported ``.onnx`` file runs
    with ONNX Runtime and imports no torch, fastai or timm (a deployment needs neither); a model folder
    runs with PyTorch."""
    from dermdl.export.runtime import load_onnx, onnx_file
    from dermdl.tasks import get_task

    exported = onnx_file(args.model)
    if exported is not None:
        if getattr(args, "explain", False):
            raise ValueError("--explain needs the PyTorch model folder (model.pt + model.json), not an ONNX file")
        if _tiles(args) is not None:
            raise ValueError("--tile-size needs the PyTorch model folder (model.pt + model.json), not an ONNX file")
        from dermdl.threads import onnx_threads

        onnx = load_onnx(exported, onnx_threads(getattr(args, "threads", 0)))
        return partial(get_task(onnx.config.task).onnx_predict, onnx), onnx.config, None
    if getattr(args, "explain", False):
        _check_explain(args)
    from dermdl.models import load_model

    model, config = load_model(args.model)
    tiles = _tiles(args)
    if tiles is not None:
        return partial(get_task(config.task).predict_tiled, model, tiles=tiles), config, model
    return partial(get_task(config.task).predict, model), config, model


def _tiles(args: argparse.Namespace) -> Any:
    """``--tile-size``/``--tile-overlap``/``--tile-aggregate`` as :class:`dermdl.tiling.Tiles`, checked like
    the ``infer.tile_*`` params; None for whole-image prediction."""
    size = getattr(args, "tile_size", 0)
    if not size:
        return None
    from dermdl.tiling import Tiles

    overlap = getattr(args, "tile_overlap", 0.25)
    if size < 32:
        raise ValueError(f"--tile-size {size}: too small for a tile; use 0 (whole image) or at least 32, e.g. 512")
    if not 0.0 <= overlap <= 0.75:
        raise ValueError(f"--tile-overlap {overlap}: use a share of the tile between 0 and 0.75, e.g. 0.25")
    return Tiles(size, overlap, getattr(args, "tile_aggregate", "mean"))


def run_predict(args: argparse.Namespace) -> int:
    """``dermdl predict``: a model folder or exported file on image files or folders; CSV (plus task
    files) or stdout."""
    from dermdl.images import is_ignored, is_image_file
    from dermdl.params import resolved_tta
    from dermdl.tasks import get_task

    paths: list[Path] = []
    for raw in args.inputs:
        path = Path(raw)
        if path.is_dir():
            paths += sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p) and not is_ignored(p))
        elif path.is_file():
            paths.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such image or folder")
    if not paths:
        raise ValueError(f"no images found in {', '.join(args.inputs)}")
    explain = getattr(args, "explain", False)
    predict, config, model = _predictor(args)
    if getattr(args, "no_calibrate", False):  # models without a temperature are unaffected either way
        config = replace(config, extra={**config.extra, "calibrate": False})
    if getattr(args, "metadata", None):  # the images' metadata table, for models trained with metadata
        if not Path(args.metadata).is_file():
            raise FileNotFoundError(f"--metadata {args.metadata}: no such file; give the CSV of per-image metadata")
        config = replace(config, extra={**config.extra, "metadata_table": str(args.metadata)})
    task = get_task(config.task)
    paths, unreadable = _readable(paths)
    if not paths:
        raise ValueError(
            f"none of the {len(unreadable)} images could be read (listed above); nothing was predicted; "
            "check the files or the folder you gave"
        )
    if unreadable and args.strict:
        raise ValueError(
            f"some images could not be read ({len(unreadable)} of {len(paths) + len(unreadable)}, listed above); "
            "--strict: nothing was predicted"
        )
    probs = predict(config, paths, args.bs, resolved_tta(args.tta, config.task))
    records = [{"source": str(p)} for p in paths]
    if args.out:
        out = Path(args.out)
        from dermdl.io import is_inside

        folders = [Path(raw) for raw in args.inputs if Path(raw).is_dir()]
        inside = [f for f in folders if is_inside(out.parent, f)]
        if inside:
            raise ValueError(f"--out {out}: inside the input folder {inside[0]}; write predictions outside it")
        written = task.write_predictions(records, probs, config, out.parent, out.stem)
        files = out.parent / out.stem  # tasks that write more than a CSV (segmentation masks) put it here
        heatmaps = ""
        if explain:
            explained = task.explain(model, config, paths, probs, files / "explanations", args.explain_method)
            heatmaps = f"; {len(explained)} heatmaps in {files / 'explanations'}{os.sep}"
        skipped = ""
        if unreadable:
            from dermdl.io import atomic_write_text

            listing = out.parent / f"{out.stem}_unreadable.csv"
            rows = "".join(f'"{path}","{why.replace(chr(34), chr(39))}"\n' for path, why in unreadable)
            atomic_write_text(listing, "path,reason\n" + rows)
            skipped = f"; {len(unreadable)} unreadable listed in {listing}"
        print(
            f"predict: {len(paths)} images -> {written}"
            + (f" (+ {files}{os.sep})" if files.is_dir() else "")
            + skipped
            + heatmaps
        )
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        written = task.write_predictions(records, probs, config, Path(tmp), "predictions")
        print(written.read_text(encoding="utf-8"), end="")
        if any(p != written for p in Path(tmp).iterdir()):
            print(
                f"dermdl predict: the {config.task} model also writes files (e.g. masks, overlays); pass "
                "--out FILE.csv to keep them next to the CSV",
                file=sys.stderr,
            )
    return 0
