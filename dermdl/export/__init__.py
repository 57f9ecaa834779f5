"""Export for deployment: a trained model as one ONNX file that ``dermdl predict`` (or any ONNX Runtime
program) runs without the training stack.

- :mod:`.metadata` (no torch): what predict needs, stored in the file's ``metadata_props``;
- :mod:`.runtime` (no torch): opening the file with ONNX Runtime and the numpy twins of the PyTorch
  input pipeline (normalisation, test-time augmentation views);
- :mod:`.onnx_export` (torch): tracing the task's graph, checking it against PyTorch, writing the file.

Tasks plug in through two hooks of :class:`dermdl.tasks.Task`: ``onnx_graph`` (what to trace) and
``onnx_predict`` (how to run it); the core never names a task. User documentation: docs/export.md.
"""

ONNX_FILE = "model.onnx"
