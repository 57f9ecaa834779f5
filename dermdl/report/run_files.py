"""What the stages wrote under one ``out_dir``, read once for the report.

Why a separate reader: the report must work on any output folder — a full run, a run whose train stage
has not finished, an old folder copied from a server — so every file is optional here and its absence
becomes a sentence in the page, not an exception. Only a folder with none of the files is an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dermdl.crypto import is_token

#: Files that identify a dermdl output folder (any one is enough to build a report).
MARKERS = ("report.json", "model/model.json", "prepared/manifest.json", "validate/report.json")


@dataclass
class RunFiles:
    """The parsed outputs; ``None`` (or empty) where a stage has not written its file."""

    out: Path
    validate: dict[str, Any] | None = None
    manifest: dict[str, Any] | None = None
    params: dict[str, Any] | None = None
    model: dict[str, Any] | None = None
    train: dict[str, Any] | None = None
    report: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    summary: str | None = None
    curves: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    figures: dict[str, bytes] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        for source in (self.model, self.manifest, self.validate):
            if source and isinstance(source.get("classes"), list):
                return [str(c) for c in source["classes"]]
        return []

    @property
    def test_sets(self) -> list[str]:
        """Test sets in report.json's order (analyze writes them in data.sl_tests order)."""
        return [str(name) for name in (self.report or {})]


def _json(path: Path, problems: list[str]) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        problems.append(f"{path}: could not be read ({exc}); re-run the stage that writes it")
        return None


def _tsv(path: Path) -> list[tuple[float, float]]:
    """(step, value) rows of a dvclive TSV: first column the step, last column the value."""
    rows = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for line in lines[1:]:
        parts = line.split("\t")
        try:
            rows.append((float(parts[0]), float(parts[-1])))
        except (ValueError, IndexError):
            continue
    return rows


def read_curves(folder: Path) -> dict[str, list[tuple[float, float]]]:
    """Series name (``train/loss``, ``valid/loss``, ``lr``) -> rows, from dvclive's plots/metrics."""
    if not folder.is_dir():
        return {}
    curves = {}
    for path in sorted(folder.rglob("*.tsv")):
        name = path.relative_to(folder).with_suffix("").as_posix()
        rows = _tsv(path)
        if rows:
            curves[name] = rows
    return curves


def read_run(out: str | Path) -> RunFiles:
    """Everything the report shows; raises FileNotFoundError when ``out`` is not a dermdl output folder."""
    out = Path(out)
    if not out.is_dir():
        raise FileNotFoundError(f"{out}: no such folder; pass the out_dir of a run (e.g. `dermdl report outputs`)")
    if not any((out / marker).is_file() for marker in MARKERS):
        raise FileNotFoundError(
            f"{out}: no dermdl outputs found (none of {', '.join(MARKERS)}); run the pipeline first "
            "(`dvc repro`) or pass the out_dir of a run"
        )
    run = RunFiles(out=out)
    problems = run.problems
    run.validate = _json(out / "validate" / "report.json", problems)
    run.manifest = _json(out / "prepared" / "manifest.json", problems)
    run.params = _json(out / "model" / "params.json", problems)
    run.model = _json(out / "model" / "model.json", problems)
    run.train = _json(out / "model" / "train.json", problems)
    run.report = _json(out / "report.json", problems)
    run.metrics = _json(out / "metrics.json", problems)
    for name in ("report", "metrics", "validate", "manifest", "params", "model", "train"):
        if getattr(run, name) is not None and not isinstance(getattr(run, name), dict):
            problems.append(f"{out}: the {name} file does not hold a JSON object; ignored")
            setattr(run, name, None)
    if (out / "summary.txt").is_file():
        run.summary = (out / "summary.txt").read_text(encoding="utf-8", errors="replace")
    run.curves = read_curves(out / "dvclive" / "plots" / "metrics")
    figures = out / "plots" / "figures"
    if figures.is_dir():
        run.figures = {path.name: path.read_bytes() for path in sorted(figures.glob("*.png"))}
        hidden = [name for name, data in run.figures.items() if is_token(data)]  # data.encrypted: patient images
        if hidden:
            run.figures = {name: data for name, data in run.figures.items() if name not in hidden}
            problems.append(
                f"{len(hidden)} figure(s) showing patient images ({', '.join(hidden)}) are encrypted "
                "(data.encrypted: true) and left out of this page; they open only with the key"
            )
    return run
