"""Detection building blocks: box geometry under every resize policy, augmentation, the detectors,
offline weight handling, weights-only model files and predictions in original image coordinates."""

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torchvision.models._api import WeightsEnum

from dermdl.augment import Augmentation, augment_batch
from dermdl.models import ModelConfig, load_model, save_model
from dermdl.params import ParamsError, params_from_dict
from dermdl.prepare import geometry
from dermdl.tasks.detection import TASK
from dermdl.tasks.detection import data as detection_data
from dermdl.tasks.detection.model import build_detector, splitter
from dermdl.tasks.detection.names import DETECTORS
from dermdl.tasks.detection.predict import predict, write_predictions

POLICIES = ["squish", "pad", "crop"]
SRC_W, SRC_H = 200, 120


def drawn_object(tmp_path, centre_x: float, name: str = "a.png"):
    """A skin-coloured image with one blue ellipse; returns (path, exact pixel bbox [x, y, w, h], polygon)."""
    image = Image.new("RGB", (SRC_W, SRC_H), (230, 200, 180))
    ellipse = [centre_x - 30, 30, centre_x + 30, 95]
    ImageDraw.Draw(image).ellipse(ellipse, fill=(30, 60, 220))
    array = is_object(np.asarray(image))
    ys, xs = np.nonzero(array)
    bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
    t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    polygon = np.stack([centre_x + 30.5 * np.cos(t), 62.5 + 33 * np.sin(t)], 1).ravel().tolist()
    path = tmp_path / name
    image.save(path)
    return path, bbox, polygon


def is_object(rgb: np.ndarray) -> np.ndarray:
    """Object pixels: clearly blue (neither skin, nor the black padding, nor a blend of the two)."""
    rgb = rgb.astype(int)
    return rgb[..., 2] - rgb[..., 0] > 95


def target_json(bbox, segmentation):
    return json.dumps(
        {
            "image": {"id": 1, "file_name": "a.png", "width": SRC_W, "height": SRC_H},
            "annotations": [
                {
                    "id": 1,
                    "category_id": 1,
                    "category": "lesion",
                    "bbox": bbox,
                    "area": bbox[2] * bbox[3],
                    "iscrowd": 0,
                    "segmentation": segmentation,
                }
            ],
            "category_ids": [1],
        }
    )


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("centre_x", [100.0, 45.0])  # centred; near the left edge (cut by the crop policy)
def test_prepared_box_still_encloses_the_drawn_object(tmp_path, policy, centre_x):
    src, bbox, polygon = drawn_object(tmp_path, centre_x)
    record = detection_data.prepare_item(
        src, "images/sl/a.png", target_json(bbox, [polygon]), tmp_path / "out", 64, policy
    )
    prepared = record["pixels"]
    assert prepared.shape == (64, 64, 3)
    dark = is_object(prepared)  # the object's pixels after resampling
    ys, xs = np.nonzero(dark)
    x0, y0, x1, y1 = record["target"][0]["bbox"]
    tol = 1.0  # bicubic resampling may smear the object by up to a pixel
    assert xs.min() >= x0 - tol and xs.max() + 1 <= x1 + tol, (policy, xs.min(), xs.max(), x0, x1)
    assert ys.min() >= y0 - tol and ys.max() + 1 <= y1 + tol, (policy, ys.min(), ys.max(), y0, y1)
    # and the box is tight: it does not grow beyond the object either
    assert abs(xs.min() - x0) <= 1.5 and abs(xs.max() + 1 - x1) <= 1.5
    assert abs(ys.min() - y0) <= 1.5 and abs(ys.max() + 1 - y1) <= 1.5
    # the polygon went through the same geometry: it covers the same pixels
    from pycocotools import mask as mask_utils

    poly = record["target"][0]["segmentation"]
    rasterised = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(poly, 64, 64))).astype(bool)
    iou = (rasterised & dark).sum() / (rasterised | dark).sum()
    assert iou > 0.85, iou
    # original annotations and geometry are kept for mapping predictions back
    assert record["annotations"][0]["bbox"] == bbox and record["width"] == SRC_W


@pytest.mark.parametrize("policy", POLICIES)
def test_rle_masks_follow_the_image(tmp_path, policy):
    from pycocotools import mask as mask_utils

    src, bbox, _ = drawn_object(tmp_path, 100.0)
    dark = is_object(np.asarray(Image.open(src)))
    rle = mask_utils.encode(np.asfortranarray(dark.astype(np.uint8)))
    rle = {"size": rle["size"], "counts": rle["counts"].decode()}
    record = detection_data.prepare_item(src, "images/sl/a.png", target_json(bbox, rle), tmp_path / "out", 64, policy)
    seg = record["target"][0]["segmentation"]
    prepared = is_object(record["pixels"])
    mask = mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode()}).astype(bool)
    assert (mask & prepared).sum() / (mask | prepared).sum() > 0.9


@pytest.mark.parametrize("policy", ["squish", "pad"])
def test_boxes_map_back_to_original_pixels(policy):
    geo = geometry(SRC_W, SRC_H, 64, policy)
    box = [12.0, 20.0, 50.0, 70.0]
    prepared = detection_data.box_to_prepared(box, geo)
    back = detection_data.box_to_original(np.array([prepared]), geo)[0]
    assert np.allclose(back, [12, 20, 62, 90], atol=0.02)


def test_box_cut_away_by_crop_is_dropped(tmp_path):
    src, _, _ = drawn_object(tmp_path, 100.0)
    record = detection_data.prepare_item(
        src, "images/sl/a.jpg", target_json([1, 40, 10, 10], []), tmp_path / "o", 64, "crop"
    )
    assert record["target"] == [] and record["dropped"] == 1
    assert record["path"] == "images/sl/a.jpg"  # the source's own name: a.jpg and a.png cannot collide


def test_augmentation_moves_boxes_with_the_pixels():
    image = torch.zeros(3, 32, 32)
    image[:, 4:10, 20:30] = 1.0  # rows 4-9, columns 20-29
    boxes = torch.tensor([[20.0, 4.0, 30.0, 10.0]])
    seen = set()
    for seed in range(40):
        torch.manual_seed(seed)
        batch, _, moved = augment_batch(
            image[None].clone(), Augmentation(max_lighting=0.15, boxes=True), boxes=[boxes.clone()]
        )
        out, moved = batch[0], moved[0]
        ys, xs = np.nonzero(out[0].numpy() > out[0].numpy().mean() + 0.1)
        x0, y0, x1, y1 = moved[0].tolist()
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)
        seen.add((x0, y0, x1, y1))
    assert len(seen) == 8  # all eight dihedral placements occur


@pytest.mark.parametrize("name", list(DETECTORS))
def test_every_detector_builds_trains_and_predicts(name):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pretrained=False must not try any download
        model, norm = build_detector(name, 2, False, 64)
    images = torch.rand(2, 3, 64, 64)
    targets = [
        {"boxes": torch.tensor([[8.0, 8.0, 40.0, 50.0]]), "labels": torch.tensor([2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    model.train()
    losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        both = model(images, targets)
        detections = model(images)
    assert set(both) == {"losses", "detections"} and set(both["losses"]) == set(losses)
    assert len(detections) == 2 and detections[0]["boxes"].shape[1] == 4
    body, rest = splitter(model)
    assert {id(p) for p in body} == {id(p) for p in model.body.parameters()}
    assert len(body) + len(rest) == len(list(model.parameters()))


def _offline(*args, **kwargs):
    raise OSError("no network")


def test_torchvision_backbone_without_network_falls_back_with_a_warning(monkeypatch):
    monkeypatch.setattr(WeightsEnum, "get_state_dict", _offline)
    with pytest.warns(RuntimeWarning, match="RANDOM initialisation"):
        model, _ = build_detector("fasterrcnn_mobilenet_v3_large_fpn", 2, True, 64)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.body.modules())


def test_torchvision_backbone_weights_from_cache_or_download(monkeypatch):
    from torchvision.models import mobilenet_v3_large

    torch.manual_seed(3)
    reference = mobilenet_v3_large().state_dict()
    monkeypatch.setattr(WeightsEnum, "get_state_dict", lambda self, *a, **k: reference)
    model, norm = build_detector("fasterrcnn_mobilenet_v3_large_fpn", 2, True, 64)
    assert torch.equal(model.body["0"][0].weight, reference["features.0.0.weight"])
    assert norm[0] == [0.485, 0.456, 0.406]


def test_local_weights_file_for_a_torchvision_backbone(tmp_path):
    from torchvision.models import resnet50

    torch.manual_seed(4)
    state = resnet50().state_dict()
    path = tmp_path / "resnet50.pth"
    torch.save({f"module.{k}": v for k, v in state.items()}, path)
    model, _ = build_detector("retinanet_resnet50_fpn", 2, str(path), 64)
    assert torch.equal(model.body.conv1.weight, state["conv1.weight"])
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv1.weight": torch.zeros(3)}, wrong)
    with pytest.raises(ValueError, match="do not fit"):
        build_detector("fasterrcnn_resnet50_fpn", 2, str(wrong), 64)


def test_lite0_detector_uses_the_packaged_imagenet_weights():
    from dermdl.models import create_backbone

    model, norm = build_detector("fasterrcnn_efficientnet_lite0_fpn", 3, True, 64)
    reference, _ = create_backbone("efficientnet_lite0", True)
    assert torch.equal(model.body.conv_stem.weight, reference.conv_stem.weight)
    assert norm == ([0.5] * 3, [0.5] * 3)


def _config(name="fasterrcnn_efficientnet_lite0_fpn", size=64, policy="squish", threshold=0.5):
    return ModelConfig(
        task="detection",
        arch="efficientnet_lite0",
        classes=["melanoma", "nevus"],
        input_size=size,
        mean=[0.5] * 3,
        std=[0.5] * 3,
        preprocess_size=size,
        resize=policy,
        extra={"detection": {"model": name, "score_threshold": threshold, "clip_boxes": False}, "pretrained": True},
    )


@pytest.mark.parametrize("name", ["fasterrcnn_efficientnet_lite0_fpn", "fasterrcnn_mobilenet_v3_large_fpn"])
def test_weights_only_model_file_round_trip(tmp_path, monkeypatch, name):
    from torchvision.models import mobilenet_v3_large

    monkeypatch.setattr(WeightsEnum, "get_state_dict", lambda self, *a, **k: mobilenet_v3_large().state_dict())
    model, _ = TASK.build_model(_config(name), True)  # torchvision: FrozenBatchNorm2d (ImageNet weights)
    model.category_ids.copy_(torch.tensor([4, 9]))
    model.eval()
    save_model(model, _config(name), tmp_path / "model")
    loaded, config = load_model(tmp_path / "model")  # rebuilt without weights: BatchNorm2d, same function
    assert loaded.category_ids.tolist() == [4, 9] and config.extra["detection"]["model"] == name
    images = [torch.rand(3, 64, 64)]
    with torch.no_grad():
        a, b = model(images)[0], loaded(images)[0]
    assert torch.allclose(a["boxes"], b["boxes"], atol=1e-4) and torch.allclose(a["scores"], b["scores"], atol=1e-5)


def test_unknown_detector_is_a_params_error():
    with pytest.raises(ParamsError, match="fasterrcnn_resnet50_fpn"):
        params_from_dict({"detection": {"model": "fasterrcnn_resnet5_fpn"}})


class FixedDetector(torch.nn.Module):
    """Always finds one box at (16, 16)-(48, 48) of its 64 x 64 input, class 2, and a weak one."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.register_buffer("category_ids", torch.tensor([11, 12]))

    def forward(self, images):
        assert all(tuple(i.shape) == (3, 64, 64) for i in images)
        return [
            {
                "boxes": torch.tensor([[16.0, 16.0, 48.0, 48.0], [0.0, 0.0, 8.0, 8.0]]),
                "scores": torch.tensor([0.9, 0.2]),
                "labels": torch.tensor([2, 1]),
            }
            for _ in images
        ]


@pytest.mark.parametrize("policy, expected", [("squish", [50, 25, 100, 50]), ("pad", [50, 0, 100, 100])])
def test_predictions_are_in_original_image_coordinates(tmp_path, policy, expected):
    image = tmp_path / "photo.jpg"
    Image.new("RGB", (200, 100), (200, 150, 120)).save(image)
    config = _config(policy=policy)
    predictions = predict(FixedDetector(), config, [image], bs=4)
    path = write_predictions([{"source": str(image)}], predictions, config, tmp_path / "out", "new")
    results = json.loads(path.read_text())
    top = max(results, key=lambda r: r["score"])
    assert top["bbox"] == pytest.approx(expected, abs=0.01)  # pad: rows 16-48 of 64 are the whole photo
    assert top["category_id"] == 12 and top["file_name"] == "photo.jpg" and top["image_id"] == 1
    # the weak box stays in the results (AP needs the full ranking), unless it lies in the padding ...
    assert len(results) == (2 if policy == "squish" else 1)
    overlays = list((tmp_path / "out" / "overlays" / "new").glob("*.png"))
    assert [p.name for p in overlays] == ["photo.png"]  # ... but only boxes >= score_threshold are drawn
    index = json.loads((tmp_path / "out" / "new_images.json").read_text())
    assert index["images"][0]["width"] == 200 and index["categories"][1] == {"id": 12, "name": "nevus"}
