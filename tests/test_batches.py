"""The array data path: preprocess stacks exact pixels, loaders cover every image once per epoch,
augmentation moves masks and boxes with their images, and an unchanged rerun of preprocess does no work."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dermdl import pipeline
from dermdl.arrays import IMAGES, TARGETS, ArrayStore, PreparedImages
from dermdl.augment import Augmentation, augment_batch, dihedral, dihedral_boxes
from dermdl.batches import ArrayLoader, Labels
from dermdl.demo import generate_demo
from dermdl.inference import view
from dermdl.params import params_from_dict
from dermdl.prepare import prepare_image
from dermdl.schedule import Phase, fit_plan, phases


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    base = tmp_path_factory.mktemp("batches")
    generate_demo(base / "demo", n_train=5, n_test=2, n_weak=0, size=40)
    return base


def _params(demo, task: str, **train):
    return params_from_dict(
        {
            "task": task,
            "out_dir": str(demo / f"out-{task}"),
            "data": {"root": str(demo / "demo" / task), "wl_train": [], "sl_tests": ["sl_test"]},
            "preprocess": {"size": 32, "workers": 2},
            "train": {"input_size": 32, "bs": 4, **train},
        }
    )


@pytest.fixture(scope="module")
def prepared(demo):
    out = {}
    for task in ("classification", "segmentation"):
        params = _params(demo, task)
        pipeline.preprocess(params)
        out[task] = (params, pipeline.load_manifest(params))
    return out


def _prepared_again(params, record) -> np.ndarray:
    return prepare_image(Path(params.data.root) / record["source"], 32, "squish")[2]


@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_arrays_hold_the_prepared_pixels(prepared, task):
    params, manifest = prepared[task]
    records = manifest["datasets"]["sl_train"]
    store = ArrayStore(records)
    got = store.take(list(range(len(records)))).numpy()
    want = np.stack([_prepared_again(params, r) for r in records])
    assert np.array_equal(got, want)
    assert np.array_equal(np.stack(PreparedImages(records)[1:3]), want[1:3])  # what predict reads


def test_mask_arrays_hold_class_ids(prepared):
    params, manifest = prepared["segmentation"]
    records = manifest["datasets"]["sl_train"]
    masks = ArrayStore(records, TARGETS).take(list(range(len(records)))).numpy()
    stored = np.stack([np.asarray(Image.open(params.out / "prepared" / r["target"])) for r in records])
    assert set(np.unique(masks)) <= {0, 1} and np.array_equal(masks, (stored == 255).astype(np.uint8))


def test_store_gathers_across_datasets(prepared):
    params, manifest = prepared["classification"]
    train, test = manifest["datasets"]["sl_train"], manifest["datasets"]["sl_test"]
    store = ArrayStore([test[0], train[1], test[1]])
    got = store.take([2, 0, 1]).numpy()
    want = [_prepared_again(params, r) for r in (test[1], test[0], train[1])]
    assert np.array_equal(got, np.stack(want))


def test_training_epoch_sees_every_image_once_and_drops_a_lone_last_one(prepared):
    _, manifest = prepared["classification"]
    records = manifest["datasets"]["sl_train"][:9]  # 9 = 2 batches of 4 + 1
    classes = manifest["classes"]
    loader = ArrayLoader(records, Labels(records, classes), bs=4, input_size=32, norm=None, shuffle=True)
    assert len(loader) == 2
    seen = torch.cat([x.flatten(1) for x, _ in loader])
    assert len(seen) == 8 and len({tuple(r.tolist()) for r in (seen * 255).round().int()}) == 8
    valid = ArrayLoader(records, Labels(records, classes), bs=4, input_size=32, norm=None)
    assert len(valid) == 3 and sum(len(y) for _, y in valid) == 9  # validation keeps every image
    labels = torch.cat([y for _, y in valid]).tolist()
    assert labels == [classes.index(r["target"]) for r in records]


def test_loader_normalises_and_resizes(prepared):
    _, manifest = prepared["classification"]
    records = manifest["datasets"]["sl_train"][:4]
    norm = ([0.5, 0.4, 0.3], [0.2, 0.25, 0.5])
    x, _ = next(iter(ArrayLoader(records, Labels(records, manifest["classes"]), 4, 32, norm)))
    raw = ArrayStore(records).take([0, 1, 2, 3]).permute(0, 3, 1, 2).float() / 255
    want = (raw - torch.tensor(norm[0]).view(1, 3, 1, 1)) / torch.tensor(norm[1]).view(1, 3, 1, 1)
    assert torch.allclose(x, want, atol=1e-6)
    small, _ = next(iter(ArrayLoader(records, Labels(records, manifest["classes"]), 4, 16, norm)))
    assert small.shape == (4, 3, 16, 16)


@pytest.mark.parametrize("index", range(8))
def test_dihedral_views_are_the_tta_views(index):
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(dihedral(x, torch.tensor([index, index])), view(x, index))


@pytest.mark.parametrize("aug", [Augmentation(), Augmentation(max_rotate=30.0, max_zoom=1.3, max_lighting=0.2)])
def test_masks_move_with_their_images(aug):
    torch.manual_seed(0)
    masks = torch.zeros(16, 32, 32, dtype=torch.long)
    for i in range(16):
        y, x = torch.randint(2, 20, (2,)).tolist()
        masks[i, y : y + 10, x : x + 7] = 1
    images = masks[:, None].float().repeat(1, 3, 1, 1)
    out, moved, _ = augment_batch(images, aug, masks=masks)
    agree = ((out[:, 0] > 0.5).long() == moved).float().mean()
    assert moved.dtype == torch.long and agree > (0.999 if not aug.affine else 0.97)
    assert not torch.equal(moved, masks)


@pytest.mark.parametrize("index", range(8))
def test_boxes_follow_each_view(index):
    image = torch.zeros(1, 1, 20, 20)
    image[0, 0, 3:7, 11:18] = 1  # rows 3-6, columns 11-17
    box = dihedral_boxes(torch.tensor([[11.0, 3.0, 18.0, 7.0]]), index, 20)[0]
    ys, xs = torch.nonzero(view(image, index)[0, 0], as_tuple=True)
    assert box.tolist() == [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


def test_preprocess_rerun_does_no_work_until_a_source_changes(demo):
    params = _params(demo, "classification").override({"out_dir": str(demo / "out-rerun")})
    pipeline.preprocess(params)
    manifest_file = params.out / "prepared" / "manifest.json"
    arrays = params.out / "prepared" / "sl_train" / "arrays" / IMAGES
    before = (manifest_file.stat().st_mtime_ns, arrays.stat().st_mtime_ns)
    pipeline.preprocess(params)
    assert (manifest_file.stat().st_mtime_ns, arrays.stat().st_mtime_ns) == before
    arrays.unlink()  # an incomplete prepared folder is redone, whatever its manifest says
    pipeline.preprocess(params)
    assert arrays.is_file()
    before = (manifest_file.stat().st_mtime_ns, arrays.stat().st_mtime_ns)
    source = sorted((demo / "demo" / "classification" / "sl_train").rglob("*.png"))[0]
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a changed file: new mtime
    try:
        pipeline.preprocess(params)
        assert manifest_file.stat().st_mtime_ns != before[0]
        assert json.loads(manifest_file.read_text())["fingerprint"]
    finally:
        os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_old_prepared_data_asks_for_a_new_preprocess(prepared, tmp_path):
    params, _ = prepared["classification"]
    manifest = json.loads((params.out / "prepared" / "manifest.json").read_text())
    for records in manifest["datasets"].values():
        for record in records:
            record.pop("row")
    other = params.override({"out_dir": str(tmp_path)})
    (tmp_path / "prepared").mkdir()
    (tmp_path / "prepared" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(pipeline.StageError, match="re-run the preprocess stage"):
        pipeline.load_manifest(other)


RECIPE_CASES = [  # recipe, frozen, plateau -> fastai method, LRs, options
    ("one_cycle", False, 0, "fit_one_cycle", 1e-3, {}),
    ("one_cycle", True, 0, "fit_one_cycle", slice(1e-3), {"pct_start": 0.99}),
    ("thesis", False, 0, "fit_one_cycle", slice(1e-3 / 200, 1e-3 / 2), {"pct_start": 0.3, "div": 5.0}),
    ("thesis", True, 0, "fit_one_cycle", slice(1e-3), {"pct_start": 0.99}),
    ("one_cycle", False, 2, "fit", 1e-3, {}),
    ("thesis", False, 2, "fit", slice(1e-3 / 200, 1e-3 / 2), {}),
]


@pytest.mark.parametrize(("recipe", "frozen", "plateau", "method", "lrs", "options"), RECIPE_CASES)
def test_recipes_set_the_learning_rates(recipe, frozen, plateau, method, lrs, options):
    train = params_from_dict({"train": {"recipe": recipe, "plateau": plateau, "lr": 1e-3}}).train
    plan = fit_plan(train, Phase("x", 1.0, 1, frozen), 1e-3)
    assert (plan.method, plan.lrs, plan.options) == (method, lrs, options)


def test_phases_follow_the_params():
    train = params_from_dict({"train": {"fepochs": 1, "epochs": 3, "progressive_resizing": [0.5, 1.0]}}).train
    assert [(p.name, p.epochs, p.frozen) for p in phases(train, "weak_")] == [
        ("weak_x0.5_frozen", 1, True),
        ("weak_x0.5_unfrozen", 3, False),
        ("weak_x1_frozen", 1, True),
        ("weak_x1_unfrozen", 3, False),
    ]
    assert [p.name for p in phases(params_from_dict({}).train)] == ["unfrozen"]  # default: no frozen phase
