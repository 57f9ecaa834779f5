"""Subgroup analysis: bands (hand-computed, quartiles as pandas.qcut), the driver against a plain loop, flags,
the text table, plot files, and analyze end to end on hand-written predictions with a metadata.csv."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest

from dermdl.evaluation.subgroups import (
    MIN_N,
    analyze_subgroups,
    format_subgroups,
    plot_records,
    subgroup_labels,
    subgroup_section,
    write_subgroup_plots,
)
from dermdl.tasks.classification.metrics import classification_metrics

BANDS = [
    (
        "age-decades",
        ["41", "49.0", "50", "12", None, "0"],
        10,
        ["40-49", "40-49", "50-59", "10-19", "missing", "0-9"],
        ["0-9", "10-19", "40-49", "50-59", "missing"],
    ),
    ("width-2.5", ["40", "41", "43"], 2.5, ["[40, 42.5)", "[40, 42.5)", "[42.5, 45)"], ["[40, 42.5)", "[42.5, 45)"]),
    ("fractions", ["0.7", "0.2", "1"], 0.5, ["[0.5, 1)", "[0, 0.5)", "[1, 1.5)"], ["[0, 0.5)", "[0.5, 1)", "[1, 1.5)"]),
    ("categorical", ["male", "female", None, "male"], None, ["male", "female", "missing", "male"], None),
    ("fitzpatrick-codes", ["1", "6", "3", None, "10"], None, ["1", "6", "3", "missing", "10"], None),
]


@pytest.mark.parametrize("case, values, width, labels, order", BANDS, ids=[b[0] for b in BANDS])
def test_labels_by_hand(case, values, width, labels, order):
    got, got_order = subgroup_labels(values, width)
    assert got == labels
    expected_order = (
        order
        or {
            "categorical": ["female", "male", "missing"],
            "fitzpatrick-codes": ["1", "3", "6", "10", "missing"],
        }[case]
    )
    assert got_order == expected_order


@pytest.mark.parametrize(
    "values",
    [
        [str(v) for v in range(1, 21)],
        [str(v) for v in [1] * 10 + list(range(2, 12))],  # ties: edges merge as with qcut(duplicates="drop")
        [f"{v:.3f}" for v in np.random.default_rng(0).normal(50, 15, 57)],
    ],
    ids=["1-20", "ties", "normal"],
)
def test_quartiles_partition_like_pandas_qcut(values):
    labels, order = subgroup_labels([*values, None])
    assert labels[-1] == "missing" and order[-1] == "missing"
    bins = pd.qcut(np.asarray(values, dtype=float), 4, duplicates="drop")
    mine = pd.Series(labels[:-1]).astype("category").cat.codes.to_numpy()
    # same partition: two images share a quartile label iff they share a qcut bin
    assert np.array_equal(mine[:, None] == mine[None, :], bins.codes[:, None] == bins.codes[None, :])
    assert len(order) - 1 == len(bins.categories)
    first = order[0]
    assert first.startswith("[") and all(o.startswith("(") for o in order[1:-1])


def test_quartile_names_by_hand():
    labels, order = subgroup_labels([str(v) for v in range(1, 21)])
    assert order == ["[1, 5.75]", "(5.75, 10.5]", "(10.5, 15.25]", "(15.25, 20]"]
    assert labels[4] == "[1, 5.75]" and labels[5] == "(5.75, 10.5]" and labels[19] == "(15.25, 20]"


def _data(n: int = 80, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    logits = rng.normal(0, 1, (n, 3))
    logits[np.arange(n), y] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, probs


def _metrics_of(y, probs, groups=None, n_boot=60):
    def metrics_of(index):
        g = None if groups is None else [groups[i] for i in index]
        m = classification_metrics(y[index], probs[index], ["a", "b", "c"], n_boot=n_boot, seed=1, groups=g)
        return {"balanced_accuracy": m["overall"]["balanced_accuracy"], "accuracy": m["overall"]["accuracy"]}

    return metrics_of


@pytest.mark.parametrize("clustered", [False, True], ids=["image", "group"])
def test_driver_matches_a_plain_loop(clustered):
    y, probs = _data()
    n = len(y)
    site = ["back", "face", "leg", "acral"]
    sites = [site[i % 3] if i != 7 else "acral" for i in range(n)]  # acral: 1 image, below MIN_N
    sites[11] = sites[12] = None
    groups = [f"L{i // 2}" for i in range(n)] if clustered else None
    labels = {"site": subgroup_labels(sites)}
    result = analyze_subgroups(labels, _metrics_of(y, probs, groups), MIN_N)
    overall = classification_metrics(y, probs, ["a", "b", "c"], n_boot=60, seed=1, groups=groups)["overall"]
    assert result["overall"] == {"balanced_accuracy": overall["balanced_accuracy"], "accuracy": overall["accuracy"]}
    assert list(result["columns"]["site"]) == ["acral", "back", "face", "leg", "missing"]
    for name, row in result["columns"]["site"].items():
        index = [i for i in range(n) if (sites[i] or "missing") == name]
        assert row["n"] == len(index)
        if len(index) < MIN_N:
            assert row == {"n": len(index)}
            continue
        sub_groups = None if groups is None else [groups[i] for i in index]
        m = classification_metrics(y[index], probs[index], ["a", "b", "c"], n_boot=60, seed=1, groups=sub_groups)
        for key in ("balanced_accuracy", "accuracy"):
            assert row[key] == m["overall"][key]
        expected = [k for k in ("balanced_accuracy", "accuracy") if m["overall"][k]["hi"] < overall[k]["value"]]
        assert row["below_overall"] == expected


def test_a_worse_subgroup_is_flagged_and_marked_in_the_table():
    y, probs = _data(120)
    sex = ["female" if i % 2 else "male" for i in range(len(y))]
    bad = np.flatnonzero(np.asarray(sex) == "male")
    probs[bad] = np.roll(probs[bad], 1, axis=1)  # the model is wrong for men
    result = analyze_subgroups({"sex": subgroup_labels(sex)}, _metrics_of(y, probs), MIN_N)
    rows = result["columns"]["sex"]
    assert rows["male"]["below_overall"] == ["balanced_accuracy", "accuracy"]
    assert rows["female"]["below_overall"] == []
    table = format_subgroups(result)
    line = next(t for t in table.splitlines() if t.startswith("male "))
    assert line.count("*") == 2 and "60" in line
    assert "*" not in next(t for t in table.splitlines() if t.startswith("female "))
    assert "Subgroups by sex" in table and "Balanced accuracy" in table


def test_table_and_plots_of_small_and_odd_subgroups(tmp_path):
    y, probs = _data(40)
    column = ["x"] * 36 + ["y"] * 4
    result = analyze_subgroups({"site/area": subgroup_labels(column)}, _metrics_of(y, probs), MIN_N)
    table = format_subgroups(result).splitlines()
    assert next(t for t in table if t.startswith("y ")).split() == ["y", "4"]  # n only, no values
    write_subgroup_plots(result, "sl_test", tmp_path)
    records = json.loads((tmp_path / "subgroups" / "sl_test--site_area.json").read_text())
    assert records == plot_records(result, "site/area")
    assert {(r["subgroup"], r["metric"]) for r in records} == {("x", "balanced_accuracy"), ("x", "accuracy")}
    assert all(r["n"] == 36 and r["lo"] <= r["value"] <= r["hi"] for r in records)
    png = tmp_path / "figures" / "sl_test_subgroups_site_area.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_band_width_for_a_text_column_names_the_key(tmp_path):
    y, probs = _data(10)
    with pytest.raises(ValueError, match=r"analyze.bands.sex: band width 10 .* \(e.g. 'male'\)"):
        subgroup_section({"sex": ["male"] * 10}, {"sex": 10}, _metrics_of(y, probs), "t", tmp_path)


# --- end to end: pipeline.analyze on hand-written predictions with <root>/metadata.csv and groups.csv ----------


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory):
    from dermdl import pipeline
    from dermdl.io import atomic_write_json
    from dermdl.models import ModelConfig
    from dermdl.params import params_from_dict

    tmp = tmp_path_factory.mktemp("subgroups_e2e")
    root, out = tmp / "data", tmp / "out"
    y, probs = _data(90, seed=3)
    classes = ["a", "b", "c"]
    paths = [f"sl_test/{classes[c]}/{i}.png" for i, c in enumerate(y)]
    frame = pd.DataFrame({"path": paths, "true_label": [classes[c] for c in y]})
    frame["predicted_label"] = [classes[c] for c in probs.argmax(axis=1)]
    for k, c in enumerate(classes):
        frame[f"prob_{c}"] = probs[:, k]
    (out / "predictions").mkdir(parents=True)
    frame.to_csv(out / "predictions" / "sl_test.csv", index=False)
    ages = [str(18 + (i * 7) % 70) if i % 10 else "unknown" for i in range(90)]
    sexes = ["male" if i % 3 else "female" for i in range(90)]
    root.mkdir()
    (root / "metadata.csv").write_text(
        "path,age,sex\n" + "".join(f"{p},{a},{s}\n" for p, a, s in zip(paths, ages, sexes))
    )
    (root / "groups.csv").write_text("path,group\n" + "".join(f"{p},L{i // 2}\n" for i, p in enumerate(paths)))
    config = ModelConfig(
        task="classification",
        arch="efficientnet_lite0",
        classes=classes,
        input_size=32,
        mean=[0.5] * 3,
        std=[0.5] * 3,
        preprocess_size=32,
        resize="squish",
    )
    atomic_write_json(out / "model" / "model.json", asdict(config))
    params = params_from_dict(
        {
            "data": {"root": str(root), "sl_tests": ["sl_test"]},
            "out_dir": str(out),
            "analyze": {"n_boot": 100, "subgroups": ["sex", "age"], "bands": {"age": 10}, "explain": 0},
        }
    )
    pipeline.analyze(params)
    return out, y, probs, ages, sexes


def test_analyze_reports_subgroups(analyzed):
    out, y, probs, ages, sexes = analyzed
    section = json.loads((out / "report.json").read_text())["sl_test"]["subgroups"]
    assert list(section["columns"]) == ["sex", "age"]
    assert list(section["columns"]["age"])[-1] == "missing" and section["columns"]["age"]["missing"]["n"] == 9
    assert section["columns"]["age"]["20-29"]["n"] == sum(a != "unknown" and 20 <= int(a) <= 29 for a in ages)
    # a subgroup's values are the classification metrics of its images, lesions resampled (groups.csv)
    women = [i for i, s in enumerate(sexes) if s == "female"]
    m = classification_metrics(
        y[women], probs[women], ["a", "b", "c"], n_boot=100, seed=0, groups=[f"L{i // 2}" for i in women]
    )
    row = section["columns"]["sex"]["female"]
    assert row["n"] == 30 and row["balanced_accuracy"] == pytest.approx(m["overall"]["balanced_accuracy"])
    assert row["macro_auc"] == pytest.approx(m["macro"]["auc"])
    assert "Subgroups by sex" in (out / "summary.txt").read_text()
    assert "Subgroups by age" in (out / "summary.txt").read_text()
    assert (out / "plots" / "figures" / "sl_test_subgroups_age.png").is_file()
    records = json.loads((out / "plots" / "subgroups" / "sl_test--sex.json").read_text())
    assert {r["metric"] for r in records} == {"balanced_accuracy", "macro_auc", "accuracy"}
