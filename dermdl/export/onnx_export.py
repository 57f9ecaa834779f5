"""``dermdl export --format onnx``: trace the task's graph, check it against PyTorch, store the metadata.

Why the TorchScript-based exporter (``dynamo=False``, opset 17): it is the path torchvision documents and
tests for its detectors (Faster R-CNN: NMS, RoIAlign and data-dependent box counts); the torch.export
exporter needs onnxscript and does not handle those graphs yet. Classification and U-Net graphs go
the same way, so there is one exporter to maintain.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from dermdl.export.graph import OnnxGraph
from dermdl.export.metadata import metadata_for
from dermdl.io import atomic_write_bytes

OPSET = 17
FORMATS = ("onnx",)


def _trace(graph: OnnxGraph) -> bytes:
    import tempfile

    import torch

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), torch.no_grad():
        # the tracer's warnings (Python values frozen into the graph, the legacy exporter's deprecation)
        # are about shapes export fixes on purpose: the input size is part of the model
        warnings.simplefilter("ignore")
        traced = Path(tmp) / "model.onnx"
        torch.onnx.export(
            graph.module,
            (graph.example,),
            traced,
            dynamo=False,
            opset_version=OPSET,
            input_names=["image"],
            output_names=list(graph.outputs),
            dynamic_axes={name: dict(axes) for name, axes in graph.dynamic.items()} or None,
            do_constant_folding=True,
        )
        return traced.read_bytes()


def _check(graph: OnnxGraph, data: bytes, where: Path) -> float:
    """Largest difference between ONNX Runtime and PyTorch on the example input; refuses a graph that
    disagrees (a wrong export must not reach a clinic)."""
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = session.run(list(graph.outputs), {"image": graph.example.numpy()})
    with torch.no_grad():
        expected = graph.module(graph.example)
    expected = expected if isinstance(expected, (tuple, list)) else (expected,)
    worst = 0.0
    for name, mine, theirs in zip(graph.outputs, got, expected):
        theirs = theirs.detach().cpu().numpy()
        if mine.shape != theirs.shape or not np.allclose(mine, theirs, rtol=graph.rtol, atol=graph.atol):
            diff = (
                np.abs(mine - theirs).max() if mine.shape == theirs.shape else f"shape {mine.shape} vs {theirs.shape}"
            )
            raise RuntimeError(
                f"{where}: the exported graph's {name!r} differs from PyTorch ({diff}); not written. "
                "Please report this with the model's arch"
            )
        if mine.size:
            worst = max(worst, float(np.abs(mine.astype(np.float64) - theirs).max()))
    return worst


def export_model(model_dir: str | Path, fmt: str = "onnx", out: str | Path | None = None) -> tuple[Path, float]:
    """Write ``model_dir``'s model as ``out``; returns the path and the largest difference to PyTorch on
    the check input. The default is the file beside the folder (``outputs/model`` -> ``outputs/model.onnx``):
    the folder is train's DVC output, and a file added inside would make ``dvc repro`` train again."""
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt}: dermdl exports {', '.join(FORMATS)}")
    import onnx

    from dermdl.models import load_model
    from dermdl.tasks import get_task

    model, config = load_model(model_dir)
    task = get_task(config.task)
    if not task.capabilities.supports("onnx_export"):
        raise ValueError(
            f"--format onnx: not available for {task.name} models: {task.capabilities.why_not('onnx_export')}"
        )
    folder = Path(model_dir).resolve()
    path = Path(out) if out else folder.with_name(f"{folder.name}.onnx")
    if path.suffix.lower() != ".onnx":
        raise ValueError(f"--out {path}: name the file *.onnx (predict recognises exported models by it)")
    model.eval()
    graph = task.onnx_graph(model, config)
    proto = onnx.load_from_string(_trace(graph))
    del proto.metadata_props[:]
    for key, value in metadata_for(config, graph.metadata).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = f"dermdl {config.task} model ({config.arch}); see metadata_props and docs/export.md"
    onnx.checker.check_model(proto, full_check=True)
    data = proto.SerializeToString()
    worst = _check(graph, data, path)
    atomic_write_bytes(path, data)
    return path, worst
