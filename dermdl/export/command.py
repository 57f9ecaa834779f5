"""``dermdl export``: the command line of :mod:`dermdl.export.onnx_export` (parser and runner, so cli.py
only names it)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    export = sub.add_parser(
        "export",
        help="export a trained model for deployment (ONNX, run by `dermdl predict` or any ONNX Runtime)",
        description="Export a trained model as one ONNX file with its normalisation, resize policy and class "
        "names in the file's metadata; the export is checked against PyTorch before it is written. "
        "See docs/export.md.",
    )
    export.add_argument("--model", required=True, help="model folder written by train (model.pt + model.json)")
    export.add_argument("--format", default="onnx", choices=("onnx",), help="export format (default: %(default)s)")
    export.add_argument(
        "--out", help="the .onnx file to write (default: beside the model folder: outputs/model -> outputs/model.onnx)"
    )


def run_export(args: argparse.Namespace) -> int:
    from dermdl.export.onnx_export import export_model

    path, worst = export_model(args.model, args.format, args.out)
    size = path.stat().st_size / 1e6
    print(f"export: {path} ({size:.1f} MB; largest difference to PyTorch on a check input: {worst:.1e})")
    return 0
