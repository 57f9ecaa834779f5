"""``dermdl grade``: the command line of :mod:`dermdl.tasks.segmentation.grading` (parser and runner, so cli.py
only names it). Imports nothing heavy: the CLI builds every parser at start-up."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

DEFAULT_MIN_AREA = 20


def add_parser(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    text = (
        "disease grading from infer's segmentation masks: per image, the number of lesions (connected components "
        "of at least --min-area pixels) and the affected-area share -> <out_dir>/grading/<test>.csv and a summary "
        "plot <test>.png (presets/disease-grading.md)"
    )
    grade = sub.add_parser("grade", help="lesion count and affected area per image (after infer)", description=text)
    common(grade)
    grade.add_argument(
        "--min-area",
        type=int,
        default=DEFAULT_MIN_AREA,
        help="smallest lesion counted, in pixels of the original image (default: %(default)s)",
    )


def run_grade(args: argparse.Namespace, params: Any) -> int:
    from dermdl.tasks.segmentation.grading import grade, summary_line

    tables = grade(params.out, params.data.sl_tests, args.min_area)
    for name, frame in tables.items():
        print(summary_line(name, frame))
    print(f"grade: tables and plots -> {params.out / 'grading'}")
    return 0
