"""``dermdl`` command line: one subcommand per DVC stage, plus ``predict`` and ``demo-data``.

    dermdl validate                      # check the layout named in params.yaml
    dermdl train --lr 1e-3 --epochs 5    # thesis-style flags override params.yaml
    dermdl predict --model outputs/model photos/ --out predictions.csv

Every subcommand reads ``--params`` (default ``params.yaml``) and accepts ``--set KEY=VALUE``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from dermdl import __version__

# Thesis pipeline flag -> params.yaml key, so its README commands translate one to one.
THESIS_FLAGS: dict[str, tuple[str, Any]] = {
    "--data": ("data.root", str),
    "--wl-train": ("data.wl_train", "list"),
    "--sl-train": ("data.sl_train", "list"),
    "--sl-tests": ("data.sl_tests", "list"),
    "--input-size": ("train.input_size", int),
    "--bs": ("train.bs", int),
    "--exp-name": ("train.exp_name", str),
    "--epochs": ("train.epochs", int),
    "--fepochs": ("train.fepochs", int),
    "--lr": ("train.lr", float),
    "--model": ("train.model", str),
    "--seed": ("train.seed", int),
}
STAGES = ("validate", "preprocess", "train", "infer", "analyze")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml", help="parameter file (default: %(default)s)")
    parser.add_argument("--set", "-S", action="append", default=[], metavar="KEY=VALUE",
                        help="override one parameter, e.g. -S train.lr=2e-4 (repeatable; value parsed as YAML)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dermdl", description="Dermatology deep-learning pipeline (see README).")
    parser.add_argument("--version", action="version", version=f"dermdl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    helps = {
        "validate": "check every dataset named in params (all problems, JSON report); exit 1 on errors",
        "preprocess": "resize every image once into <out_dir>/prepared",
        "train": "train the model (fastai, frozen then unfrozen) and save weights + JSON config",
        "infer": "predict every test set into <out_dir>/predictions/<test>.csv",
        "analyze": "metrics with bootstrap 95%% CIs, DVC plots and figures; prints the summary table",
    }
    for name in STAGES:
        stage = sub.add_parser(name, help=helps[name], description=helps[name])
        _common(stage)
        if name == "train":
            group = stage.add_argument_group("thesis pipeline flags (override params.yaml)")
            for flag, (key, kind) in THESIS_FLAGS.items():
                nargs = "+" if kind == "list" else None
                group.add_argument(flag, dest=key, nargs=nargs, type=str if kind == "list" else kind,
                                   default=None, help=f"sets {key}")
    predict = sub.add_parser("predict", help="predict new images with a trained model",
                             description="Predict images (files or folders, searched recursively).")
    predict.add_argument("--model", required=True, help="model folder written by train (model.pt + model.json)")
    predict.add_argument("inputs", nargs="+", help="image files or folders")
    predict.add_argument("--out", help="write a CSV here instead of printing it")
    predict.add_argument("--bs", type=int, default=32, help="batch size (default: %(default)s)")
    demo = sub.add_parser("demo-data", help="generate the synthetic demo datasets for all three tasks",
                          description="Generate the synthetic demo datasets (deterministic from the seed).")
    _common(demo)
    demo.add_argument("--out", help="output folder (default: demo.out from params)")
    demo.add_argument("--seed", type=int, help="random seed (default: demo.seed from params)")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    updates: dict[str, Any] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.lr=2e-4")
        updates[key.strip()] = yaml.safe_load(value)
    for key, _kind in THESIS_FLAGS.values():
        value = getattr(args, key, None)
        if value is not None:
            updates[key] = value
    return updates


def _load(args: argparse.Namespace):
    from dermdl.params import load_params

    params = load_params(args.params)
    updates = _overrides(args)
    return params.override(updates) if updates else params


def _predict(args: argparse.Namespace) -> int:
    from dermdl.images import is_ignored, is_image_file
    from dermdl.io import atomic_write_text
    from dermdl.models import load_model
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
    model, config = load_model(args.model)
    task = get_task(config.task)
    probs = task.predict(model, config, paths, args.bs)
    records = [{"source": str(p)} for p in paths]
    if args.out:
        out = Path(args.out)
        written = task.write_predictions(records, probs, config, out.parent, out.stem)
        print(f"predict: {len(paths)} images -> {written}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        written = task.write_predictions(records, probs, config, Path(tmp), "predictions")
        print(written.read_text(encoding="utf-8"), end="")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from dermdl.demo import generate_demo

    params = _load(args)
    out = Path(args.out or params.demo.out)
    summary = generate_demo(out, seed=params.demo.seed if args.seed is None else args.seed)
    print(f"demo-data: wrote {out} ({summary})")
    return 0


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "predict":
        return _predict(args)
    if args.command == "demo-data":
        return _demo(args)
    from dermdl import pipeline

    params = _load(args)
    if args.command == "validate":
        return 0 if pipeline.validate(params).ok else 1
    getattr(pipeline, args.command)(params)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: known failures print one clear message (no traceback) and exit non-zero."""
    from dermdl.params import ParamsError
    from dermdl.pipeline import StageError

    try:
        return run(argv)
    except ParamsError as exc:
        print(f"dermdl: {exc}", file=sys.stderr)
        return 2
    except (StageError, FileNotFoundError, ValueError, NotImplementedError, RuntimeError) as exc:
        print(f"dermdl: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
