"""The thesis pipeline's ``train`` flags, each mapped onto one params key, so its commands translate one to one.

Why a table of its own: the CLI, the README flag table and the tests all read this one mapping, so a flag
cannot set a key the docs do not name. A thesis flag whose feature dermdl lacks is still accepted by the
parser and then fails with one line naming the params key to use, instead of argparse's "unrecognized".
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from dermdl.errors import ParamsError


@dataclass(frozen=True)
class Flag:
    """``key``: the params key ("{task}" = the task's section). ``kind``: int/float/str (one value), "list"
    (one or more), "switch" (no value: sets ``const``), "optional" (a value, or ``const`` when omitted)."""

    key: str
    kind: Any
    const: Any = None


THESIS_FLAGS: dict[str, Flag] = {
    "--data": Flag("data.root", str),
    "--wl-train": Flag("data.wl_train", "list"),
    "--sl-train": Flag("data.sl_train", "list"),
    "--sl-tests": Flag("data.sl_tests", "list"),
    "--input-size": Flag("train.input_size", int),
    "--bs": Flag("train.bs", int),
    "--exp-name": Flag("train.exp_name", str),
    "--epochs": Flag("train.epochs", int),
    "--fepochs": Flag("train.fepochs", int),
    "--lr": Flag("train.lr", float),
    "--model": Flag("{task}.model", str),
    "--seed": Flag("train.seed", int),
    # k-fold cross-validation: --cross-val alone = 5 folds (the thesis default), --nfolds K with it = K folds
    "--cross-val": Flag("train.cv_folds", "switch", 5),
    "--nfolds": Flag("train.cv_folds", int),
    "--use-wl": Flag("train.weak_labels", "switch", "pretrain"),  # wl_train first, then sl_train
    "--nrepeats": Flag("train.nrepeats", int),
    "--progr-size": Flag("train.progressive_resizing", "switch", [0.5, 1.0]),
    "--full-precision": Flag("train.mixed_precision", "switch", "off"),
    "--focal-loss": Flag("{task}.loss", "switch", "focal"),
    "--weighted-loss": Flag("{task}.class_weights", "switch", "balanced"),
    "--early-stop": Flag("train.early_stopping", "optional", 3),  # patience in epochs
    "--reduce-lr-on-plateau": Flag("train.plateau", "optional", 2),  # patience in epochs
    "--mixup": Flag("train.mixup", "optional", 0.4),  # MixUp alpha
    "--oversample": Flag("train.oversample", "switch", True),
    "--full-data": Flag("train.full_data", "switch", True),
    "--deterministic": Flag("train.deterministic", "switch", True),
    "--auto-lr": Flag("train.auto_lr", "switch", True),
    "--encrypted": Flag("data.encrypted", "switch", True),
}

_VALUE_KINDS = (int, float, str)


def _dest(flag: str) -> str:
    return "thesis" + flag.replace("-", "_")


def add_flags(group: argparse._ArgumentGroup) -> None:
    """One argparse option per thesis flag, in ``group`` (the train subcommand's)."""
    for flag, spec in THESIS_FLAGS.items():
        dest, text = _dest(flag), f"sets {spec.key}"
        name = spec.key.rsplit(".", 1)[-1].upper()  # --nfolds CV_FOLDS, not --nfolds THESIS__NFOLDS
        if spec.kind == "switch":
            group.add_argument(flag, dest=dest, action="store_const", const=spec.const, help=f"{text}={spec.const}")
        elif spec.kind == "optional":
            kind = type(spec.const)
            group.add_argument(
                flag,
                dest=dest,
                nargs="?",
                const=spec.const,
                type=kind,
                metavar=name,
                help=f"{text} (default {spec.const})",
            )
        else:
            nargs = "+" if spec.kind == "list" else None
            group.add_argument(
                flag, dest=dest, nargs=nargs, type=str if spec.kind == "list" else spec.kind, metavar=name, help=text
            )


def _known(key: str) -> bool:
    """Whether ``key`` exists in Params ("{task}" keys always do: the task's section validates them)."""
    from pydantic import BaseModel

    from dermdl.params import Params

    node: Any = Params
    for part in key.split("."):
        if part == "{task}":
            return True
        if not (isinstance(node, type) and issubclass(node, BaseModel)) or part not in node.model_fields:
            return False
        node = node.model_fields[part].annotation
    return True


def flag_updates(args: argparse.Namespace) -> dict[str, Any]:
    """The dotted-key updates the given thesis flags make (empty for a command without them)."""
    given = {flag: getattr(args, _dest(flag)) for flag in THESIS_FLAGS if getattr(args, _dest(flag), None) is not None}
    if "--nfolds" in given and "--cross-val" not in given:
        raise ParamsError("--nfolds K needs --cross-val (or set train.cv_folds=K)")
    updates: dict[str, Any] = {}
    for flag, value in given.items():
        key = THESIS_FLAGS[flag].key
        if not _known(key):
            raise ParamsError(
                f"{flag}: this dermdl has no params key {key}; remove the flag (see README, thesis flags)"
            )
        if flag == "--cross-val" and "--nfolds" in given:
            continue
        updates[key] = value
    return updates
