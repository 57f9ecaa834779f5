"""What an exported ONNX file says about itself (``metadata_props``): everything ``dermdl predict`` needs
without model.json, and readable by any ONNX tool (Netron, ``onnx.load(...).metadata_props``).

Why both a full copy of model.json and single keys: predict rebuilds the exact :class:`ModelConfig`
(checked like any model.json, since the file is untrusted input) from ``dermdl.model_json``; a deployment
engineer reads ``mean``, ``std``, ``input_size``, ``resize`` ... without parsing JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

from dermdl.model_config import ModelConfig, check_config

MODEL_JSON = "dermdl.model_json"
FORMAT_KEY = "dermdl.onnx_format"
FORMAT = "1"  # bump when the graph's inputs/outputs or these keys change meaning


def metadata_for(config: ModelConfig, graph: Mapping[str, str]) -> dict[str, str]:
    """String key/values for ``metadata_props``; ``graph``: the task's own entries (what the input and
    outputs are, the temperature baked into classification probabilities, detection category ids ...)."""
    return {
        FORMAT_KEY: FORMAT,
        MODEL_JSON: json.dumps(asdict(config), sort_keys=True),
        "task": config.task,
        "classes": json.dumps(list(config.classes)),
        "arch": config.arch,
        "mean": json.dumps(list(config.mean)),
        "std": json.dumps(list(config.std)),
        "input_size": str(config.input_size),
        "preprocess_size": str(config.preprocess_size),
        "resize": config.resize,
        "color_constancy": config.color_constancy,
        "dermdl_version": config.dermdl_version,
        **dict(graph),
    }


def config_from_metadata(metadata: Mapping[str, str], path: Path) -> ModelConfig:
    """The checked model settings of an exported file, or ValueError naming the file."""
    if MODEL_JSON not in metadata:
        raise ValueError(
            f"{path}: an ONNX file without dermdl's metadata ({MODEL_JSON}); export it with "
            "`dermdl export --model MODEL_DIR --format onnx`"
        )
    if metadata.get(FORMAT_KEY) != FORMAT:
        raise ValueError(
            f"{path}: exported in format {metadata.get(FORMAT_KEY)!r}, this dermdl reads {FORMAT!r}; export it again"
        )
    try:
        data = json.loads(metadata[MODEL_JSON])
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: {MODEL_JSON} is not JSON ({exc}); export the model again") from None
    return ModelConfig(**check_config(data, path))
