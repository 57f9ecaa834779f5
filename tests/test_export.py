"""ONNX export (issue 14 item 5): the exported file predicts what the PyTorch model predicts, carries
everything predict needs, and runs without the training stack.

Models are real but untrained (packaged ImageNet encoder, random heads): parity is a property of the
export, not of the weights, and building them takes seconds instead of a training run.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from dermdl.cli import main
from dermdl.demo import generate_demo
from dermdl.evaluation.calibration import apply_temperature
from dermdl.export.runtime import input_array, load_onnx, onnx_file
from dermdl.images import open_mask
from dermdl.inference import to_input_tensor
from dermdl.models import ModelConfig, save_model
from dermdl.params import params_from_dict
from dermdl.prepare import open_source
from dermdl.tasks import get_task
from dermdl.tasks.segmentation.data import ValueMap

CLASSES = ["melanoma", "nevus", "seborrheic_keratosis"]
SEG_VALUES = ValueMap(params_from_dict({"task": "segmentation"}).segmentation.value_map(), 2).to_json()
CONFIGS = {
    "classification": ModelConfig(
        task="classification",
        arch="efficientnet_lite0",
        classes=CLASSES,
        input_size=64,
        mean=[0.5] * 3,
        std=[0.5] * 3,
        preprocess_size=80,
        resize="pad",
        extra={"temperature": 1.7},
    ),
    "segmentation": ModelConfig(
        task="segmentation",
        arch="efficientnet_lite0",
        classes=["skin", "lesion"],
        input_size=64,
        mean=[0.5] * 3,
        std=[0.5] * 3,
        preprocess_size=80,
        resize="squish",
        extra={"mask_values": SEG_VALUES},
    ),
    "detection": ModelConfig(
        task="detection",
        arch="efficientnet_lite0",
        classes=CLASSES,
        input_size=96,
        mean=[0.5] * 3,
        std=[0.5] * 3,
        preprocess_size=96,
        resize="crop",
        extra={"detection": {"model": "fasterrcnn_efficientnet_lite0_fpn", "score_threshold": 0.3}},
    ),
}
TEST_IMAGES = {
    "classification": "classification/sl_test",
    "segmentation": "segmentation/sl_test/images",
    "detection": "detection/images/sl_test",
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """Per task: the PyTorch model, its folder, the file `dermdl export` wrote beside it, the demo test images."""
    root = tmp_path_factory.mktemp("export")
    generate_demo(root / "demo", size=96, n_train=1, n_test=2, n_weak=0, n_negative=1)
    out = {}
    for task, config in CONFIGS.items():
        torch.manual_seed(0)
        model, _ = get_task(task).build_model(config, pretrained=True)
        if task == "detection":
            model.category_ids.copy_(torch.tensor([5, 7, 9]))  # COCO ids must survive the export
        model.eval()
        save_model(model, config, root / task)
        assert main(["export", "--model", str(root / task), "--format", "onnx"]) == 0
        images = sorted(p for p in (root / "demo" / TEST_IMAGES[task]).rglob("*.png"))
        assert not (root / task / "model.onnx").exists()  # beside train's DVC output folder, never inside it
        out[task] = {"model": model, "dir": root / task, "onnx": root / f"{task}.onnx", "images": images}
    return out


def _onnx(exported: dict, task: str):
    return load_onnx(exported[task]["onnx"])


@pytest.mark.parametrize("tta", ["none", "dihedral"])
@pytest.mark.parametrize("calibrate", [True, False])
def test_classification_probabilities_match_pytorch(exported, tta, calibrate):
    entry, task = exported["classification"], get_task("classification")
    config = replace(CONFIGS["classification"], extra={"temperature": 1.7, "calibrate": calibrate})
    expected = task.predict(entry["model"], config, entry["images"], bs=4, tta=tta)
    got = task.onnx_predict(_onnx(exported, "classification"), config, entry["images"], bs=4, tta=tta)
    assert got.shape == (6, 3) and np.abs(got - expected).max() < 1e-4
    assert np.allclose(got.sum(axis=1), 1, atol=1e-5)


def test_classification_graph_bakes_in_the_temperature(exported):
    """A program that reads the file alone gets the calibrated probabilities: softmax(logits / T)."""
    entry, config = exported["classification"], CONFIGS["classification"]
    onnx_model = _onnx(exported, "classification")
    batch = torch.stack([to_input_tensor(open_source(p), config) for p in entry["images"]])
    with torch.no_grad():
        raw = torch.softmax(entry["model"](batch), dim=1).numpy()
    baked = onnx_model.run("probabilities", batch.numpy())
    assert np.abs(baked - apply_temperature(raw, 1.7)).max() < 1e-4
    assert onnx_model.metadata["temperature"] == "1.7"


@pytest.mark.parametrize("tta", ["none", "flips"])
def test_segmentation_probabilities_and_masks_match_pytorch(exported, tta, tmp_path):
    entry, config, task = exported["segmentation"], CONFIGS["segmentation"], get_task("segmentation")
    onnx_model = _onnx(exported, "segmentation")
    # the graph itself, in float32 (predict stores probabilities as float16: 5e-4 steps near 1)
    batch = np.stack([input_array(open_source(p), config) for p in entry["images"]])
    with torch.no_grad():
        reference = torch.softmax(entry["model"](torch.from_numpy(batch)), dim=1).numpy()
    assert np.abs(onnx_model.run("probabilities", batch) - reference).max() < 1e-4
    expected = task.predict(entry["model"], config, entry["images"], bs=4, tta=tta)
    got = task.onnx_predict(onnx_model, config, entry["images"], bs=4, tta=tta)
    for mine, theirs in zip(got, expected):
        assert (mine.width, mine.height) == (theirs.width, theirs.height) == (96, 96)
        # one float16 step at most: the float32 values agree to 1e-4 before the cast
        assert np.abs(mine.probs.astype(np.float32) - theirs.probs.astype(np.float32)).max() <= 2**-11
    records = [{"source": str(p)} for p in entry["images"]]
    task.write_predictions(records, expected, config, tmp_path, "torch")
    task.write_predictions(records, got, config, tmp_path, "onnx")
    pixels = differ = 0
    for path in sorted((tmp_path / "torch" / "masks").glob("*.png")):
        a, b = open_mask(path), open_mask(tmp_path / "onnx" / "masks" / path.name)
        pixels, differ = pixels + a.size, differ + int((a != b).sum())
    assert pixels == 6 * 96 * 96 and differ / pixels <= 1e-4  # only where both classes tie to a float16 step


def test_detection_boxes_and_scores_match_pytorch(exported):
    """Same detections above the score threshold; boxes to 1e-4 of the image side (float32 box decoding
    with exp() gives ~1e-5 relative differences in pixels), scores to 1e-4."""
    entry, config, task = exported["detection"], CONFIGS["detection"], get_task("detection")
    expected = task.predict(entry["model"], config, entry["images"], bs=4)
    got = task.onnx_predict(_onnx(exported, "detection"), config, entry["images"], bs=4)
    assert got["category_ids"] == expected["category_ids"] == [5, 7, 9]
    compared = 0
    for mine, theirs in zip(got["images"], expected["images"]):
        keep_m, keep_t = mine["scores"] >= 0.3, theirs["scores"] >= 0.3
        assert keep_m.sum() == keep_t.sum()
        side = max(theirs["width"], theirs["height"])
        assert np.abs(mine["boxes"][keep_m] - theirs["boxes"][keep_t]).max(initial=0) <= 1e-4 * side
        assert np.abs(mine["scores"][keep_m] - theirs["scores"][keep_t]).max(initial=0) <= 1e-4
        assert np.array_equal(mine["labels"][keep_m], theirs["labels"][keep_t])
        compared += int(keep_t.sum())
    assert compared > 0  # the check compared boxes, not empty lists


@pytest.mark.parametrize("task", list(CONFIGS))
def test_the_file_carries_what_predict_needs(exported, task):
    config = CONFIGS[task]
    meta = {p.key: p.value for p in onnx.load(str(exported[task]["onnx"])).metadata_props}
    assert json.loads(meta["mean"]) == config.mean and json.loads(meta["std"]) == config.std
    assert json.loads(meta["classes"]) == config.classes and meta["task"] == task
    assert (meta["input_size"], meta["preprocess_size"]) == (str(config.input_size), str(config.preprocess_size))
    assert meta["resize"] == config.resize and meta["color_constancy"] == "none" and meta["dermdl_version"]
    assert load_onnx(exported[task]["onnx"]).config == config  # the whole model.json round-trips


_TORCH_FREE = """
import sys
from dermdl.cli import main
for task, onnx_path, images, out in {jobs!r}:
    assert main(["predict", "--model", onnx_path, images, "--out", out]) == 0, task
loaded = sorted(m for m in ("torch", "torchvision", "fastai", "timm") if m in sys.modules)
print("LOADED", loaded)
"""


def test_predict_with_the_onnx_file_writes_what_pytorch_writes_without_torch(exported, tmp_path):
    jobs = []
    for task, entry in exported.items():
        deploy = tmp_path / f"{task}_deploy"  # a folder holding only the exported file
        deploy.mkdir()
        (deploy / "model.onnx").write_bytes(entry["onnx"].read_bytes())
        folder = str(entry["images"][0].parent if task != "classification" else entry["images"][0].parent.parent)
        jobs.append((task, str(deploy), folder, str(tmp_path / f"{task}_onnx.csv")))
        assert (
            main(["predict", "--model", str(entry["dir"]), folder, "--out", str(tmp_path / f"{task}_torch.csv")]) == 0
        )
    run = subprocess.run(
        [sys.executable, "-c", _TORCH_FREE.format(jobs=jobs)], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    assert "LOADED []" in run.stdout  # no training stack on the ONNX path
    rows = {kind: list(csv.DictReader((tmp_path / f"classification_{kind}.csv").open())) for kind in ("torch", "onnx")}
    assert [r["path"] for r in rows["onnx"]] == [r["path"] for r in rows["torch"]]
    for mine, theirs in zip(rows["onnx"], rows["torch"]):
        assert mine["predicted_label"] == theirs["predicted_label"] and mine["temperature"] == theirs["temperature"]
        assert all(abs(float(mine[f"prob_{c}"]) - float(theirs[f"prob_{c}"])) <= 2e-6 for c in CLASSES)
    seg = {kind: list(csv.DictReader((tmp_path / f"segmentation_{kind}.csv").open())) for kind in ("torch", "onnx")}
    assert [r["image"] for r in seg["onnx"]] == [r["image"] for r in seg["torch"]]
    for mine, theirs in zip(seg["onnx"], seg["torch"]):
        assert abs(float(mine["area_lesion"]) - float(theirs["area_lesion"])) <= 1e-4
    results = {kind: json.loads((tmp_path / f"detection_{kind}.json").read_text()) for kind in ("torch", "onnx")}
    strong = {kind: [r for r in res if r["score"] >= 0.3] for kind, res in results.items()}
    assert len(strong["onnx"]) == len(strong["torch"]) > 0
    for mine, theirs in zip(strong["onnx"], strong["torch"]):
        assert (mine["image_id"], mine["category_id"]) == (theirs["image_id"], theirs["category_id"])
        assert mine["bbox"] == pytest.approx(theirs["bbox"], abs=0.011) and abs(mine["score"] - theirs["score"]) < 1e-4
    assert len(list((tmp_path / "overlays" / "detection_onnx").glob("*.png"))) == len(exported["detection"]["images"])


@pytest.mark.parametrize(
    "threads, env, expected",
    [(2, {}, 2), (0, {"OMP_NUM_THREADS": "1"}, 1), (0, {}, 0)],  # 0: ONNX Runtime's default (one per core)
)
def test_onnx_runtime_gets_the_thread_rule(exported, monkeypatch, threads, env, expected):
    """ONNX Runtime ignores OMP_NUM_THREADS: `predict --threads` / torchrun's 1 must reach its session options."""
    from dermdl.threads import onnx_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    onnx = load_onnx(exported["classification"]["onnx"], onnx_threads(threads))
    assert onnx.session.get_session_options().intra_op_num_threads == expected


def test_a_model_folder_with_weights_stays_on_pytorch_and_onnx_files_are_recognised(exported, tmp_path):
    folder, exported_file = exported["classification"]["dir"], exported["classification"]["onnx"]
    (folder / "model.onnx").write_bytes(exported_file.read_bytes())
    assert onnx_file(folder) is None  # model.pt beside model.onnx: the trained model folder
    assert onnx_file(exported_file) == exported_file
    with pytest.raises(FileNotFoundError, match="missing.onnx: no such ONNX file"):
        onnx_file(tmp_path / "missing.onnx")


def test_foreign_or_broken_onnx_files_are_one_clear_line(tmp_path, capsys):
    Image.new("RGB", (64, 64), (120, 80, 60)).save(tmp_path / "a.png")
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    torch.onnx.export(plain, (torch.zeros(1, 3, 8, 8),), str(tmp_path / "foreign.onnx"), dynamo=False)
    (tmp_path / "broken.onnx").write_bytes(b"not a protobuf")
    for name, message in [
        ("foreign.onnx", "without dermdl's metadata"),
        ("broken.onnx", "not a readable ONNX model"),
    ]:
        assert main(["predict", "--model", str(tmp_path / name), str(tmp_path / "a.png")]) == 1
        err = capsys.readouterr().err
        assert message in err and name in err and len(err.strip().splitlines()) == 1


def test_export_refuses_what_it_cannot_write(exported, tmp_path, capsys):
    folder = str(exported["classification"]["dir"])
    Image.new("RGB", (64, 64), (120, 80, 60)).save(tmp_path / "a.png")
    assert main(["export", "--model", folder, "--out", str(tmp_path / "model.bin")]) == 1
    assert "name the file *.onnx" in capsys.readouterr().err
    onnx_path = str(exported["classification"]["onnx"])
    assert main(["predict", "--model", onnx_path, str(tmp_path), "--explain", "--out", "x.csv"]) == 1
    assert "--explain needs the PyTorch model folder" in capsys.readouterr().err
