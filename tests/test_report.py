"""The offline experiment report (outputs/report.html): self-contained, complete, escaped, generic.

A tiny real classification run (analyze writes the page), `dermdl report` on existing folders, and a
segmentation folder written by hand (no training) for the generic path; Chromium renders it when present.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from dermdl.cli import main
from dermdl.report import REPORT, write_report
from dermdl.report.html import png_data_uri
from dermdl.report.metrics_view import find_ci
from dermdl.report.sections import class_counts, figures_by_test

CHROMIUM = Path("/usr/bin/chromium")


class _Refs(HTMLParser):
    """Every URL-bearing attribute, the ids, the image sources and the CSS text of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.ids: set[str] = set()
        self.images: list[str] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in {"src", "href", "srcset", "poster", "data", "action", "background"}:
                self.refs.append((tag, name, value or ""))
            if name == "id":
                self.ids.add(value or "")
            if name == "style":
                self.styles.append(value or "")
        if tag == "img":
            self.images.append(dict(attrs).get("src") or "")
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.styles.append(data)


def _parse(path: Path) -> _Refs:
    parser = _Refs()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def _assert_self_contained(path: Path) -> _Refs:
    page = _parse(path)
    for tag, name, value in page.refs:
        assert value.startswith("data:") or value.startswith("#"), f"<{tag} {name}={value[:60]!r}> leaves the file"
        if value.startswith("#"):
            assert value[1:] in page.ids, f"anchor {value} has no target"
    css = "".join(page.styles)
    assert "@import" not in css
    assert all(rest.lstrip("'\" ").startswith("data:") for rest in css.split("url(")[1:])
    assert "<script" not in path.read_text(encoding="utf-8").lower()
    return page


def _png(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


# --- a tiny real run -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from dermdl import pipeline
    from dermdl.demo import generate_demo
    from dermdl.params import params_from_dict

    base = tmp_path_factory.mktemp("report")
    generate_demo(base / "demo", n_train=12, n_test=6, n_weak=1, size=48)
    params = params_from_dict(
        {
            "out_dir": str(base / "out"),
            "data": {"root": str(base / "demo" / "classification")},
            "preprocess": {"size": 48, "workers": 1},
            "train": {"input_size": 48, "bs": 8, "epochs": 1, "pretrained": False},
            "analyze": {"n_boot": 100, "class_groups": {"malignant": ["melanoma"]}},
        }
    )
    pipeline.validate(params)
    for stage in ("preprocess", "train", "infer", "analyze"):
        getattr(pipeline, stage)(params)
    return params


@pytest.mark.slow
def test_analyze_writes_a_self_contained_report_with_every_figure(trained):
    out = trained.out
    page = _assert_self_contained(out / REPORT)
    figures = sorted((out / "plots" / "figures").glob("*.png"))
    assert figures
    for path in figures:
        assert png_data_uri(path.read_bytes()) in page.images, f"{path.name} is not embedded"
    assert len(page.images) == len(figures) + 1  # + the training curves
    text = (out / REPORT).read_text(encoding="utf-8")
    manifest = json.loads((out / "prepared" / "manifest.json").read_text())
    assert f'<td class="num">{len(manifest["datasets"]["sl_test"])}</td>' in text  # images per data set
    report = json.loads((out / "report.json").read_text())
    auc = report["sl_test"]["macro"]["auc"]
    assert f"{auc['value']:.3f} ({auc['lo']:.3f}\u2013{auc['hi']:.3f})" in text  # headline with its CI
    assert "train.epochs" in text and "Model card" in text and "not a medical device" in text


@pytest.mark.slow
def test_report_command_rebuilds_the_page_from_an_existing_folder(trained, tmp_path, capsys):
    copy = tmp_path / "out"
    shutil.copytree(trained.out, copy, ignore=shutil.ignore_patterns("prepared", "checkpoint", "tensorboard"))
    (copy / REPORT).unlink()
    assert main(["report", str(copy)]) == 0
    assert str(copy / REPORT) in capsys.readouterr().out
    page = _assert_self_contained(copy / REPORT)
    assert len(page.images) == len(list((copy / "plots" / "figures").glob("*.png"))) + 1
    assert "No prepared data" in (copy / REPORT).read_text(encoding="utf-8")  # said, not guessed


@pytest.mark.parametrize("folder", ["empty", "missing"])
def test_report_command_on_a_folder_without_outputs_is_one_clear_line(tmp_path, capsys, folder):
    if folder == "empty":
        (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / folder)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tmp_path / folder) in err
    assert "no dermdl outputs" in err or "no such folder" in err
    assert not (tmp_path / folder / REPORT).exists()


# --- hand-written folders: the generic path -----------------------------------------------------------


def _ci(value, lo, hi):
    return {"value": value, "lo": lo, "hi": hi}


def _segmentation_folder(out: Path, classes: list[str], test: str = "sl_test") -> None:
    """What the stages of a segmentation run write, by hand: no training."""
    (out / "model").mkdir(parents=True)
    (out / "prepared").mkdir()
    (out / "validate").mkdir()
    (out / "plots" / "figures").mkdir(parents=True)
    (out / "dvclive" / "plots" / "metrics" / "train").mkdir(parents=True)
    (out / "dvclive" / "plots" / "metrics" / "valid").mkdir(parents=True)
    model = {"task": "segmentation", "arch": "unet", "classes": classes, "input_size": 64, "extra": {}}
    (out / "model" / "model.json").write_text(json.dumps(model))
    (out / "model" / "params.json").write_text(json.dumps({"task": "segmentation", "train": {"epochs": 3}}))
    (out / "model" / "train.json").write_text(json.dumps({"train_images": 8, "valid_images": 2, "seconds": 1.5}))
    masks = [{"path": f"{test}/images/{i}.png", "target": f"{test}/masks/{i}.png"} for i in range(3)]
    (out / "prepared" / "manifest.json").write_text(json.dumps({"classes": classes, "datasets": {test: masks}}))
    (out / "validate" / "report.json").write_text(json.dumps({"ok": True, "leaks": {"counts": {"exact": 1}}}))
    per_class = {c: {"dice": _ci(0.5 + i / 10, 0.4, 0.9), "iou": _ci(None, None, None)} for i, c in enumerate(classes)}
    report = {
        test: {
            "n": 3,
            "overall": {"dice_foreground": _ci(0.812345, 0.7, 0.9)},
            "per_class": per_class,
            "pixel_confusion": {c: {d: 5 for d in classes} for c in classes},
            "calibration": {"bins": 15, classes[-1]: {"ece": _ci(0.1, 0.05, 0.2)}},
            "subgroups": {"columns": {"site": {"face": {"n": 9, "below_overall": ["dice"]}}}},
        }
    }
    (out / "report.json").write_text(json.dumps(report))
    (out / "metrics.json").write_text(json.dumps({test: {"dice_foreground": 0.812345}}))
    (out / "plots" / "figures" / f"{test}_gallery_best.png").write_bytes(_png())
    (out / "plots" / "figures" / f"{test}_roc.png").write_bytes(b"")  # truncated: warned about
    (out / "plots" / "figures" / "overview.png").write_bytes(_png((0, 90, 0)))
    for split in ("train", "valid"):
        (out / "dvclive" / "plots" / "metrics" / split / "loss.tsv").write_text("step\tloss\n0\t1.0\n1\t0.5\n")


def test_segmentation_folder_written_by_hand_gives_a_complete_report(tmp_path):
    out = tmp_path / "out"
    _segmentation_folder(out, ["skin", "lesion"])
    write_report(out)
    page = _assert_self_contained(out / REPORT)
    text = (out / REPORT).read_text(encoding="utf-8")
    assert png_data_uri((out / "plots" / "figures" / "sl_test_gallery_best.png").read_bytes()) in page.images
    assert png_data_uri((out / "plots" / "figures" / "overview.png").read_bytes()) in page.images
    assert len(page.images) == 3  # two figures + the training curves; the empty PNG is not embedded
    assert "sl_test_roc.png" in text and "not a PNG" in text
    assert "0.812 (0.700\u20130.900)" in text  # metrics.json's number with report.json's CI
    assert "masks" in text and "counts are images only" in text
    limits = text[text.index("Limits") :]
    for flag in ("1 training/test leak", "below the overall value", "not temperature-scaled", "undefined"):
        assert flag in limits


def test_user_strings_are_escaped(tmp_path):
    out = tmp_path / "out"
    evil = '<b>mel</b>&"x"'
    _segmentation_folder(out, ["skin", evil], test="t<i>&1")
    write_report(out)
    _assert_self_contained(out / REPORT)
    text = (out / REPORT).read_text(encoding="utf-8")
    assert evil not in text and "t<i>" not in text and "<b>mel" not in text and "t&lt;i&gt;&amp;1" in text
    assert "&lt;b&gt;mel&lt;/b&gt;&amp;&quot;x&quot;" in text
    assert 'id="test-t-i-1"' in text  # anchors are sanitised too


# --- units ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "names, tests, expected, other",
    [
        (["a_roc.png", "a_b_roc.png", "c.png"], ["a", "a_b"], {"a": ["a_roc.png"], "a_b": ["a_b_roc.png"]}, ["c.png"]),
        (["sl_test_confusion.png"], ["sl_test"], {"sl_test": ["sl_test_confusion.png"]}, []),
        (["sl_testx.png"], ["sl_test"], {"sl_test": []}, ["sl_testx.png"]),
    ],
)
def test_figures_go_to_the_longest_matching_test_set(names, tests, expected, other):
    assert figures_by_test(names, tests) == (expected, other)


@pytest.mark.parametrize(
    "records, counts, unit",
    [
        ([{"target": "a"}, {"target": "b"}, {"target": "a"}], {"a": 2, "b": 1}, "images"),
        ([{"target": [{"category": "a"}, {"category": "a"}]}, {"target": []}], {"a": 2}, "objects"),
        ([{"target": "sl/masks/1.png"}], {}, "images"),
    ],
)
def test_class_counts_follow_what_the_targets_hold(records, counts, unit):
    got, got_unit = class_counts(records, ["a", "b"])
    assert dict(got) == counts and got_unit == unit


SECTION = {
    "macro": {"auc": _ci(0.7, 0.6, 0.8)},
    "calibration": {"after": {"macro_auc": _ci(0.7, 0.5, 0.9), "ece": _ci(0.1, 0.0, 0.2)}},
    "groups": {"malignant": {"auc": _ci(0.9, 0.85, 0.95)}},
    "per_class": {"melanoma": {"auc": _ci(0.9, 0.8, 0.99)}},
}


@pytest.mark.parametrize(
    "path, point, expected",
    [
        (("macro", "auc"), 0.7, SECTION["macro"]["auc"]),  # the same path
        (("macro_auc",), 0.7, SECTION["macro"]["auc"]),  # same words, the shorter path wins the tie
        (("ece",), 0.1, SECTION["calibration"]["after"]["ece"]),
        (("malignant", "auc"), 0.9, SECTION["groups"]["malignant"]["auc"]),
        (("accuracy",), 0.55, None),  # no CI with this value
    ],
)
def test_headline_numbers_find_their_ci(path, point, expected):
    assert find_ci(SECTION, path, point) == expected


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (Debian package `chromium`)")
def test_chromium_renders_the_report_offline(tmp_path):
    out = tmp_path / "out"
    _segmentation_folder(out, ["skin", "lesion"])
    write_report(out)
    shot = tmp_path / "shot.png"
    subprocess.run(
        [str(CHROMIUM), "--headless=new", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
         "--window-size=1000,1400", (out / REPORT).as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    image = Image.open(shot).convert("RGB")
    colors = image.getcolors(maxcolors=1 << 20) or []
    assert len(colors) > 50  # text, tables, figures: not a blank page
    header = image.getpixel((500, 10))
    assert header[2] > header[0] + 60  # the blue header was drawn
