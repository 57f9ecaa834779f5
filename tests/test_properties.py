"""Property-based tests (hypothesis): whatever a params file, a COCO annotation file or a mask file holds,
the reader answers with a result or with its own clear error — never another exception."""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from dermdl.errors import ParamsError
from dermdl.images import ImageError, open_mask
from dermdl.params import Params, load_params, params_from_dict
from dermdl.tasks.detection.layout import scan_coco

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**12), 10**12), st.floats(allow_nan=True), st.text(max_size=12)
)
json_like = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
KEYS = {
    "task": None,
    "out_dir": None,
    "data": ["root", "sl_train", "sl_tests", "wl_train", "groups"],
    "train": ["lr", "epochs", "bs", "seed", "model", "loss", "tta", "mixup", "recipe", "valid_size"],
    "classification": ["model", "loss", "class_weights"],
    "segmentation": ["codes", "mask_values", "model"],
    "detection": ["model", "score_threshold"],
    "infer": ["tta", "bs"],
    "analyze": ["n_boot", "ci"],
}


@st.composite
def params_dicts(draw):
    raw = {}
    for section in draw(st.lists(st.sampled_from(sorted(KEYS)), max_size=4, unique=True)):
        keys = KEYS[section]
        if keys is None:
            raw[section] = draw(scalars)
        else:
            raw[section] = {k: draw(json_like) for k in draw(st.lists(st.sampled_from(keys), max_size=3, unique=True))}
    return raw


@FAST
@given(params_dicts())
def test_params_loader_accepts_or_explains(raw):
    try:
        assert isinstance(params_from_dict(raw), Params)
    except ParamsError as exc:
        assert str(exc).startswith("params:")


@FAST
@given(st.binary(max_size=300))
def test_params_file_of_any_bytes_accepts_or_explains(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "params.yaml"
        path.write_bytes(data)
        try:
            load_params(path)
        except ParamsError as exc:
            assert str(exc).startswith(str(path))


@st.composite
def coco_documents(draw):
    images = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "id": st.integers(0, 4) | scalars,
                    "file_name": st.sampled_from(["a.png", "b.png", "missing.png", "", "../a.png"]) | scalars,
                    "width": st.integers(-2, 40) | scalars,
                    "height": st.integers(-2, 40) | scalars,
                }
            ),
            max_size=3,
        )
    )
    annotations = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "id": st.integers(0, 4) | scalars,
                    "image_id": st.integers(0, 4) | scalars,
                    "category_id": st.integers(0, 3) | scalars,
                    "bbox": st.lists(st.floats(-5, 50) | scalars, max_size=5) | scalars,
                    "iscrowd": st.integers(0, 1) | scalars,
                }
            ),
            max_size=4,
        )
    )
    categories = draw(
        st.lists(
            st.fixed_dictionaries(
                {"id": st.integers(0, 3) | scalars, "name": st.sampled_from(["mel", "nv", ""]) | scalars}
            ),
            max_size=3,
        )
    )
    document = {"images": images, "annotations": annotations, "categories": categories}
    return draw(st.sampled_from([document, {**document, "images": draw(json_like)}, draw(json_like)]))


@FAST
@given(coco_documents())
def test_coco_checker_reports_never_raises(document):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "images" / "sl_train").mkdir(parents=True)
        (root / "annotations").mkdir()
        for name in ("a.png", "b.png"):
            Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(root / "images" / "sl_train" / name)
        (root / "annotations" / "sl_train.json").write_text(json.dumps(document, allow_nan=True))
        items, _categories, report = scan_coco(root, ["sl_train"])
        assert report.ok or report.errors
        assert all(item.path.is_file() for item in items)


@FAST
@given(
    st.one_of(
        st.binary(max_size=200),
        st.tuples(
            st.sampled_from(["L", "P", "RGB", "RGBA", "I;16", "1", "LA", "I", "F"]),
            st.integers(1, 12),
            st.integers(1, 12),
            st.integers(0, 2**16 - 1),
        ),
    )
)
def test_mask_reader_returns_stored_values_or_explains(spec):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mask.png"
        if isinstance(spec, bytes):
            path.write_bytes(spec)
        else:
            mode, width, height, seed = spec
            values = np.random.default_rng(seed).integers(0, 3, (height, width))
            image = Image.fromarray(values.astype(np.uint8)).convert(mode)
            buffer = io.BytesIO()
            try:
                image.save(buffer, format="PNG")
            except (OSError, ValueError):  # a mode PNG cannot hold: not a mask anyone can have
                return
            path.write_bytes(buffer.getvalue())
        try:
            mask = open_mask(path)
        except ImageError as exc:
            assert exc.path == str(path) and exc.problem and exc.fix
        else:
            assert mask.ndim == 2 and mask.shape[0] >= 1
