"""Bad-input catalogue (issue 12): each case is an input a user or a file can throw at dermdl and the exact
outcome — an error naming the file or key with how to fix it, on stderr, a non-zero exit, no traceback —
and the data folder is byte-for-byte unchanged afterwards. docs/bad-inputs.md lists the cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from digests import tree_digest
from PIL import Image

from dermdl.cli import main


def _layout(root: Path) -> None:
    rng = np.random.default_rng(0)
    for dataset in ("sl_train", "sl_test"):
        for cls in ("a", "b"):
            folder = root / dataset / cls
            folder.mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(folder / f"{cls}{i}.png")


@pytest.fixture
def data(tmp_path):
    root = tmp_path / "data"
    _layout(root)
    return root


def _params(tmp_path: Path, root: Path, extra: str = "") -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(f"out_dir: {tmp_path / 'out'}\ndata:\n  root: {root}\n  wl_train: []\n{extra}", encoding="utf-8")
    return path


def _run(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


# params.yaml content -> what the error says (exit 2: a params error)
PARAMS_FILE_CASES = [
    ("bool-as-epochs", "train:\n  epochs: true\n", "train.epochs: expected a number, got the boolean true"),
    ("bool-as-lr", "train:\n  lr: yes\n", "train.lr: expected a number, got the boolean true"),
    ("duplicate-section", "train:\n  lr: 0.1\ntrain:\n  lr: 0.2\n", "key 'train' is given twice"),
    ("duplicate-key", "train:\n  lr: 0.1\n  lr: 0.2\n", "key 'lr' is given twice"),
    ("huge-seed", "train:\n  seed: 123456789012345678901234\n", "train.seed: Input should be less than or equal to"),
    ("negative-seed", "train:\n  seed: -1\n", "train.seed: Input should be greater than or equal to 0"),
    ("huge-analyze-seed", "analyze:\n  seed: 99999999999\n", "analyze.seed: Input should be less than or equal to"),
    ("unknown-task", "task: segmentaton\n", "unknown task 'segmentaton'"),
    ("moved-and-new-key", "train:\n  loss: ce\nclassification:\n  loss: focal\n", "train.loss and classification.loss"),
    ("yaml-object-tag", "train: !!python/object/apply:os.system [echo]\n", "not valid YAML"),
    ("tab-indent", "train:\n\tlr: 0.1\n", "not valid YAML"),
    ("unknown-section", "trian:\n  lr: 0.1\n", "trian: unknown key"),
    ("retired-key", "train:\n  workers: 2\n", "train.workers: no longer used"),
    ("string-lr", "train:\n  lr: fast\n", "train.lr: Input should be a valid number"),
    ("negative-epochs", "train:\n  epochs: -1\n", "train.epochs: Input should be greater than or equal to 0"),
    ("float-bs", "train:\n  bs: 2.5\n", "train.bs: Input should be a valid integer"),
    ("list-lr", "train:\n  lr: [0.1, 0.2]\n", "train.lr: Input should be a valid number"),
    (
        "huge-input-size",
        "train:\n  input_size: 30000\n",
        "train.input_size: Input should be less than or equal to 4096",
    ),
    ("tiny-preprocess", "preprocess:\n  size: 2\n", "preprocess.size: Input should be greater than or equal to 8"),
    ("ci-one", "analyze:\n  ci: 1\n", "analyze.ci: Input should be less than 1"),
    ("bad-resize", "preprocess:\n  resize: stretch\n", "preprocess.resize: 'stretch' is not allowed"),
    ("bad-tta", "infer:\n  tta: rotate\n", "infer.tta: 'rotate' is not allowed"),
    ("bad-optimizer", "train:\n  optimizer: adamx\n", "train.optimizer: 'adamx' is not allowed"),
    ("bad-model", "classification:\n  model: efficientnet_lit0\n", "unknown model 'efficientnet_lit0'"),
    ("bad-detector", "detection:\n  model: yolo\n", "unknown detector 'yolo'"),
    ("one-fold", "train:\n  cv_folds: 1\n", "cv_folds=1 is not cross-validation"),
    ("tta-for-detection", "task: detection\ninfer:\n  tta: flips\n", "not available for detection"),
    ("mixup-for-detection", "task: detection\ntrain:\n  mixup: 0.4\n", "not available for detection"),
    ("oversample-segmentation", "task: segmentation\ntrain:\n  oversample: true\n", "no class to balance"),
    ("weak-labels-without-sets", "train:\n  weak_labels: pretrain\n", "needs weakly labelled datasets"),
    ("one-seg-code", "segmentation:\n  codes: [skin]\n", "give at least two class names"),
    ("bad-mask-value", "segmentation:\n  mask_values: {255: 7}\n", "class ids [7] do not exist"),
    ("full-data-with-monitor", "train:\n  full_data: true\n  early_stopping: 2\n", "full_data trains without"),
]


@pytest.mark.parametrize("name, extra, message", PARAMS_FILE_CASES, ids=[c[0] for c in PARAMS_FILE_CASES])
def test_bad_params_file(tmp_path, data, capsys, name, extra, message):
    before = tree_digest(data)
    code, err = _run(["validate", "--params", str(_params(tmp_path, data, extra))], capsys)
    assert code == 2 and message in err and str(tmp_path / "params.yaml") in err
    assert tree_digest(data) == before


def test_params_file_not_utf8_names_the_line(tmp_path, data, capsys):
    path = _params(tmp_path, data)
    path.write_bytes(path.read_bytes() + "train:\n  exp_name: caf\xe9\n".encode("latin-1"))
    code, err = _run(["validate", "--params", str(path)], capsys)
    assert code == 2 and f"{path}: line 6 is not UTF-8 text" in err and "save the file as UTF-8" in err


def test_params_file_with_bom_is_accepted(tmp_path, data, capsys):
    path = _params(tmp_path, data)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert _run(["validate", "--params", str(path)], capsys)[0] == 0


# --set values -> what the error says
SET_CASES = [
    ("into-a-value", "train.lr.x=1", "train.lr is a single value, not a section"),
    ("unclosed-list", "train.lr=[1", "the value is not valid YAML"),
    ("yes-as-number", "train.epochs=yes", "train.epochs: expected a number, got the boolean true"),
    ("empty-key", "=3", "'' is not a key"),
    ("trailing-dot", "train.=3", "'train.' is not a key"),
    ("huge-seed", "train.seed=123456789012345678901234", "train.seed: Input should be less than or equal to"),
    ("unknown-key", "train.lrr=0.1", "train.lrr: unknown key"),
    ("wrong-type", "train.bs=many", "train.bs: Input should be a valid integer"),
    ("list-for-number", "train.lr=[1, 2]", "train.lr: Input should be a valid number"),
    ("mapping-for-number", "train.lr={a: 1}", "train.lr: Input should be a valid number"),
    ("null-epochs", "train.epochs=null", "train.epochs: Input should be a valid integer"),
    ("task-typo", "task=detecton", "unknown task 'detecton'"),
    ("negative-valid", "train.valid_size=-0.1", "train.valid_size: Input should be greater than 0"),
    ("recipe-typo", "train.recipe=fast", "train.recipe: 'fast' is not allowed"),
    ("moved-key-typo", "train.model=efficientnet_lite9", "classification.model: unknown model 'efficientnet_lite9'"),
]


@pytest.mark.parametrize("name, setting, message", SET_CASES, ids=[c[0] for c in SET_CASES])
def test_bad_set_value(tmp_path, data, capsys, name, setting, message):
    code, err = _run(["validate", "--params", str(_params(tmp_path, data)), "--set", setting], capsys)
    assert code == 2 and message in err
    lines = [line for line in err.strip().splitlines() if not line.startswith("params: ")]  # moved-key notes
    assert len(lines) <= 2  # the file/command line, then the one problem


def test_out_dir_inside_the_data_root_is_refused(tmp_path, data, capsys):
    path = tmp_path / "params.yaml"
    path.write_text(f"out_dir: {data / 'results'}\ndata:\n  root: {data}\n  wl_train: []\n")
    before = tree_digest(data)
    code, err = _run(["validate", "--params", str(path)], capsys)
    assert code == 2 and "is inside data.root" in err and "choose an out_dir outside the data folder" in err
    assert tree_digest(data) == before and not (data / "results").exists()


def test_convert_out_inside_the_input_is_refused(tmp_path, capsys):
    from dermdl.demo import generate_demo

    demo = tmp_path / "demo"
    generate_demo(demo, n_train=1, n_test=1, n_weak=1, size=32)
    root = demo / "segmentation"
    before = tree_digest(root)
    code, err = _run(["convert", "masks-to-coco", "--root", str(root), "--out", str(root / "coco")], capsys)
    assert code == 1 and "inside the input folder" in err
    assert tree_digest(root) == before


def test_import_out_inside_the_image_folder_is_refused(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    rows = ["file,label,patient"]
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(images / f"{i}.png")
        rows.append(f"images/{i}.png,{'ab'[i % 2]},p{i}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    before = tree_digest(images)
    argv = [
        "import",
        str(tmp_path / "labels.csv"),
        "--out",
        str(images / "layouts"),
        "--image-column",
        "file",
        "--label-column",
        "label",
        "--group-column",
        "patient",
        "--seed",
        "0",
    ]
    code, err = _run(argv, capsys)
    assert code != 0 and "inside the image folder" in err
    assert tree_digest(images) == before


def test_predict_out_inside_an_input_folder_is_refused(tmp_path, capsys):
    _model_folder(tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(images / "x.png")
    before = tree_digest(images)
    code, err = _run(
        ["predict", "--model", str(tmp_path / "model"), str(images), "--out", str(images / "p.csv")], capsys
    )
    assert code == 1 and "inside the input folder" in err
    assert tree_digest(images) == before


def _table(tmp_path: Path, groups: list[str], labels: list[str] | None = None) -> Path:
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    lines = ["file,label,patient"]
    for i, group in enumerate(groups):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(images / f"{i}.png")
        label = labels[i] if labels else "ab"[i % 2]
        lines.append(f'images/{i}.png,"{label}",{group}')
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "labels.csv"


def _import(table: Path, out: Path, *extra: str) -> list[str]:
    return [
        "import",
        str(table),
        "--out",
        str(out),
        "--image-column",
        "file",
        "--label-column",
        "label",
        "--group-column",
        "patient",
        "--seed",
        "0",
        *extra,
    ]


@pytest.mark.parametrize("token", ["NaN", "nan", "N/A", "null", "-", "None", "#N/A", "?"])
def test_import_missing_group_tokens_are_not_group_ids(tmp_path, capsys, token):
    groups = [f"p{i}" for i in range(12)]
    groups[3] = groups[7] = token  # two unrelated rows would share the patient "NaN"
    table = _table(tmp_path, groups)
    code, err = _run(_import(table, tmp_path / "out"), capsys)
    assert code != 0 and f"labels.csv:5: group id is missing ({token!r})" in err and "--missing-group-alone" in err
    assert not (tmp_path / "out").exists()


def test_import_missing_group_alone_gives_each_row_its_own_group(tmp_path, capsys):
    import csv

    groups = [f"p{i}" for i in range(12)]
    groups[3] = groups[7] = "NaN"
    code, _ = _run(_import(_table(tmp_path, groups), tmp_path / "out", "--missing-group-alone"), capsys)
    assert code == 0
    with (tmp_path / "out" / "classification" / "groups.csv").open() as handle:
        ids = [row["group"] for row in csv.DictReader(handle)]
    assert len(ids) == 12 and "NaN" not in ids and len(set(ids)) == 12


@pytest.mark.parametrize("label", ["mel\nnv", "mel\tx", "mel\x07"])
def test_import_labels_with_control_characters_are_refused(tmp_path, capsys, label):
    labels = ["a", "b"] * 6
    labels[2] = label
    code, err = _run(_import(_table(tmp_path, [f"p{i}" for i in range(12)], labels), tmp_path / "out"), capsys)
    assert code != 0 and "cannot be a folder name" in err and "control characters" in err


def test_same_stem_images_in_a_class_folder_are_both_kept(tmp_path, data, capsys):
    """x.jpg and x.png in one class folder are two images: both validated, prepared into their own rows."""
    from dermdl import pipeline
    from dermdl.params import load_params

    folder = data / "sl_train" / "a"
    Image.fromarray(np.full((24, 24, 3), 10, dtype=np.uint8)).save(folder / "x.png")
    Image.fromarray(np.full((24, 24, 3), 240, dtype=np.uint8)).save(folder / "x.jpg")
    params = load_params(_params(tmp_path, data, "preprocess:\n  size: 16\n  workers: 1\n"))
    assert pipeline.validate(params).ok
    manifest = pipeline.preprocess(params)
    records = [r for r in manifest["datasets"]["sl_train"] if r["source"].startswith("sl_train/a/x.")]
    assert sorted(r["source"] for r in records) == ["sl_train/a/x.jpg", "sl_train/a/x.png"]
    assert len({r["row"] for r in records}) == 2
    from dermdl.arrays import PreparedImages

    loaded = pipeline.load_manifest(params)["datasets"]["sl_train"]
    pixels = {
        r["source"]: np.asarray(PreparedImages([r])[0]).mean()
        for r in loaded
        if r["source"] in ("sl_train/a/x.jpg", "sl_train/a/x.png")
    }
    assert pixels["sl_train/a/x.png"] < 50 < 200 < pixels["sl_train/a/x.jpg"]


@pytest.mark.parametrize(
    "names, message",
    [
        (("x.jpg", "x.png"), "share the name 'x'"),
        (("X.png", "x.png"), "differ only in upper/lower case"),
    ],
)
def test_segmentation_images_that_would_share_a_mask_are_errors(tmp_path, capsys, names, message):
    from dermdl.demo import generate_demo

    generate_demo(tmp_path / "demo", n_train=2, n_test=2, n_weak=1, size=32)
    root = tmp_path / "demo" / "segmentation"
    images, masks = root / "sl_train" / "images", root / "sl_train" / "masks"
    source = next(images.iterdir())
    for name in names:
        Image.open(source).save(images / name)
        Image.open(masks / source.name).save(masks / f"{Path(name).stem}.png")
    before = tree_digest(root)
    params = _params(tmp_path, root, "task: segmentation\n")
    code, err = _run(["validate", "--params", str(params)], capsys)
    assert code == 1 and message in err and all(name in err for name in names)
    assert tree_digest(root) == before


# --- model folders: model.json and model.pt are untrusted input ---------------------------------------


def _model_folder(tmp_path: Path) -> Path:
    from dermdl.models import ModelConfig, save_model
    from dermdl.tasks.classification.model import build_classifier

    model, (mean, std) = build_classifier("efficientnet_lite0", 2, pretrained=False)
    config = ModelConfig(
        task="classification",
        arch="efficientnet_lite0",
        classes=["a", "b"],
        input_size=32,
        mean=list(mean),
        std=list(std),
        preprocess_size=32,
        resize="squish",
    )
    save_model(model, config, tmp_path / "model")
    return tmp_path / "model"


MODEL_JSON_CASES = [
    ("not-json", lambda c: "{task: classification", "not a JSON model config"),
    ("a-list", lambda c: [c], "expected a JSON object of model settings"),
    ("huge-input", lambda c: {**c, "input_size": 30000}, "input_size: Input should be less than or equal to 4096"),
    ("huge-preprocess", lambda c: {**c, "preprocess_size": 10**9}, "preprocess_size: Input should be less than"),
    ("no-classes", lambda c: {**c, "classes": []}, "classes: List should have at least 1 item"),
    ("duplicate-classes", lambda c: {**c, "classes": ["a", "a"]}, "classes: class names must be unique"),
    (
        "too-many-classes",
        lambda c: {**c, "classes": [str(i) for i in range(10_001)]},
        "classes: List should have at most",
    ),
    ("unknown-task", lambda c: {**c, "task": "segmentaton"}, "task: unknown task 'segmentaton'"),
    ("short-mean", lambda c: {**c, "mean": [0.5, 0.5]}, "mean: List should have at least 3 items"),
    ("zero-std", lambda c: {**c, "std": [0, 1, 1]}, "std: every std must be positive"),
    ("string-size", lambda c: {**c, "input_size": "32"}, "input_size: Input should be a valid integer"),
    ("bool-size", lambda c: {**c, "input_size": True}, "input_size: Input should be a valid integer"),
    ("missing-key", lambda c: {k: v for k, v in c.items() if k != "arch"}, "arch: Field required"),
    ("extra-key", lambda c: {**c, "payload": "x"}, "payload: Extra inputs are not permitted"),
    ("bad-resize", lambda c: {**c, "resize": "stretch"}, "resize: unknown resize policy 'stretch'"),
]


@pytest.mark.parametrize("name, change, message", MODEL_JSON_CASES, ids=[c[0] for c in MODEL_JSON_CASES])
def test_bad_model_json_is_one_line_before_any_tensor(tmp_path, capsys, name, change, message):
    import json

    folder = _model_folder(tmp_path)
    config = json.loads((folder / "model.json").read_text())
    changed = change(config)
    (folder / "model.json").write_text(changed if isinstance(changed, str) else json.dumps(changed))
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(image)
    code, err = _run(["predict", "--model", str(folder), str(image)], capsys)
    assert code == 1 and f"{folder / 'model.json'}: " in err and message in err
    assert len(err.strip().splitlines()) == 1


def _other_weights(tmp_path: Path, kind: str) -> None:
    import torch

    from dermdl.tasks.classification.model import build_classifier

    path = tmp_path / "model" / "model.pt"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    elif kind == "random-bytes":
        path.write_bytes(np.random.default_rng(0).integers(0, 255, 5000, dtype=np.uint8).tobytes())
    elif kind == "pickled-module":
        torch.save(build_classifier("efficientnet_lite0", 2, pretrained=False)[0], path)
    elif kind == "not-a-dict":
        torch.save([torch.zeros(1)], path)
    elif kind == "wrong-keys":
        torch.save({"layer.weight": torch.zeros(2, 2)}, path)
    elif kind == "wrong-shapes":
        torch.save(build_classifier("efficientnet_lite0", 3, pretrained=False)[0].state_dict(), path)


WEIGHTS_CASES = [
    ("empty", "the file is empty"),
    ("truncated", "cannot be loaded (damaged or not a weights file"),
    ("random-bytes", "cannot be loaded"),
    ("pickled-module", "weights_only=True refused it"),
    ("not-a-dict", "holds a list, not a dict of tensors"),
    ("wrong-keys", "the weights do not fit the network model.json describes"),
    ("wrong-shapes", "wrong shape"),
]


@pytest.mark.parametrize("kind, message", WEIGHTS_CASES, ids=[c[0] for c in WEIGHTS_CASES])
def test_unloadable_weights_are_one_line(tmp_path, capsys, kind, message):
    folder = _model_folder(tmp_path)
    _other_weights(tmp_path, kind)
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(image)
    code, err = _run(["predict", "--model", str(folder), str(image)], capsys)
    assert code == 1 and f"{folder / 'model.pt'}: " in err and message in err and "copy the model folder" in err


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", b"\x80\x04K\x01."])
def test_a_corrupt_checkpoint_is_set_aside_and_training_starts_fresh(tmp_path, capsys, content):
    from dermdl.checkpoint import CHECKPOINT, Checkpoints

    checkpoints = Checkpoints(tmp_path, "key")
    checkpoints.folder.mkdir()
    (checkpoints.folder / CHECKPOINT).write_bytes(content)
    assert checkpoints.load() is None
    aside = list(checkpoints.folder.glob(f"{CHECKPOINT}.unusable-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == content  # kept, not deleted
    err = capsys.readouterr().err
    assert "warning" in err and "starting from the beginning" in err and "Traceback" not in err


# --- predict on a folder with bad files ----------------------------------------------------------------


def _mixed_folder(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(np.full((48, 48, 3), 90, dtype=np.uint8)).save(images / name)
    Image.fromarray(np.full((8, 8, 3), 90, dtype=np.uint8)).save(images / "tiny.png")
    (images / "empty.jpg").write_bytes(b"")
    (images / "truncated.png").write_bytes((images / "a.png").read_bytes()[:60])
    return images


def test_predict_keeps_going_past_unreadable_images(tmp_path, capsys):
    import csv

    folder, images = _model_folder(tmp_path), _mixed_folder(tmp_path)
    before = tree_digest(images)
    out = tmp_path / "predictions" / "p.csv"
    code, err = _run(["predict", "--model", str(folder), str(images), "--out", str(out)], capsys)
    assert code == 0
    with out.open() as handle:
        predicted = sorted(Path(row["path"]).name for row in csv.DictReader(handle))
    assert predicted == ["a.png", "b.png", "tiny.png"]
    with (out.parent / "p_unreadable.csv").open() as handle:
        skipped = {Path(row["path"]).name: row["reason"] for row in csv.DictReader(handle)}
    assert sorted(skipped) == ["empty.jpg", "truncated.png"] and all(skipped.values())
    assert f"skipped {images / 'empty.jpg'}" in err and f"skipped {images / 'truncated.png'}" in err
    assert f"warning: {images / 'tiny.png'} is 8x8 pixels" in err
    assert tree_digest(images) == before


def test_predict_strict_or_nothing_readable_fails(tmp_path, capsys):
    folder, images = _model_folder(tmp_path), _mixed_folder(tmp_path)
    code, err = _run(["predict", "--model", str(folder), str(images), "--strict"], capsys)
    assert code == 1 and "some images could not be read" in err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.jpg").write_bytes(b"not a jpeg")
    code, err = _run(["predict", "--model", str(folder), str(broken)], capsys)
    assert code == 1 and "none of the 1 images could be read" in err


# --- validate refuses what train would refuse because of the data ---------------------------------------

SPLIT_CASES = [
    ("one-image-class", 1, "", "classes ['b'] have fewer than 2 images"),
    ("too-many-folds", 3, "train:\n  cv_folds: 12\n", "train.cv_folds=12: sl_train has only"),
    ("valid-too-large", 3, "train:\n  valid_size: 0.95\n", "too few for train.valid_size=0.95"),
]


@pytest.mark.parametrize("name, n_b, extra, message", SPLIT_CASES, ids=[c[0] for c in SPLIT_CASES])
def test_validate_refuses_what_train_would(tmp_path, data, capsys, name, n_b, extra, message):
    for path in sorted((data / "sl_train" / "b").iterdir())[n_b:]:
        path.unlink()
    code, err = _run(["validate", "--params", str(_params(tmp_path, data, extra))], capsys)
    assert code == 1 and "train would stop: " in err and message in err


# --- text files that are not UTF-8 -----------------------------------------------------------------------


def test_import_csv_in_latin1_names_the_line_and_the_encoding_to_use(tmp_path, capsys):
    table = _table(tmp_path, [f"p{i}" for i in range(12)])
    lines = table.read_text().splitlines()
    lines[4] = lines[4].replace(",p3", ",Müller")
    table.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    code, err = _run(_import(table, tmp_path / "out"), capsys)
    assert code != 0 and "labels.csv:5: line 5 is not UTF-8 text" in err and "CSV UTF-8" in err


def test_import_csv_with_bom_is_read(tmp_path, capsys):
    table = _table(tmp_path, [f"p{i}" for i in range(12)])
    table.write_bytes(b"\xef\xbb\xbf" + table.read_bytes())
    assert _run(_import(table, tmp_path / "out"), capsys)[0] == 0


def test_groups_csv_in_latin1_names_the_line(tmp_path, data, capsys):
    groups = tmp_path / "groups.csv"
    groups.write_bytes("path,group\nsl_train/a/a0.png,Müller\n".encode("latin-1"))
    code, err = _run(["validate", "--params", str(_params(tmp_path, data, f"  groups: {groups}\n"))], capsys)
    assert code == 1 and f"{groups}:2: line 2 is not UTF-8 text" in err and "CSV UTF-8" in err


# --- --debug / DERMDL_DEBUG, and no dependency noise ----------------------------------------------------


def test_debug_shows_the_traceback(tmp_path, data, monkeypatch, capsys):
    from dermdl.errors import ParamsError

    path = _params(tmp_path, data, "train:\n  lr: -1\n")
    with pytest.raises(ParamsError, match="train.lr"):
        main(["--debug", "validate", "--params", str(path)])
    monkeypatch.setenv("DERMDL_DEBUG", "1")
    with pytest.raises(ParamsError, match="train.lr"):
        main(["validate", "--params", str(path)])
    monkeypatch.setenv("DERMDL_DEBUG", "0")
    assert _run(["validate", "--params", str(path)], capsys)[0] == 2


def test_a_normal_predict_prints_no_dependency_warnings(tmp_path):
    import subprocess
    import sys

    folder = _model_folder(tmp_path)
    image = tmp_path / "x.png"
    Image.fromarray(np.full((40, 40, 3), 100, dtype=np.uint8)).save(image)
    done = subprocess.run(
        [sys.executable, "-m", "dermdl.cli", "predict", "--model", str(folder), str(image)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and done.stdout.startswith("path,")
    assert "Warning" not in done.stderr, done.stderr


def test_output_names_never_differ_only_in_case():
    """Predicted masks / overlays of X.png and x.png (two folders, or a case-sensitive disk) stay two files
    on a case-insensitive one."""
    from dermdl.tasks.detection.predict import _overlay_name
    from dermdl.tasks.segmentation.predict import _unique_stem

    used: set[str] = set()
    assert [_unique_stem(s, used) for s in ("a/X.png", "b/x.png", "c/x.jpg")] == ["X", "x_2", "x_3"]
    used = set()
    assert [_overlay_name(s, used) for s in ("X.jpg", "x.png")] == ["X.png", "x_1.png"]


@pytest.mark.parametrize(
    "key, value",
    [
        ("train.bs", 10**7),
        ("train.epochs", 10**6),
        ("infer.bs", 10**7),
        ("analyze.n_boot", 10**7),
        ("train.early_stopping", 10**6),
    ],
)
def test_integers_are_bounded_to_what_their_consumer_accepts(tmp_path, data, capsys, key, value):
    code, err = _run(["validate", "--params", str(_params(tmp_path, data)), "--set", f"{key}={value}"], capsys)
    assert code == 2 and f"{key}: Input should be less than or equal to" in err


# --- check-leaks, convert, import: missing or malformed inputs --------------------------------------------

OTHER_COMMAND_CASES = [
    (
        "leaks-missing-root",
        [
            "check-leaks",
            "--root",
            "{tmp}/nowhere",
            "--train",
            "sl_train",
            "--test",
            "sl_test",
            "--json",
            "{tmp}/l.json",
        ],
        "has no image folder",
    ),
    (
        "leaks-missing-groups",
        [
            "check-leaks",
            "--root",
            "{data}",
            "--train",
            "sl_train",
            "--test",
            "sl_test",
            "--groups",
            "{tmp}/groups.csv",
            "--json",
            "{tmp}/l.json",
        ],
        "groups file does not exist",
    ),
    (
        "convert-missing-root",
        ["convert", "masks-to-coco", "--root", "{tmp}/nowhere", "--out", "{tmp}/coco"],
        "cannot convert",
    ),
    ("convert-out-exists", ["convert", "masks-to-coco", "--root", "{data}", "--out", "{tmp}"], "already exists"),
    (
        "import-missing-csv",
        ["import", "{tmp}/none.csv", "--out", "{tmp}/out", "--image-column", "f", "--label-column", "l"],
        "table file does not exist",
    ),
    (
        "import-empty-csv",
        ["import", "{tmp}/empty.csv", "--out", "{tmp}/out", "--image-column", "f", "--label-column", "l"],
        "the table is empty",
    ),
    (
        "import-missing-column",
        ["import", "{tmp}/table.csv", "--out", "{tmp}/out", "--image-column", "file", "--label-column", "diagnosis"],
        "diagnosis",
    ),
    (
        "import-missing-image",
        ["import", "{tmp}/gone.csv", "--out", "{tmp}/out", "--image-column", "file", "--label-column", "label"],
        "does not exist",
    ),
    ("predict-missing-model", ["predict", "--model", "{tmp}/nomodel", "{data}"], "missing; --model must point"),
    ("predict-missing-input", ["predict", "--model", "{tmp}/nomodel", "{tmp}/nothing.png"], "no such image"),
]


@pytest.mark.parametrize("name, argv, message", OTHER_COMMAND_CASES, ids=[c[0] for c in OTHER_COMMAND_CASES])
def test_other_commands_refuse_bad_inputs(tmp_path, data, capsys, name, argv, message):
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "table.csv").write_text("file,label\nsl_train/a/a0.png,a\n")
    (tmp_path / "gone.csv").write_text("file,label\nnot/there.png,a\n")
    before = tree_digest(data)
    argv = [a.replace("{tmp}", str(tmp_path)).replace("{data}", str(data)) for a in argv]
    code, err = _run(argv, capsys)
    assert code != 0 and message in err, err
    assert tree_digest(data) == before


def test_catalogue_document_lists_every_case():
    """docs/bad-inputs.md names every case of the tables here and of the layout checkers' tables."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent / "layout"))
    import test_coco
    import test_folders
    import test_masks

    document = (Path(__file__).resolve().parents[1] / "docs" / "bad-inputs.md").read_text(encoding="utf-8")
    names = [c[0] for c in PARAMS_FILE_CASES + SET_CASES + OTHER_COMMAND_CASES + SPLIT_CASES]
    names += [f"model.json {c[0]}" for c in MODEL_JSON_CASES] + [f"model.pt {c[0]}" for c in WEIGHTS_CASES]
    names += [c[0] for c in test_folders.BAD_CASES + test_masks.BAD_CASES + test_coco.BAD]
    missing = [name for name in names if f"`{name}" not in document]
    assert missing == [], "add them to docs/bad-inputs.md"


def test_a_checkpoint_of_another_run_is_kept_aside(tmp_path, capsys):
    import torch

    from dermdl.checkpoint import CHECKPOINT, Checkpoints

    checkpoints = Checkpoints(tmp_path, "this-run")
    checkpoints.folder.mkdir()
    torch.save({"key": "another-run", "epochs_done": 3}, checkpoints.folder / CHECKPOINT)
    assert checkpoints.load() is None
    aside = list(checkpoints.folder.glob(f"{CHECKPOINT}.other-run-*"))
    assert len(aside) == 1 and torch.load(aside[0], weights_only=True)["key"] == "another-run"
    assert "from other parameters or data" in capsys.readouterr().out
