"""Metadata table for subgroups: matching rules (as the leak check's groups file), missing values, and one
clear line for each kind of bad table."""

from __future__ import annotations

from pathlib import Path

import pytest

from dermdl.evaluation.metadata import Metadata, metadata_path, read_metadata
from dermdl.layout.report import Report
from dermdl.leaks.groups import Groups
from dermdl.params import params_from_dict

SOURCES = ["sl_test/mel/a.jpg", "sl_test/nv/b.jpg", "sl_test/nv/c.jpg", "sl_test/nv/d.jpg"]


def _params(root: Path, metadata: Path | None = None):
    return params_from_dict({"data": {"root": str(root), "metadata": str(metadata) if metadata else None}})


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.mark.parametrize(
    "key_of",
    [
        pytest.param(lambda root, s: s, id="relative"),
        pytest.param(lambda root, s: (root / s).as_posix(), id="absolute"),
        pytest.param(lambda root, s: Path(s).name, id="bare-name"),
    ],
)
def test_images_are_matched_like_the_groups_file(tmp_path, key_of):
    root = tmp_path / "data"
    keys = [key_of(root, s) for s in SOURCES[:3]]  # d.jpg has no row
    lines = [f"{k},{age},{sex}" for k, age, sex in zip(keys, ["41", "", "70"], ["male", "NaN", "unknown"])]
    _write(root / "metadata.csv", "path,age,sex\n" + "\n".join(lines) + "\n")
    values = read_metadata(_params(root), SOURCES, ["age", "sex"])
    assert values == {"age": ["41", None, "70", None], "sex": ["male", None, None, None]}
    # the leak check's groups file with the same keys matches the same images
    groups = Groups.read(_write(tmp_path / "g.csv", "path,group\n" + "".join(f"{k},g\n" for k in keys)), Report())
    table = Metadata.read(root / "metadata.csv")
    assert groups is not None
    found = [table.row(root / s, root) is not None for s in SOURCES]
    assert found == [groups.get(root / s, root) is not None for s in SOURCES] == [True, True, True, False]


def test_a_relative_path_wins_over_a_bare_name_and_image_column_and_semicolons_work(tmp_path):
    root = tmp_path / "data"
    _write(root / "metadata.csv", "Image;site\na.jpg;any\nsl_test/mel/a.jpg;face\nb.jpg;back\n")
    assert read_metadata(_params(root), SOURCES, ["site"]) == {"site": ["face", "back", None, None]}


def test_data_metadata_points_at_another_table(tmp_path):
    root = tmp_path / "data"
    _write(root / "metadata.csv", "path,sex\na.jpg,male\n")
    own = _write(tmp_path / "mine.csv", "path,sex\na.jpg,female\n")
    assert metadata_path(_params(root)) == root / "metadata.csv"
    assert metadata_path(_params(root, own)) == own
    assert read_metadata(_params(root, own), SOURCES[:1], ["sex"]) == {"sex": ["female"]}
    assert metadata_path(_params(tmp_path / "empty")) is None


BAD = [
    ("not-utf8", b"path,sex\na.jpg,m\xe4nnlich\n", ["sex"], ValueError, [":2: line 2 is not UTF-8", "CSV UTF-8"]),
    ("no-path-column", "file,sex\na.jpg,m\n", ["sex"], ValueError, ["needs a 'path' (or 'image') column", "'file'"]),
    (
        "unknown-column",
        "path,age,sex\na.jpg,4,m\n",
        ["Sex"],
        ValueError,
        ["analyze.subgroups column 'Sex' is not in the metadata table (columns: age, sex)", "metadata.csv"],
    ),
    (
        "duplicate",
        "path,sex\na.jpg,m\nb.jpg,f\na.jpg,f\n",
        ["sex"],
        ValueError,
        [":4: image 'a.jpg' is also on line 2"],
    ),
    ("short-row", "path,age,sex\na.jpg,4\n", ["sex"], ValueError, [":2: row has 2 fields but the header has 3"]),
    ("empty-path", "path,sex\n,m\n", ["sex"], ValueError, [":2: row has no image path"]),
    ("matches-nothing", "path,sex\nx/y.jpg,m\n", ["sex"], ValueError, ["none of the 4 test images", "relative to"]),
]


@pytest.mark.parametrize("case, text, columns, error, words", BAD, ids=[c[0] for c in BAD])
def test_bad_tables_are_one_line_naming_the_file(tmp_path, case, text, columns, error, words):
    root = tmp_path / "data"
    table = _write(root / "metadata.csv", text)
    with pytest.raises(error) as caught:
        read_metadata(_params(root), SOURCES, columns)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(table))
    for word in words:
        assert word in message


@pytest.mark.parametrize("configured", [True, False], ids=["data.metadata-missing", "no-table"])
def test_missing_table_names_the_params_key(tmp_path, configured):
    params = _params(tmp_path / "data", tmp_path / "nope.csv" if configured else None)
    with pytest.raises(FileNotFoundError, match="data.metadata") as caught:
        read_metadata(params, SOURCES, ["sex"])
    assert "\n" not in str(caught.value)


def test_read_keeps_the_columns_in_table_order(tmp_path):
    table = Metadata.read(_write(tmp_path / "m.csv", "age,path,sex\n1,a.jpg,m\n"))
    assert table.columns == ["age", "sex"]
    assert table.row(tmp_path / "x" / "a.jpg", tmp_path) == {"age": "1", "path": "a.jpg", "sex": "m"}
