"""model.json: :class:`ModelConfig` and the checks the file passes before anything is built from it.

Why: a model folder is untrusted input (downloaded, copied, edited). ``input_size: 30000`` would make
the first forward pass allocate ~10 GB, a class list of a million names a huge head; a wrong type fails
deep inside torch. Every key is checked here, every size bounded, and a bad file is one line that names
the file and the key. No torch here: predicting with an exported ONNX file reads the same settings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

import dermdl
from dermdl.options import COLOR_CONSTANCY, RESIZE_POLICIES

MAX_CLASSES = 10_000
MAX_SIZE = 4096  # the same bound as preprocess.size / train.input_size


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    task: str
    arch: str = Field(max_length=200)
    classes: list[str] = Field(min_length=1, max_length=MAX_CLASSES)
    input_size: int = Field(ge=8, le=MAX_SIZE)
    mean: list[float] = Field(min_length=3, max_length=3)
    std: list[float] = Field(min_length=3, max_length=3)
    preprocess_size: int = Field(ge=8, le=MAX_SIZE)
    resize: str
    color_constancy: str = "none"
    dermdl_version: str = Field("", max_length=100)
    extra: dict[str, Any] = Field(default_factory=dict)

    @field_validator("task")
    @classmethod
    def _task(cls, value: str) -> str:
        from dermdl.tasks import task_names

        if value not in task_names():
            raise ValueError(f"unknown task {value!r}; this dermdl knows {', '.join(task_names())}")
        return value

    @field_validator("classes")
    @classmethod
    def _classes(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value) or any(not c.strip() or len(c) > 200 for c in value):
            raise ValueError("class names must be unique, non-empty and at most 200 characters")
        return value

    @field_validator("std")
    @classmethod
    def _std(cls, value: list[float]) -> list[float]:
        if any(not 0 < v < 1e3 for v in value):
            raise ValueError("every std must be positive")
        return value

    @field_validator("resize")
    @classmethod
    def _resize(cls, value: str) -> str:
        if value not in RESIZE_POLICIES:
            raise ValueError(f"unknown resize policy {value!r}; one of {', '.join(RESIZE_POLICIES)}")
        return value

    @field_validator("color_constancy")
    @classmethod
    def _color(cls, value: str) -> str:
        if value not in COLOR_CONSTANCY:
            raise ValueError(f"unknown colour constancy {value!r}; one of {', '.join(COLOR_CONSTANCY)}")
        return value


def check_config(data: Any, path: Path) -> dict[str, Any]:
    """The checked keyword arguments of :class:`dermdl.models.ModelConfig`, or ValueError naming the key."""
    fix = "copy the model folder again or retrain"
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of model settings, got {type(data).__name__}; {fix}")
    try:
        return _Schema.model_validate(data).model_dump()
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = str(error["msg"]).removeprefix("Value error, ")
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ValueError(f"{path}: {key}: {message}{more}; {fix}") from None


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a trained model and feed it images like in training."""

    task: str
    arch: str
    classes: list[str]
    input_size: int
    mean: list[float]
    std: list[float]
    preprocess_size: int
    resize: str
    color_constancy: str = "none"  # preprocess.color_constancy: applied to every new image before resizing
    dermdl_version: str = dermdl.__version__
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, path: Path) -> ModelConfig:
        """Read and check a model.json. A model folder is untrusted input: every size it can ask for is
        bounded before any tensor is allocated, and a bad file is one line naming the key."""
        try:
            data = json.loads(path.read_bytes().decode("utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(
                f"{path}: not a JSON model config ({exc}); copy the model folder again or retrain"
            ) from None
        return cls(**check_config(data, path))
