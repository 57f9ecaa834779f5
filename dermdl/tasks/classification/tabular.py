"""Image + metadata classification: the tabular encoding and the network that fuses it with the image.

Why its own module: the encoding (vocabularies, normalisation) is fitted once on the training images,
saved in model.json (``extra["tabular"]``) and re-applied unchanged by infer and ``dermdl predict``, so
predictions never depend on params.yaml or on the test data.

A column is *numeric* when every present training value parses as a finite float (age), otherwise
*categorical* (sex, localization). Encoded, one image is one float row: the categorical indices (0 =
missing or a value training never saw, 1.. = the sorted training vocabulary), then the numeric values
normalised with the training mean/std (missing -> 0), then one missing-indicator (0/1) per numeric
column. The network embeds the indices, concatenates everything with the pooled image features, and
puts fastai's head on top; with ``classification.metadata: []`` none of this is built (image only).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dermdl.evaluation.metadata import Metadata, is_missing, metadata_path

Values = Mapping[str, Sequence[str | None]]  # column -> one value per image (None: missing)


def _number(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


@dataclass(frozen=True)
class Column:
    """How one metadata column is encoded; ``vocab`` for categorical, ``mean``/``std`` for numeric."""

    name: str
    kind: str  # "categorical" | "numeric"
    vocab: list[str] = field(default_factory=list)
    mean: float = 0.0
    std: float = 1.0


@dataclass(frozen=True)
class TabularEncoder:
    """The fitted encoding of ``columns`` (see the module docstring for the row layout)."""

    columns: list[Column]

    @property
    def categorical(self) -> list[Column]:
        return [c for c in self.columns if c.kind == "categorical"]

    @property
    def numeric(self) -> list[Column]:
        return [c for c in self.columns if c.kind == "numeric"]

    @property
    def width(self) -> int:
        return len(self.categorical) + 2 * len(self.numeric)

    @classmethod
    def fit(cls, values: Values, names: Sequence[str]) -> TabularEncoder:
        """Vocabularies and mean/std from the training images' values (population std; 1 when constant)."""
        columns = []
        for name in names:
            present = [str(v) for v in values[name] if v is not None and not is_missing(v)]
            numbers = [_number(v) for v in present]
            if present and all(n is not None for n in numbers):
                array = np.asarray(numbers, dtype=np.float64)
                std = float(array.std())
                columns.append(Column(name, "numeric", mean=float(array.mean()), std=std if std > 0 else 1.0))
            else:
                columns.append(Column(name, "categorical", vocab=sorted(set(present))))
        return cls(columns)

    def encode(self, values: Values, n: int) -> np.ndarray:
        """(n, width) float32 rows for ``n`` images (layout in the module docstring)."""
        out = np.zeros((n, self.width), dtype=np.float32)
        for j, column in enumerate(self.categorical):
            index = {v: i + 1 for i, v in enumerate(column.vocab)}
            out[:, j] = [0 if v is None else index.get(str(v).strip(), 0) for v in values[column.name]]
        offset = len(self.categorical)
        for j, column in enumerate(self.numeric):
            for i, value in enumerate(values[column.name]):
                number = None if value is None or is_missing(value) else _number(str(value))
                if number is None:
                    out[i, offset + len(self.numeric) + j] = 1.0
                else:
                    out[i, offset + j] = (number - column.mean) / column.std
        return out

    def to_json(self) -> dict[str, Any]:
        return {"columns": [asdict(c) for c in self.columns]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TabularEncoder:
        return cls([Column(**c) for c in data["columns"]])


def encoder_of(config: Any) -> TabularEncoder | None:
    """The model's tabular encoding (None: an image-only model)."""
    data = config.extra.get("tabular")
    return TabularEncoder.from_json(data) if data else None


def table_values(table: Metadata, sources: Sequence[str], root: Path, names: Sequence[str]) -> dict[str, list]:
    """Per column, each image's value (None: missing or no row); ``sources`` relative to ``root``."""
    return _values(table, [table.row(root / s, root) for s in sources], names)


def _values(table: Metadata, rows: Sequence[Mapping[str, str] | None], names: Sequence[str]) -> dict[str, list]:
    """A column not in the table is a one-line error naming the table and its columns."""
    for name in names:
        if name not in table.columns:
            raise ValueError(
                f"{table.source}: classification.metadata column '{name}' is not in the metadata table (columns: "
                f"{', '.join(table.columns)}); use one of them or add the column"
            )
    return {
        name: [None if r is None or is_missing(r.get(name)) else str(r[name]).strip() for r in rows] for name in names
    }


def run_table(params: Any) -> Metadata:
    """The run's metadata table (data.metadata or <data.root>/metadata.csv); one-line error when there is none."""
    path = metadata_path(params)
    if path is None:
        raise FileNotFoundError(
            f"{Path(params.data.root) / 'metadata.csv'}: no metadata table for classification.metadata "
            f"{list(params.classification.metadata)}; set data.metadata to a CSV (columns path, "
            f"{', '.join(params.classification.metadata)}) or empty classification.metadata"
        )
    return Metadata.read(path)


def fit_extra(params: Any) -> dict[str, Any]:
    """model.json's ``extra["tabular"]``: the encoding fitted on the sl_train images of the prepared manifest
    (never a test set), plus where the table was, so infer finds the test images' values."""
    import json

    names = list(params.classification.metadata)
    if not names:
        return {}
    if params.train.mixup:
        raise ValueError("train.mixup mixes images only; set it to 0 or empty classification.metadata")
    table = run_table(params)
    manifest = json.loads((params.out / "prepared" / "manifest.json").read_text(encoding="utf-8"))
    sources = [r["source"] for name in params.data.sl_train for r in manifest["datasets"].get(name, [])]
    root = Path(params.data.root)
    encoder = TabularEncoder.fit(table_values(table, sources, root, names), names)
    return {"tabular": {**encoder.to_json(), "table": str(table.source.resolve()), "root": str(root.resolve())}}


def record_rows(config: Any, records: Sequence[Any]) -> np.ndarray:
    """Encoded rows of prepared records (training, validation, test sets), from the table model.json names."""
    encoder = encoder_of(config)
    assert encoder is not None
    data = config.extra["tabular"]
    table = Metadata.read(data["table"])
    names = [c.name for c in encoder.columns]
    values = table_values(table, [r["source"] for r in records], Path(data["root"]), names)
    return encoder.encode(values, len(records))


def file_rows(config: Any, paths: Sequence[Path], table_path: Path | None) -> tuple[np.ndarray, int]:
    """Encoded rows of new image files from the ``--metadata`` table and how many images had no row (their
    values count as missing)."""
    encoder = encoder_of(config)
    assert encoder is not None
    names = [c.name for c in encoder.columns]
    if table_path is None:
        raise ValueError(
            f"the model was trained with metadata columns {names}; pass --metadata TABLE.csv (columns path, "
            f"{', '.join(names)})"
        )
    table = Metadata.read(table_path)
    # a path relative to the table's folder (a layout's metadata.csv) or to the working directory, absolute,
    # or a bare file name
    roots = (Path(table_path).resolve().parent, Path.cwd())
    rows = [next((r for r in (table.row(Path(p).resolve(), root) for root in roots) if r), None) for p in paths]
    return encoder.encode(_values(table, rows, names), len(paths)), sum(r is None for r in rows)
