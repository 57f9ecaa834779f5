"""Per-image metadata (age, sex, body site, Fitzpatrick type, ...) for subgroup analysis.

The table is ``data.metadata`` or ``<data.root>/metadata.csv`` (which ``dermdl import`` writes): a
``path`` (or ``image``) column and one column per variable. Images are matched exactly like the groups
file of the leak check (:class:`dermdl.leaks.groups.Groups`): a path relative to the data root, an
absolute path, or a bare file name that matches every image of that name. Why the same rules: users
write one table for both, and a path form accepted in one place must not be silently ignored in another.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dermdl.image_keys import ImageKeyed
from dermdl.importer.spec import MISSING_TOKENS
from dermdl.io import CSV_ENCODING_FIX, NotUtf8Error, read_utf8


def is_missing(value: str | None) -> bool:
    """Empty, NaN, N/A, "unknown" (HAM10000), ...: the same tokens the importer treats as no group id."""
    return value is None or value.strip().lower() in MISSING_TOKENS


def metadata_path(params: Any) -> Path | None:
    """The metadata table of a run: data.metadata, else ``<data.root>/metadata.csv`` when present."""
    if params.data.metadata:
        path = Path(params.data.metadata)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: metadata table does not exist; fix data.metadata (a CSV with columns path, age, sex, "
                "...) or set it to null"
            )
        return path
    path = Path(params.data.root) / "metadata.csv"
    return path if path.is_file() else None


class Metadata(ImageKeyed[dict[str, str]]):
    """The rows of a metadata table, matched to images like the groups file (:mod:`dermdl.image_keys`)."""

    def __init__(self, rows: dict[str, dict[str, str]], columns: list[str], source: Path) -> None:
        super().__init__(rows)
        self.source, self.columns = source, columns

    def row(self, path: Path, root: Path) -> dict[str, str] | None:
        return self.get(path, root)

    @classmethod
    def read(cls, path: str | os.PathLike) -> Metadata:
        """Parse the CSV (``,`` ``;`` or tab separated); one-line ValueError for each kind of bad table."""
        path = Path(path)
        try:
            text = read_utf8(path)
        except NotUtf8Error as exc:
            raise ValueError(f"{path}:{exc.line}: {exc}; {CSV_ENCODING_FIX}") from None
        try:
            dialect: Any = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
        except csv.Error:
            dialect = csv.excel
        reader = csv.reader(io.StringIO(text, newline=""), dialect)
        header = [h.strip() for h in next(reader, [])]
        lower = [h.lower() for h in header]
        key = lower.index("path") if "path" in lower else lower.index("image") if "image" in lower else None
        if key is None:
            raise ValueError(
                f"{path}: metadata table has columns {header}, needs a 'path' (or 'image') column; add a header "
                "line such as 'path,age,sex' (path relative to the data root)"
            )
        rows: dict[str, dict[str, str]] = {}
        lines: dict[str, int] = {}
        for fields in reader:
            line = reader.line_num
            if not any(f.strip() for f in fields):
                continue
            if len(fields) != len(header):
                raise ValueError(
                    f"{path}:{line}: row has {len(fields)} fields but the header has {len(header)}; fix the row "
                    "(a stray or missing separator)"
                )
            image = fields[key].strip()
            if not image:
                raise ValueError(f"{path}:{line}: row has no image path; fill in the path or delete the row")
            if image in rows:
                raise ValueError(
                    f"{path}:{line}: image '{image}' is also on line {lines[image]}; keep one row per image"
                )
            rows[image], lines[image] = dict(zip(header, fields)), line
        return cls(rows, [h for i, h in enumerate(header) if i != key], path)

    def values(self, sources: Sequence[str], root: Path, columns: Sequence[str]) -> dict[str, list[str | None]]:
        """Per asked column, the value of each image (``sources`` relative to ``root``), None when missing
        (no row, or an empty/NaN/"unknown" value). Asking for an absent column, or a table that matches none
        of the images, is a one-line ValueError."""
        for column in columns:
            if column not in self.columns:
                raise ValueError(
                    f"{self.source}: analyze.subgroups column '{column}' is not in the metadata table (columns: "
                    f"{', '.join(self.columns)}); use one of them or add the column"
                )
        found = [self.row(root / source, root) for source in sources]
        if sources and not any(found):
            raise ValueError(
                f"{self.source}: none of the {len(sources)} test images is in the metadata table (e.g. "
                f"'{sources[0]}'); its path column must hold paths relative to {root}, absolute paths or file names"
            )
        out: dict[str, list[str | None]] = {}
        for column in columns:
            cells = [None if row is None else row.get(column) for row in found]
            out[column] = [None if is_missing(v) else str(v).strip() for v in cells]
        return out


def read_metadata(params: Any, sources: Sequence[str], columns: Sequence[str]) -> dict[str, list[str | None]]:
    """The asked metadata columns for images ``sources`` (relative to data.root), as in
    :meth:`Metadata.values`; a one-line error when no table is configured or found."""
    path = metadata_path(params)
    if path is None:
        raise FileNotFoundError(
            f"{Path(params.data.root) / 'metadata.csv'}: no metadata table for analyze.subgroups "
            f"{list(columns)}; set data.metadata to a CSV (columns path, {', '.join(columns)}) or empty "
            "analyze.subgroups"
        )
    return Metadata.read(path).values(sources, Path(params.data.root), columns)
