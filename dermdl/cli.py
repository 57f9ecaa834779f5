"""``dermdl`` command line: one subcommand per DVC stage, plus ``predict``, ``export``, ``demo-data``, ``import``,
``check-leaks``.

    dermdl validate                      # check the layout named in params.yaml
    dermdl train --lr 1e-3 --epochs 5    # thesis-style flags override params.yaml
    dermdl predict --model outputs/model photos/ --out predictions.csv

Every subcommand reads ``--params`` (default ``params.yaml``) and accepts ``--set KEY=VALUE``.

This module is the dispatch: which code each command runs (imported lazily, so start-up stays light), how
``--set`` and the thesis flags become params overrides, and how errors reach the user (one line, no
traceback). The arguments themselves are built in :mod:`dermdl.cli_parser`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from dermdl.cli_parser import STAGES, build_parser
from dermdl.thesis_flags import THESIS_FLAGS as THESIS_FLAGS  # re-exported: the flag table
from dermdl.thesis_flags import flag_updates


def _import(args: argparse.Namespace) -> int:
    from dermdl.importer import main_args

    return main_args(args)


def _report(args: argparse.Namespace) -> int:
    from dermdl.params import load_params
    from dermdl.report import write_report

    current = load_params(args.params).to_dict() if args.params else None
    print(f"report: wrote {write_report(args.out_dir, current)}")
    return 0


def _check_leaks(args: argparse.Namespace) -> int:
    from dermdl.leaks import run_cli

    return run_cli(
        args, _load(args) if Path(args.params).is_file() or args.params != "params.yaml" else None, _overrides(args)
    )


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    from dermdl.errors import ParamsError
    from dermdl.yaml_input import parse_yaml

    updates: dict[str, Any] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.lr=2e-4")
        try:
            updates[key.strip()] = parse_yaml(value)
        except yaml.YAMLError as exc:
            problem = str(getattr(exc, "problem", None) or exc).splitlines()[0]
            raise ParamsError(
                f"--set {item!r}: the value is not valid YAML ({problem}); quote text, write lists as [a, b]"
            ) from None
    return updates | flag_updates(args)


def _load(args: argparse.Namespace):
    from dermdl.params import load_params

    params = load_params(args.params)
    updates = _overrides(args)
    return params.override(updates) if updates else params


def _demo(args: argparse.Namespace) -> int:
    from dermdl.demo import generate_demo

    params = _load(args)
    out = Path(args.out or params.demo.out)
    summary = generate_demo(out, seed=params.demo.seed if args.seed is None else args.seed)
    print(f"demo-data: wrote {out} ({summary})")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from dermdl import convert
    from dermdl.params import params_from_dict

    if args.params == "params.yaml" and not Path(args.params).is_file():
        params = params_from_dict({})  # outside a project: default codes and mask values
        updates = _overrides(args)
        params = params.override(updates) if updates else params
    else:
        params = _load(args)
    if args.conversion == "masks-to-coco":
        summary = convert.masks_to_coco(
            args.root, args.out, params, args.datasets, args.format, args.tolerance, args.min_area
        )
    else:
        summary = convert.coco_to_masks(args.root, args.out, params, args.datasets)
    print(f"convert {args.conversion}: wrote {args.out} ({summary})")
    return 0


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command not in STAGES:  # only a stage reads data.encrypted; nothing else inherits an earlier run's mode
        from dermdl.crypto import use_encrypted

        use_encrypted(False)
    if args.command == "predict":
        from dermdl.predict_command import run_predict
        from dermdl.threads import pin_threads

        pin_threads(args.threads, torch_now=False)  # an ONNX model runs without torch
        return run_predict(args)
    if args.command == "convert":
        return _convert(args)
    if args.command == "demo-data":
        return _demo(args)
    if args.command == "import":
        return _import(args)
    if args.command == "check-leaks":
        return _check_leaks(args)
    if args.command == "report":
        return _report(args)
    if args.command in ("keygen", "encrypt", "decrypt"):
        from dermdl.crypto.folders import run_cli

        return run_cli(
            args.command,
            getattr(args, "src", None),
            getattr(args, "dst", None),
            getattr(args, "key_file", None),
            getattr(args, "out", None),
        )
    if args.command == "grade":
        from dermdl.grade_command import run_grade

        return run_grade(args, _load(args))
    if args.command == "export":
        from dermdl.export.command import run_export

        return run_export(args)
    from dermdl import pipeline

    params = _load(args)
    from dermdl.threads import pin_threads

    # before any work (parallel experiments and processes share the cores); validate and preprocess never
    # import torch (seconds per stage): they pin OpenCV and their worker processes only
    pin_threads(params.threads, torch_now=args.command not in ("validate", "preprocess"))
    if args.command == "train":
        from dermdl import launch  # torch-free: the launcher process only starts torchrun

        if launch.should_launch(params):
            return launch.launch(params, list(sys.argv[1:] if argv is None else argv), args.launch_dry_run)
        if args.launch_dry_run:
            raise ValueError("--launch-dry-run: nothing to launch; set train.launcher: torchrun (outside torchrun)")
    if args.command == "validate":
        return 0 if pipeline.validate(params).ok else 1
    getattr(pipeline, args.command)(params)
    return 0


#: Libraries whose deprecation/user warnings are theirs to fix, not the user's to read on every run.
_QUIET_MODULES = r"(torch|torchvision|timm|fastai|fastcore|fastprogress|dvclive|pycocotools|sklearn)(\.|$)"


def _quiet_dependencies() -> None:
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=_QUIET_MODULES)


def main(argv: list[str] | None = None) -> int:
    """Entry point: known failures print one clear message (no traceback) and exit non-zero; ``--debug``
    (or ``DERMDL_DEBUG=1``) shows the traceback instead, for bug reports."""
    from dermdl.errors import ParamsError, StageError

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("DERMDL_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    if not debug:
        _quiet_dependencies()
    try:
        return run(argv)
    except ParamsError as exc:
        if debug:
            raise
        print(f"dermdl: {exc}", file=sys.stderr)
        return 2
    except (StageError, FileNotFoundError, ValueError, NotImplementedError, RuntimeError, OSError) as exc:
        if debug:
            raise
        print(f"dermdl: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("dermdl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
