"""``make reproduce``'s verdict: did a headline metric get worse than the committed baseline by more than
its tolerance?

Why a gate of its own beside ``dvc metrics diff``: DVC prints the differences but always exits 0 and has
no notion of "worse" (a rising ECE or HD95 is a regression, a rising AUC is not) nor of a tolerance. The
rules (direction and absolute tolerance per metric-name pattern) live in one committed file,
``.ci/metrics-gate.yaml``, with the reasons for each number; docs/reproduce.md says how to update the
baseline after an intended change.

    python -m dermdl.metrics_gate                       # the files the rules name, vs their version at HEAD
    python -m dermdl.metrics_gate outputs/metrics.json --baseline old/metrics.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

from dermdl.yaml_input import parse_yaml

CONFIG = Path(".ci/metrics-gate.yaml")
Direction = Literal["higher", "lower", "none"]
#: Float noise below this is no change: 0.9 - 0.05 must accept 0.85 although 0.9 - 0.05 < 0.85 in binary.
_EPS = 1e-9


@dataclass(frozen=True)
class Rule:
    """Metrics whose name matches ``match`` may get worse by at most ``tolerance`` (absolute); ``better:
    none`` shows a value without gating it. The name is the last part of the dotted key (``macro_auc`` of
    ``sl_test.macro_auc``), so a test set or class group called ``gloss`` is not a loss; a pattern with a
    '.' matches the whole key instead (``ext_test.accuracy``). fnmatch, case-insensitive (``ap`` is AP)."""

    match: str
    better: Direction
    tolerance: float


@dataclass(frozen=True)
class Config:
    files: tuple[str, ...]
    rules: tuple[Rule, ...]
    path: str = str(CONFIG)  # named in messages: where a rule is added or a tolerance changed

    def rule(self, key: str) -> Rule | None:
        """The first rule that matches: specific patterns go above catch-alls in the file."""
        name = key.rsplit(".", 1)[-1]
        return next(
            (r for r in self.rules if fnmatchcase((key if "." in r.match else name).lower(), r.match.lower())), None
        )


@dataclass(frozen=True)
class Finding:
    """One line of the verdict; ``failed`` ones make the gate exit 1."""

    key: str
    failed: bool
    text: str
    new: bool = False  # not in the baseline: listed, never gated


def load_config(path: Path = CONFIG) -> Config:
    """The committed rules; every mistake in them is one line that names the file and the entry."""
    try:
        data = parse_yaml(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no metrics-gate rules file (see docs/reproduce.md)") from None
    except Exception as exc:  # yaml.YAMLError: one line, not the parser's multi-line report
        raise ValueError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or set(data) != {"files", "rules"}:
        raise ValueError(f"{path}: expected exactly the keys 'files' and 'rules'")
    files = data["files"]
    if not isinstance(files, list) or not files or not all(isinstance(f, str) and f for f in files):
        raise ValueError(f"{path}: 'files' must be a non-empty list of metrics-file paths")
    if not isinstance(data["rules"], list):
        raise ValueError(f"{path}: 'rules' must be a list of {{match, better, tolerance}}")
    rules = tuple(_rule(entry, f"{path}: rules[{i}]") for i, entry in enumerate(data["rules"]))
    return Config(tuple(files), rules, str(path))


def _rule(entry: Any, where: str) -> Rule:
    if not isinstance(entry, dict) or set(entry) != {"match", "better", "tolerance"}:
        raise ValueError(f"{where} must have exactly the keys match, better, tolerance")
    match, better, tolerance = entry["match"], entry["better"], entry["tolerance"]
    if not isinstance(match, str) or not match:
        raise ValueError(f"{where}: match must be a pattern such as '*auc'")
    if better not in ("higher", "lower", "none"):
        raise ValueError(f"{where}: better must be higher, lower or none, not {better!r}")
    if not _is_number(tolerance) or tolerance < 0:
        raise ValueError(f"{where}: tolerance must be a number >= 0, not {tolerance!r}")
    return Rule(match, better, float(tolerance))


def _is_number(item: Any) -> bool:
    return isinstance(item, (int, float)) and not isinstance(item, bool) and math.isfinite(item)


def flatten(tree: Any, source: str, prefix: str = "") -> dict[str, float | None]:
    """DVC's view of a metrics file: nested keys joined by '.', numbers or None (undefined) as leaves."""
    if not isinstance(tree, dict):
        raise ValueError(f"{source}: expected a JSON object of metrics, got {type(tree).__name__}")
    out: dict[str, float | None] = {}
    for key, item in tree.items():
        name = f"{prefix}{key}"
        if isinstance(item, dict):
            out |= flatten(item, source, f"{name}.")
        elif item is None or _is_number(item):
            out[name] = None if item is None else float(item)
        else:
            raise ValueError(f"{source}: {name} is {item!r}, not a number or null")
    return out


def parse_metrics(text: str, source: str) -> dict[str, float | None]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    return flatten(data, source)


def read_metrics(path: Path) -> dict[str, float | None]:
    """The workspace's metrics (what the run just wrote)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such metrics file; run the pipeline first (make reproduce)")
    return parse_metrics(path.read_text(encoding="utf-8"), str(path))


def baseline_at(rev: str, path: str) -> dict[str, float | None]:
    """The metrics as committed at ``rev`` (``git show``), from the current folder's view of ``path``."""
    spec = f"{rev}:./{os.path.relpath(path) if os.path.isabs(path) else path}"
    result = subprocess.run(["git", "show", spec], capture_output=True, text=True)
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["git show failed"])[-1]
        raise FileNotFoundError(
            f"no baseline {spec} ({reason}); commit the metrics of an accepted run first (docs/reproduce.md)"
        )
    return parse_metrics(result.stdout, spec)


def compare(baseline: dict[str, float | None], current: dict[str, float | None], config: Config) -> list[Finding]:
    """One finding per metric of either side, in the baseline's order, new metrics last."""
    findings = [_judge(key, old, current, config) for key, old in baseline.items()]
    for key, new in current.items():
        if key not in baseline:
            findings.append(Finding(key, False, f"{key} = {_fmt(new)} (not in the baseline, not gated)", new=True))
    return findings


def _judge(key: str, old: float | None, current: dict[str, float | None], config: Config) -> Finding:
    if key not in current:
        return Finding(key, True, f"{key} disappeared (baseline {_fmt(old)})")
    new = current[key]
    rule = config.rule(key)
    if rule is None:
        return Finding(key, True, f"{key}: no rule matches it; add one to {config.path} (better: higher|lower|none)")
    if rule.better == "none" or old is None:
        return Finding(key, False, f"{key} = {_fmt(new)} (baseline {_fmt(old)}, not gated)")
    if new is None:
        return Finding(key, True, f"{key} became undefined (baseline {_fmt(old)})")
    worse_by = old - new if rule.better == "higher" else new - old
    verdict = (
        f"{key} = {_fmt(new)}, baseline {_fmt(old)}: {rule.better} is better, "
        f"{'worse' if worse_by > 0 else 'change'} {abs(new - old):.4g}, tolerance {rule.tolerance:g}"
    )
    return Finding(key, worse_by > rule.tolerance + _EPS, verdict)


def _fmt(v: float | None) -> str:
    return "undefined" if v is None else f"{v:.4g}"


def gate(pairs: Sequence[tuple[str, dict[str, float | None], dict[str, float | None]]], config: Config) -> int:
    """Print the verdict for (file, baseline, current) triples: one line per metric (FAIL, ok or new),
    then a summary line; the exit status (0 passed, 1 a metric got worse, disappeared or has no rule)."""
    failed = total = 0
    for name, baseline, current in pairs:
        for finding in compare(baseline, current, config):
            print(f"{'FAIL' if finding.failed else ' new' if finding.new else '  ok'} {name}: {finding.text}")
            failed += finding.failed
            total += 1
    status = f"FAILED on {failed} of {total} metrics (the FAIL lines)" if failed else f"passed ({total} metrics)"
    print(f"metrics gate {status}; rules: {config.path}, docs/reproduce.md")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dermdl.metrics_gate", description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", help="metrics files (default: the rules file's 'files')")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--rev", default="HEAD", help="git revision holding the baseline (default HEAD)")
    source.add_argument("--baseline", type=Path, help="a baseline metrics file instead of git (one file only)")
    parser.add_argument("--config", type=Path, default=CONFIG, help=f"rules file (default {CONFIG})")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        files = list(args.files or config.files)
        if args.baseline is not None and len(files) != 1:
            raise ValueError(f"--baseline compares one metrics file, got {len(files)}: name the file to compare")
        pairs = [
            (f, read_metrics(args.baseline) if args.baseline else baseline_at(args.rev, f), read_metrics(Path(f)))
            for f in files
        ]
    except (ValueError, FileNotFoundError) as exc:
        print(f"metrics gate: error: {exc}", file=sys.stderr)
        return 2
    return gate(pairs, config)


if __name__ == "__main__":
    sys.exit(main())
