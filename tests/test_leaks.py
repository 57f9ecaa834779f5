"""Leak check: planted exact and altered duplicates are ALL found, distinct demo images never are, shared
groups are reported, and validate fails on a leak unless data.allow_leaks.

The demo data (default counts: 480 classification images of three synthetic lesion classes, many of
them smooth round naevi that look alike) is the false-alarm benchmark; altered copies of its images
are the planted leaks.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dermdl import leaks, pipeline
from dermdl.cli import main
from dermdl.demo import CLASSES, generate_demo
from dermdl.params import params_from_dict

pytestmark = pytest.mark.xdist_group("leaks")  # one worker builds the shared demo data once


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("leaks") / "demo"
    generate_demo(out, seed=0)  # default counts: the false-alarm benchmark
    return out


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _crop(left: float, top: float, right: float, bottom: float):
    def crop(image: Image.Image) -> Image.Image:
        w, h = image.size
        return image.crop((round(w * left), round(h * top), w - round(w * right), h - round(h * bottom)))

    return crop


# (case, alteration, where the altered copy goes: "test" = copy of a training image planted in the test set,
#  "train" = copy of a test image planted in the training set, expected kind)
PLANTED = [
    ("exact_copy", None, "test", "exact"),
    ("resized_60pct", lambda im: im.resize((77, 77), Image.Resampling.BILINEAR), "test", "near"),
    ("upscaled_150pct", lambda im: im.resize((192, 192), Image.Resampling.BICUBIC), "test", "near"),
    ("jpeg_q70", lambda im: _jpeg(im, 70), "test", "near"),
    ("flipped_horizontally", lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT), "test", "near"),
    ("flipped_vertically", lambda im: im.transpose(Image.Transpose.FLIP_TOP_BOTTOM), "test", "near"),
    ("rotated_90", lambda im: im.transpose(Image.Transpose.ROTATE_90), "test", "near"),
    ("crop_5pct_corner", _crop(0.05, 0.05, 0, 0), "test", "near"),
    ("crop_5pct_centred", _crop(0.025, 0.025, 0.025, 0.025), "test", "near"),
    ("crop_5pct_one_side", _crop(0, 0, 0.05, 0), "test", "near"),
    ("crop_10pct_centred", _crop(0.05, 0.05, 0.05, 0.05), "test", "near"),
    (
        "crop_flip_jpeg",
        lambda im: _jpeg(_crop(0.04, 0, 0, 0.04)(im).transpose(Image.Transpose.FLIP_LEFT_RIGHT), 80),
        "test",
        "near",
    ),
    ("crop_5pct_in_training_set", _crop(0.05, 0, 0, 0.05), "train", "near"),
    ("jpeg_q70_in_training_set", lambda im: _jpeg(im, 70), "train", "near"),
]


def _source(k: int, dataset: str) -> tuple[str, str]:
    cls = CLASSES[k % len(CLASSES)] if k % 2 else "nevus"  # half of them naevi, the hardest (round, smooth)
    return cls, f"{cls}_{dataset}_{(7 + 3 * k) % 40:04d}.png"


@pytest.fixture(scope="module")
def planted(demo, tmp_path_factory) -> tuple[Path, dict, leaks.LeakCheck]:
    """Demo sl_train vs sl_test (360 distinct images) plus one altered copy per case."""
    root = tmp_path_factory.mktemp("planted")
    shutil.copytree(demo / "classification" / "sl_train", root / "sl_train", copy_function=os.link)
    shutil.copytree(demo / "classification" / "sl_test", root / "sl_test", copy_function=os.link)
    expected = {}
    for k, (case, alter, side, _kind) in enumerate(PLANTED):
        origin = "sl_train" if side == "test" else "sl_test"
        target = "sl_test" if side == "test" else "sl_train"
        cls, name = _source(k, origin)
        src = root / origin / cls / name
        suffix = ".jpg" if "jpeg" in case else ".png"
        dst = root / target / cls / f"planted_{case}{suffix if alter else '.png'}"
        if alter is None:
            shutil.copyfile(src, dst)
        else:
            alter(Image.open(src).convert("RGB")).save(dst, quality=95) if suffix == ".jpg" else alter(
                Image.open(src).convert("RGB")
            ).save(dst)
        expected[case] = (str(src), str(dst)) if side == "test" else (str(dst), str(src))
    check = leaks.check_layout(root, "classification", ["sl_train"], ["sl_test"], workers=2)
    return root, expected, check


@pytest.mark.parametrize("case, _alter, _side, kind", PLANTED, ids=[c[0] for c in PLANTED])
def test_every_planted_duplicate_is_found(planted, case, _alter, _side, kind):
    _root, expected, check = planted
    train, test = expected[case]
    found = [leak for leak in check.leaks if (leak.train, leak.test) == (train, test)]
    assert [leak.kind for leak in found] == [kind], [leak.line() for leak in check.leaks]
    if kind == "near":
        assert 0 <= found[0].distance < 1 - leaks.NEAR_NCC_SAME_COLOUR
        assert found[0].detail["colour"] <= leaks.NEAR_COLOUR
    problem = next(p for p in check.report.errors if p.path == test)
    assert train in problem.problem and "allow_leaks" in problem.fix


def test_planted_duplicates_are_the_only_leaks(planted):
    _root, expected, check = planted
    assert sorted((leak.train, leak.test) for leak in check.leaks) == sorted(expected.values())
    assert check.summary["counts"] == {"exact": 1, "near": len(PLANTED) - 1, "group": 0}
    flips = {leak.test.rsplit("planted_", 1)[-1]: leak.detail["transform"] for leak in check.leaks if leak.detail}
    assert flips["flipped_horizontally.png"] == "mirrored left-right"
    assert flips["flipped_vertically.png"] == "flipped upside down"


@pytest.mark.parametrize(
    "layout, train, test",
    [
        ("classification", ["wl_train"], ["sl_test"]),  # (sl_train vs sl_test: the planted fixture above)
        ("classification", ["sl_train"], ["wl_train"]),
        ("detection", ["sl_train"], ["sl_test"]),  # includes lesion-free skin images
    ],
    ids=["cls_weak_vs_test", "cls_train_vs_weak", "detection"],
)
def test_no_false_alarms_on_distinct_demo_images(demo, layout, train, test):
    check = leaks.check_layout(demo / layout, None, train, test, workers=2)
    assert check.leaks == [] and check.report.ok, check.lines()
    assert check.summary["task"] == layout and check.summary["test_images"] >= 120


@pytest.mark.parametrize("layout", ["segmentation", "detection"])
def test_duplicates_are_found_in_the_other_layouts(tmp_path, layout):
    generate_demo(tmp_path / "demo", n_train=3, n_test=2, n_weak=0, n_negative=1, size=64)
    root = tmp_path / "demo" / layout
    folder = {"segmentation": root / "sl_test" / "images", "detection": root / "images" / "sl_test"}[layout]
    source = sorted(folder.parent.parent.glob("**/melanoma_sl_train_0001.png"))[0]
    Image.open(source).transpose(Image.Transpose.FLIP_TOP_BOTTOM).save(folder / "copy.png")
    check = leaks.check_layout(root, None, ["sl_train"], ["sl_test"], workers=1)
    assert check.summary["task"] == layout
    assert [(Path(x.train).name, Path(x.test).name, x.kind) for x in check.leaks] == [
        ("melanoma_sl_train_0001.png", "copy.png", "near")
    ]


def _noise_layout(root: Path, per_class: int = 3, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for ds in ("sl_train", "sl_test"):
        for cls in ("a", "b"):
            (root / ds / cls).mkdir(parents=True)
            for i in range(per_class):
                noise = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)  # smooth-ish random texture
                Image.fromarray(noise).resize((64, 48), Image.Resampling.BICUBIC).save(
                    root / ds / cls / f"{cls}{i}.png"
                )


def test_shared_groups_are_reported_per_pair_and_per_group(tmp_path):
    root = tmp_path / "data"
    _noise_layout(root)
    (root / "groups.csv").write_text(
        "path,group\n"
        "sl_train/a/a0.png,L1\nsl_train/a/a1.png,L1\nsl_test/a/a0.png,L1\n"  # lesion L1 in both: 2 pairs
        "sl_train/b/b0.png,L2\nsl_test/b/b2.png,L3\n"
    )  # L2, L3: one side only
    check = leaks.check_layout(root, None, ["sl_train"], ["sl_test"], workers=1)
    pairs = sorted(
        (Path(x.train).relative_to(root).as_posix(), Path(x.test).relative_to(root).as_posix(), x.group)
        for x in check.leaks
    )
    assert pairs == [("sl_train/a/a0.png", "sl_test/a/a0.png", "L1"), ("sl_train/a/a1.png", "sl_test/a/a0.png", "L1")]
    assert [x.kind for x in check.leaks] == ["group", "group"] and check.summary["shared_groups"] == 1
    assert len(check.report.errors) == 1 and "group 'L1'" in check.report.errors[0].problem
    assert "2 image(s) in sl_train" in check.report.errors[0].problem
    other = tmp_path / "lesions.csv"
    other.write_text("image,group\na2.png,X\n")  # file-name match; 'image' is accepted for 'path'
    check = leaks.check_layout(root, None, ["sl_train"], ["sl_test"], groups=other, workers=1)
    assert [(Path(x.train).name, Path(x.test).name) for x in check.leaks] == [("a2.png", "a2.png")]


@pytest.mark.parametrize(
    "content, words",
    [
        (None, "groups file does not exist"),
        ("file,lesion\na0.png,L1\n", "needs 'path' (or 'image') and 'group'"),
    ],
)
def test_bad_groups_file_is_an_error(tmp_path, content, words):
    root = tmp_path / "data"
    _noise_layout(root)
    groups = tmp_path / "groups.csv"
    if content is not None:
        groups.write_text(content)
    check = leaks.check_layout(root, None, ["sl_train"], ["sl_test"], groups=groups, workers=1)
    assert not check.report.ok and words in check.report.errors[0].problem


def test_flat_images_are_only_compared_exactly(tmp_path):
    a, b, c = (tmp_path / f"{n}.png" for n in "abc")
    Image.new("RGB", (40, 30), (120, 80, 60)).save(a)
    Image.new("RGB", (40, 30), (122, 80, 60)).save(b)  # a different flat colour: not a duplicate
    Image.new("RGB", (40, 30), (120, 80, 60)).save(c)  # the same bytes: exact duplicate
    check = leaks.find_leaks([("sl_train", a)], [("sl_test", b), ("sl_test", c)], tmp_path, workers=1)
    assert [(x.kind, Path(x.test).name) for x in check.leaks] == [("exact", "c.png")]
    assert leaks.compare(leaks.fingerprint(a), leaks.fingerprint(b)) is None


def test_unreadable_images_are_skipped_with_a_warning(tmp_path):
    root = tmp_path / "data"
    _noise_layout(root)
    (root / "sl_test" / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    check = leaks.check_layout(root, None, ["sl_train"], ["sl_test"], workers=1)
    assert check.report.ok and check.summary["unreadable"] == 1
    assert "not checked for leaks" in check.report.warnings[0].problem


def _params(root: Path, out: Path, **data):
    return params_from_dict({"out_dir": str(out), "data": {"root": str(root), "wl_train": [], **data}})


def test_validate_fails_on_a_leak_unless_allowed(tmp_path, capsys):
    root = tmp_path / "data"
    _noise_layout(root)
    shutil.copyfile(root / "sl_train" / "a" / "a1.png", root / "sl_test" / "a" / "copy.png")
    Image.open(root / "sl_train" / "b" / "b1.png").transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize((80, 60)).save(
        root / "sl_test" / "b" / "flipped.jpg", quality=90
    )
    assert pipeline.validate(_params(root, tmp_path / "out")).ok is False
    err = capsys.readouterr().err
    assert (
        "ERROR" in err and "copy.png: exact duplicate of training image" in err and "flipped.jpg: near duplicate" in err
    )
    report = json.loads((tmp_path / "out" / "validate" / "report.json").read_text())
    assert report["n_errors"] == 2 and report["leaks"]["counts"] == {"exact": 1, "near": 1, "group": 0}
    assert {Path(x["test"]).name for x in report["leaks"]["leaks"]} == {"copy.png", "flipped.jpg"}
    allowed = pipeline.validate(_params(root, tmp_path / "out", allow_leaks=True))
    assert allowed.ok and len(allowed.warnings) == 2
    assert main(["validate", "--params", str(_write_params(tmp_path, root))]) == 1


def _write_params(tmp_path: Path, root: Path) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(f"out_dir: {tmp_path / 'out2'}\ndata:\n  root: {root}\n  wl_train: []\n")
    return path


def test_check_leaks_command(tmp_path, capsys):
    root = tmp_path / "data"
    _noise_layout(root)
    shutil.copyfile(root / "sl_train" / "a" / "a1.png", root / "sl_test" / "a" / "copy.png")
    out = tmp_path / "leaks.json"
    argv = ["check-leaks", "--params", str(_write_params(tmp_path, root)), "--json", str(out)]
    assert main(argv) == 1
    printed = capsys.readouterr().out
    assert "LEAK exact sl_train -> sl_test:" in printed and "1 exact, 0 near-duplicate" in printed
    report = json.loads(out.read_text())
    assert [(x["kind"], x["distance"], Path(x["train"]).name, Path(x["test"]).name) for x in report["leaks"]] == [
        ("exact", 0.0, "a1.png", "copy.png")
    ]
    assert main(argv + ["--allow-leaks"]) == 0
    assert main(["check-leaks", "--root", str(root), "--train", "sl_train", "--test", "nope", "--json", str(out)]) == 1
    assert "dataset 'nope' has no image folder" in capsys.readouterr().err


def test_a_dataset_named_as_training_and_test_is_an_error(tmp_path):
    root = tmp_path / "data"
    _noise_layout(root)
    check = leaks.check_layout(root, None, ["sl_train"], ["sl_train", "sl_test"], workers=1)
    assert "named as training AND test data" in check.report.errors[0].problem and check.leaks == []


def test_check_leaks_help_explains_arguments(capsys):
    with pytest.raises(SystemExit):
        main(["check-leaks", "--help"])
    text = capsys.readouterr().out
    for words in ("--root", "--train", "--test", "--groups", "--allow-leaks", "--json", "near duplicates"):
        assert words in text
