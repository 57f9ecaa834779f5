"""The ``dermdl`` argparse parser: every subcommand, its arguments and their help texts.

Why a module of its own: the parser is most of the command line's text (one help line per flag) and changes
whenever a flag is added, while the dispatch in :mod:`dermdl.cli` (which command runs what, how errors are
shown) rarely does. Imported at CLI start-up, so it imports nothing heavy (no torch): subcommands that live
elsewhere add their own parsers (``export``, ``grade``) and the thesis flags come from
:mod:`dermdl.thesis_flags`.
"""

from __future__ import annotations

import argparse
from typing import Any

from dermdl import __version__
from dermdl.export.command import add_parser as export_parser
from dermdl.grade_command import add_parser as grade_parser
from dermdl.options import BOX_FORMATS, EXPLAIN_METHODS, TTA_MODES
from dermdl.tasks import task_names
from dermdl.thesis_flags import add_flags

STAGES = ("validate", "preprocess", "train", "infer", "analyze")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml", help="parameter file (default: %(default)s)")
    parser.add_argument(
        "--set",
        "-S",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one parameter, e.g. -S train.lr=2e-4 (repeatable; value parsed as YAML)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dermdl", description="Dermatology deep-learning pipeline (see README).")
    parser.add_argument("--version", action="version", version=f"dermdl {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the Python traceback of an error (or DERMDL_DEBUG=1)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    helps = {
        "validate": "check every dataset named in params (all problems, JSON report); exit 1 on errors",
        "preprocess": "resize every image once into <out_dir>/prepared",
        "train": "train the model (fastai, frozen then unfrozen) and save weights + JSON config",
        "infer": "predict every test set into <out_dir>/predictions/ (by task: a CSV, masks, or COCO results JSON)",
        "analyze": "metrics with bootstrap 95%% CIs, DVC plots and figures; prints the summary table",
    }
    for name in STAGES:
        stage = sub.add_parser(name, help=helps[name], description=helps[name])
        _common(stage)
        if name == "train":
            add_flags(stage.add_argument_group("thesis pipeline flags (override params.yaml; README)"))
            stage.add_argument(
                "--launch-dry-run",
                action="store_true",
                help="train.launcher torchrun: print the torchrun command this node would run, then exit",
            )
    predict = sub.add_parser(
        "predict",
        help="predict new images with a trained model",
        description="Predict images (files or folders, searched recursively).",
    )
    predict.add_argument(
        "--model",
        required=True,
        help="model folder written by train (model.pt + model.json), or a .onnx file from `dermdl export` (run "
        "with ONNX Runtime, no PyTorch needed)",
    )
    predict.add_argument("inputs", nargs="+", help="image files or folders")
    predict.add_argument(
        "--out",
        help="write the predictions here instead of printing them (classification: "
        "CSV; detection: COCO results JSON, plus overlays/ next to it)",
    )
    predict.add_argument("--bs", type=int, default=32, help="batch size (default: %(default)s)")
    predict.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads (PyTorch, OpenCV); 0 = automatic, like the params key threads (default: %(default)s)",
    )
    predict.add_argument(
        "--strict",
        action="store_true",
        help="fail (predict nothing) if any image cannot be read; default: predict the readable ones, list the rest",
    )
    predict.add_argument(
        "--tta",
        choices=TTA_MODES,
        default="auto",
        help="test-time augmentation for classification/segmentation: average over 4 flips or "
        "8 flips+rotations; auto = dihedral, none for detection (default: %(default)s)",
    )
    predict.add_argument(
        "--no-calibrate",
        action="store_true",
        help="classification: the network's raw softmax instead of the probabilities scaled with the "
        "temperature fitted on the validation split at the end of training",
    )
    predict.add_argument(
        "--tile-size",
        type=int,
        default=0,
        help="large images: predict by tiles of this many px at the original resolution (segmentation: "
        "blended masks; detection: boxes merged; classification: see --tile-aggregate); 0 = whole image",
    )
    predict.add_argument("--tile-overlap", type=float, default=0.25, help="share of a tile overlapping its neighbour")
    predict.add_argument(
        "--tile-aggregate", choices=("mean", "max"), default="mean", help="classification by tiles: mean or max"
    )
    predict.add_argument(
        "--metadata",
        help="CSV of per-image metadata (columns path, then those the model was trained on, e.g. age, sex, "
        "localization; path or bare file name) for a model trained with classification.metadata",
    )
    predict.add_argument(
        "--explain",
        action="store_true",
        help="classification: also write an explanation heatmap per image for its predicted class, as "
        "<out stem>/explanations/<image stem>.png; needs --out",
    )
    predict.add_argument(
        "--explain-method",
        choices=EXPLAIN_METHODS,
        default="occlusion",
        help="how --explain makes heatmaps: occlusion (probability drop when a window is greyed out; faithful, "
        "~2 s per image on a CPU) or hirescam (gradient x activation; fast, coarse) (default: %(default)s)",
    )
    demo = sub.add_parser(
        "demo-data",
        help="generate the synthetic demo datasets for all three tasks",
        description="Generate the synthetic demo datasets (deterministic from the seed).",
    )
    _common(demo)
    demo.add_argument("--out", help="output folder (default: demo.out from params)")
    demo.add_argument("--seed", type=int, help="random seed (default: demo.seed from params)")
    _convert_parser(sub)
    _import_parser(sub)
    _check_leaks_parser(sub)
    export_parser(sub)
    grade_parser(sub, _common)
    _report_parser(sub)
    _crypto_parsers(sub)
    return parser


def _convert_parser(sub: Any) -> None:
    """``dermdl convert masks-to-coco|coco-to-masks`` (see dermdl/convert.py)."""
    convert = sub.add_parser(
        "convert",
        help="convert between the segmentation (masks) and detection (COCO) layouts",
        description="Convert a dataset root between the segmentation layout "
        "(<root>/<dataset>/images + masks) and the detection layout (<root>/annotations/"
        "<dataset>.json + <root>/images/<dataset>). Class names and mask values come from "
        "segmentation.codes / segmentation.mask_values in --params (defaults if absent).",
    )
    kinds = convert.add_subparsers(dest="conversion", required=True)
    helps = {
        "masks-to-coco": "masks -> COCO: one object per connected component per class",
        "coco-to-masks": "COCO -> masks: objects painted with their class's stored mask value",
    }
    for kind, text in helps.items():
        parser = kinds.add_parser(kind, help=text, description=text)
        _common(parser)
        parser.add_argument("--root", required=True, help="the dataset root to read")
        parser.add_argument("--out", required=True, help="a NEW folder for the converted root")
        parser.add_argument("--datasets", nargs="+", help="datasets to convert (default: all found)")
        if kind == "masks-to-coco":
            parser.add_argument(
                "--format",
                choices=("polygon", "rle"),
                default="polygon",
                help="object outlines as simplified polygons (holes filled) or exact RLE (default: %(default)s)",
            )
            parser.add_argument(
                "--tolerance", type=float, default=0.5, help="polygon simplification in pixels (default: %(default)s)"
            )
            parser.add_argument(
                "--min-area",
                type=int,
                default=1,
                help="drop components smaller than this many pixels (default: %(default)s)",
            )


def _import_parser(sub: Any) -> None:
    """``dermdl import`` (see dermdl/importer/)."""
    text = (
        "Build the classification, segmentation and detection layouts from a CSV table (one row per image: "
        "image path, label, optional group = lesion/patient id, optional mask path, optional box columns). "
        "Datasets sl_train / sl_test (/ wl_train) are split by group (no group in two datasets) and stratified "
        "by label, with a seed. Images are hard-linked (copied across file systems), never moved or modified. "
        "All bad rows are reported with their CSV line numbers and nothing is written. Output: <out>/"
        "{classification,segmentation,detection}/ (each a data.root; with groups.csv for the leak check), "
        "<out>/import.json, <out>/splits.csv. Example: dermdl import ../shared/data/ham10000/labels.csv "
        "--preset ham10000 --out data/ham10000"
    )
    imp = sub.add_parser(
        "import", help="build the layouts from a CSV table (group-aware split, no copies moved)", description=text
    )
    imp.add_argument("csv", help="the table (CSV; ',' ';' or tab separated; line 1 = header)")
    imp.add_argument(
        "--out", required=True, help="output folder (created, or replaced if written by an earlier import)"
    )
    imp.add_argument(
        "--preset",
        choices=("ham10000",),
        help="column names of a known format (ham10000: image_file, "
        "dx, lesion_id, mask_file, bbox_x0..bbox_y1 with x1/y1 exclusive); flags below override it",
    )
    imp.add_argument(
        "--images-root", help="folder that relative image/mask paths start from (default: the CSV's folder)"
    )
    imp.add_argument("--image-column", help="column with the image path")
    imp.add_argument("--label-column", help="column with the label (class name; used for stratification)")
    imp.add_argument(
        "--group-column", help="column with the lesion or patient id (default: every image is its own group)"
    )
    imp.add_argument("--mask-column", help="column with the mask path (enables the segmentation layout)")
    imp.add_argument(
        "--box-columns",
        nargs=4,
        metavar=("X0", "Y0", "X1", "Y1"),
        help="four columns with the lesion box (enables the detection layout; masks also give boxes)",
    )
    imp.add_argument(
        "--box-format",
        choices=BOX_FORMATS,
        help="xyxy: x1/y1 exclusive (default); xyxy_inclusive: last pixel; xywh: x0, y0, width, height",
    )
    imp.add_argument(
        "--layouts", nargs="+", choices=task_names(), help="layouts to build (default: all that the columns allow)"
    )
    imp.add_argument(
        "--test-size", type=float, default=0.2, help="share of images in the test set (default: %(default)s)"
    )
    imp.add_argument(
        "--weak-size",
        type=float,
        default=0.0,
        help="share in a weakly labelled training set wl_train (default: %(default)s = none)",
    )
    imp.add_argument("--seed", type=int, default=0, help="seed of the split (default: %(default)s)")
    imp.add_argument("--train-name", default="sl_train", help="name of the training set (default: %(default)s)")
    imp.add_argument("--test-name", default="sl_test", help="name of the test set (default: %(default)s)")
    imp.add_argument("--weak-name", default="wl_train", help="name of the weak training set (default: %(default)s)")
    imp.add_argument(
        "--single-class",
        metavar="NAME",
        help="detection: one category NAME for every box (e.g. lesion) instead of the label",
    )
    imp.add_argument(
        "--missing-group-alone",
        action="store_true",
        help="a row whose group id is missing (empty, NaN, N/A, -, ...) becomes its own group (default: an error)",
    )
    imp.add_argument("--copy", action="store_true", help="copy files instead of hard-linking them")
    imp.add_argument(
        "--no-metadata",
        action="store_true",
        help="do not write <layout>/metadata.csv (default: every column that is not image/label/group/mask/box, "
        "e.g. age, sex, localization, goes there for analyze.subgroups)",
    )
    imp.add_argument("--metadata-exclude", nargs="+", metavar="COLUMN", help="columns to leave out of metadata.csv")
    imp.add_argument(
        "--workers", type=int, default=2, help="processes that decode images for checking (default: %(default)s)"
    )


def _check_leaks_parser(sub: Any) -> None:
    """``dermdl check-leaks`` (see dermdl/leaks/)."""
    text = (
        "Find training images that reappear in a test set: exact duplicates (same bytes), near duplicates "
        "(resized, recompressed, flipped, rotated or slightly cropped copies) and shared group ids "
        "(same lesion/patient, from a CSV path,group such as the groups.csv that dermdl import writes). "
        "Training sets = data.wl_train + data.sl_train, test sets = data.sl_tests, unless --train/--test. "
        "Prints one line per pair, writes all pairs as JSON; exit 1 when leaks are found (unless allowed). "
        "validate-layout runs the same check."
    )
    leaks = sub.add_parser(
        "check-leaks",
        help="find duplicates and shared lesions/patients between training and test data",
        description=text,
    )
    _common(leaks)
    leaks.add_argument("--root", help="data root (default: data.root); its layout is detected unless --task")
    leaks.add_argument(
        "--task",
        choices=task_names(),
        help="layout of the root (default: task from params, or detected when --root is given)",
    )
    leaks.add_argument("--train", nargs="+", help="training datasets (default: data.wl_train + data.sl_train)")
    leaks.add_argument("--test", nargs="+", help="test datasets (default: data.sl_tests)")
    leaks.add_argument(
        "--groups",
        help="CSV with columns path (relative to the root) and group (default: data.groups, "
        "else <root>/groups.csv if present)",
    )
    leaks.add_argument(
        "--allow-leaks", action="store_true", help="report leaks as warnings and exit 0 (data.allow_leaks)"
    )
    leaks.add_argument("--json", help="write the report here (default: <out_dir>/check-leaks/leaks.json)")
    leaks.add_argument("--workers", type=int, help="worker processes (default: up to 4 CPU cores)")


def _report_parser(sub: Any) -> None:
    """``dermdl report OUT_DIR`` (see dermdl/report/)."""
    text = "write OUT_DIR/report.html, one offline page of a run, from what the stages wrote (analyze writes it too)"
    report = sub.add_parser("report", help=text, description=text + ". Example: dermdl report outputs")
    report.add_argument("out_dir", help="the out_dir of a run (e.g. outputs)")
    report.add_argument(
        "--params", help="parameter file, used when OUT_DIR/model/params.json is absent (default: none)"
    )


def _crypto_parsers(sub: Any) -> None:
    """``dermdl keygen|encrypt|decrypt`` (see dermdl/crypto.py and docs/encryption.md)."""
    keygen = sub.add_parser(
        "keygen",
        help="write a new encryption key (mode 0600) for dermdl encrypt/decrypt",
        description="Write a new Fernet key, readable by its owner only. Example: dermdl keygen --out ~/dermdl.key",
    )
    keygen.add_argument("--out", required=True, help="the key file to create (never overwritten)")
    texts = {
        "encrypt": "encrypt every file of a layout folder into a new folder (same names); SRC is only read",
        "decrypt": "decrypt an encrypted layout folder into a new folder",
    }
    for name, text in texts.items():
        parser = sub.add_parser(
            name, help=text, description=f"{text}. Example: dermdl {name} --key-file ~/dermdl.key SRC DST"
        )
        parser.add_argument("src", help="the folder to read")
        parser.add_argument("dst", help="the folder to create (must not exist)")
        parser.add_argument("--key-file", help="key file (default: $DERMDL_KEY_FILE, else the key in $DERMDL_KEY)")
