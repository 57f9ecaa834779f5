"""Running an exported model with ONNX Runtime: no torch, fastai or timm on this path.

The input pipeline is the numpy twin of :func:`dermdl.inference.to_input_tensor` and
:func:`dermdl.inference.softmax_tta` (same PIL resizes, same float32 arithmetic, same views), so an
exported model predicts what the PyTorch model predicts (tests/test_export.py checks it to 1e-4).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dermdl.export import ONNX_FILE
from dermdl.export.metadata import config_from_metadata
from dermdl.model_config import ModelConfig
from dermdl.prepare import resize

TTA_VIEWS = {"none": 1, "flips": 4, "dihedral": 8}  # as dermdl.inference (which imports torch)
PYTORCH_WEIGHTS = "model.pt"  # dermdl.models.MODEL_WEIGHTS, named here so this path imports no torch


def onnx_file(model: str | Path) -> Path | None:
    """The ONNX file ``--model`` names: a ``.onnx`` file, or a folder holding model.onnx but no PyTorch
    weights (a folder with both is the trained model folder: predict keeps using PyTorch there)."""
    path = Path(model)
    if path.suffix.lower() == ".onnx":
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such ONNX file; export one with `dermdl export --model DIR`")
        return path
    if path.is_dir() and (path / ONNX_FILE).is_file() and not (path / PYTORCH_WEIGHTS).is_file():
        return path / ONNX_FILE
    return None


@dataclass(frozen=True)
class OnnxModel:
    """An ONNX Runtime session with the model settings read from the file itself."""

    session: Any  # onnxruntime.InferenceSession (untyped package)
    config: ModelConfig
    metadata: dict[str, str]

    def run(self, output: str, image: np.ndarray) -> np.ndarray:
        return self.session.run([output], {"image": image})[0]


def load_onnx(path: Path, threads: int = 0) -> OnnxModel:
    """Open an exported file on the CPU; ``threads`` = 0 lets ONNX Runtime choose (one per core)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ONNX Runtime raises its own exception types for unreadable files
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise ValueError(f"{path}: not a readable ONNX model ({first}); export it again") from None
    metadata = dict(session.get_modelmeta().custom_metadata_map)
    return OnnxModel(session, config_from_metadata(metadata, path), metadata)


def input_array(image: Image.Image, config: ModelConfig) -> np.ndarray:
    """(3, s, s) float32: preprocess resize, input-size resize, normalisation (as to_input_tensor)."""
    image = resize(image, config.preprocess_size, config.resize)
    image = image.resize((config.input_size, config.input_size), Image.Resampling.BILINEAR)
    array = (np.asarray(image, dtype=np.float32) / np.float32(255.0)).transpose(2, 0, 1)
    mean = np.asarray(config.mean, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(config.std, dtype=np.float32).reshape(3, 1, 1)
    return (array - mean) / std


def view(x: np.ndarray, index: int) -> np.ndarray:
    """View ``index`` (0-7) of NCHW images: bit 0 flips left-right, bit 1 up-down, bit 2 transposes."""
    if index & 1:
        x = x[..., ::-1]
    if index & 2:
        x = x[..., ::-1, :]
    if index & 4:
        x = x.swapaxes(-1, -2)
    return x


def unview(x: np.ndarray, index: int) -> np.ndarray:
    if index & 4:
        x = x.swapaxes(-1, -2)
    if index & 2:
        x = x[..., ::-1, :]
    if index & 1:
        x = x[..., ::-1]
    return x


def softmax(x: np.ndarray, axis: int = 1) -> np.ndarray:
    shifted = np.exp(x - x.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def average_views(run: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, tta: str, spatial: bool) -> np.ndarray:
    """Probabilities averaged over the TTA views (``run`` maps an NCHW batch to probabilities);
    spatial outputs are un-viewed before averaging, as in :func:`dermdl.inference.softmax_tta`."""
    if tta not in TTA_VIEWS:
        raise ValueError(f"infer.tta={tta!r}: choose one of {', '.join(TTA_VIEWS)}")
    total: np.ndarray | None = None
    for index in range(TTA_VIEWS[tta]):
        probs = run(np.ascontiguousarray(view(batch, index)))
        probs = unview(probs, index) if spatial else probs
        total = probs if total is None else total + probs
    assert total is not None
    return total / TTA_VIEWS[tta]
