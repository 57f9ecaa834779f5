"""Training and validation batches: a gather from the prepared arrays, then tensor ops on the device.

:class:`ArrayLoader` is what every task's ``dataloaders`` returns (wrapped in fastai ``DataLoaders``):
no per-image Python, no decoding, no worker processes to start (a batch costs microseconds to gather;
workers would only contend with the model for the CPU cores). It speaks the small part of fastai's
DataLoader protocol the core uses: ``rng`` (saved in checkpoints), ``get_idxs``/``shuffle_fn``/``n``
(oversampling and DDP sharding), ``to(device)``, ``to_detach``. The task says what its targets are:
class labels, class-id masks (moved with the image) or boxes (moved with the image).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import torch
import torch.nn.functional as F

from dermdl.arrays import IMAGES, TARGETS, ArrayStore
from dermdl.augment import Augmentation, augment_batch
from dermdl.records import Record


def augmentation(train: Any, boxes: bool = False) -> Augmentation | None:
    """The training augmentation named by ``train.*`` params (None when ``train.augment`` is off)."""
    if not train.augment:
        return None
    return Augmentation(
        dihedral=True,
        max_rotate=train.max_rotate,
        max_zoom=train.max_zoom,
        max_lighting=train.max_lighting,
        max_color=train.max_color,
        boxes=boxes,
    )


Y = TypeVar("Y")


class Targets(Protocol[Y]):
    """A task's targets of type ``Y`` in a batch: gathered by position, moved to the device, and following
    the images through the resize and the augmentation."""

    def take(self, positions: list[int]) -> Y: ...

    def to(self, y: Y, device: torch.device) -> Y: ...

    def resize(self, x: torch.Tensor, y: Y, size: int) -> tuple[torch.Tensor, Y]: ...

    def augment(self, x: torch.Tensor, y: Y, aug: Augmentation) -> tuple[torch.Tensor, Y]: ...


class Labels:
    """One class index per image."""

    def __init__(self, records: Sequence[Record], classes: list[str]):
        index = {name: i for i, name in enumerate(classes)}
        self.values = torch.tensor([index[r["target"]] for r in records], dtype=torch.int64)

    def take(self, positions: list[int]) -> torch.Tensor:
        return self.values[positions]

    def to(self, y: torch.Tensor, device: torch.device) -> torch.Tensor:
        return y.to(device, non_blocking=True)

    def resize(self, x: torch.Tensor, y: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return _resize(x, size), y

    def augment(self, x: torch.Tensor, y: torch.Tensor, aug: Augmentation) -> tuple[torch.Tensor, torch.Tensor]:
        return augment_batch(x, aug)[0], y


class Masks(Labels):
    """A class id per pixel (``targets.npy``; self-training points records at pseudo-label arrays)."""

    def __init__(self, records: Sequence[Record]):
        located: list[Record] = [
            {**r, "arrays": r.get("target_arrays", r["arrays"]), "row": r.get("target_row", r["row"])} for r in records
        ]
        self.store = ArrayStore(located, TARGETS)

    def take(self, positions: list[int]) -> torch.Tensor:
        return self.store.take(positions)

    def to(self, y: torch.Tensor, device: torch.device) -> torch.Tensor:
        return y.to(device, non_blocking=True).long()

    def resize(self, x: torch.Tensor, y: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return _resize(x, size), F.interpolate(y[:, None].float(), size=(size, size), mode="nearest")[:, 0].long()

    def augment(self, x: torch.Tensor, y: torch.Tensor, aug: Augmentation) -> tuple[torch.Tensor, torch.Tensor]:
        x, y, _ = augment_batch(x, aug, masks=y)
        return x, y


class Boxes:
    """torchvision targets: ``boxes`` (xyxy, prepared pixels) and ``labels`` (1..K) per image."""

    def __init__(self, records: Sequence[Record], classes: list[str]):
        index = {name: i + 1 for i, name in enumerate(classes)}
        self.targets: list[dict[str, torch.Tensor]] = []
        for record in records:
            objects = [o for o in record["target"] if not o.get("iscrowd")]
            self.targets.append(
                {
                    "boxes": torch.tensor([o["bbox"] for o in objects], dtype=torch.float32).reshape(-1, 4),
                    "labels": torch.tensor([index[o["category"]] for o in objects], dtype=torch.int64),
                }
            )

    def take(self, positions: list[int]) -> list[dict]:
        return [self.targets[p] for p in positions]

    def to(self, y: list[dict], device: torch.device) -> list[dict]:
        return [{k: v.to(device) for k, v in t.items()} for t in y]

    def resize(self, x: torch.Tensor, y: list[dict], size: int) -> tuple[torch.Tensor, list[dict]]:
        factor = size / x.shape[-1]
        return _resize(x, size), [{**t, "boxes": t["boxes"] * factor} for t in y]

    def augment(self, x: torch.Tensor, y: list[dict], aug: Augmentation) -> tuple[torch.Tensor, list[dict]]:
        x, _, boxes = augment_batch(x, aug, boxes=[t["boxes"] for t in y])
        return x, [{**t, "boxes": b} for t, b in zip(y, boxes)]


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Prepared size -> model input size (antialiased, like the PIL resize at inference)."""
    if x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


class ArrayLoader:
    """Batches of (normalised images, targets) from prepared arrays; see the module docstring."""

    def __init__(
        self,
        records: Sequence[Record],
        targets: Targets[Any],
        bs: int,
        input_size: int,
        norm: tuple[Sequence[float], Sequence[float]] | None,
        shuffle: bool = False,
        aug: Augmentation | None = None,
        channels_last: bool = False,
        tabular: torch.Tensor | None = None,
    ):
        self.images = ArrayStore(records, IMAGES)
        # (n, features) second model input (image + metadata classification): batches are (x, tabular, y)
        self.tabular = tabular
        self.dataset = self.images  # fastai/DDP helpers ask len(dl.dataset)
        self.targets, self.bs, self.input_size, self.shuffle, self.aug = targets, bs, input_size, shuffle, aug
        self.n = len(records)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.norm = None if norm is None else tuple(torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1) for v in norm)
        self.device = torch.device("cpu")
        self.rng = random.Random(random.randint(0, 2**32 - 1))  # drawn like fastai's: seeded runs repeat
        self.load_seconds = 0.0  # time spent making batches (train.json: the data-loading share)

    def to(self, device: Any) -> ArrayLoader:
        self.device = torch.device(device)
        if self.norm is not None:
            self.norm = tuple(v.to(self.device) for v in self.norm)
        return self

    def shuffle_fn(self, idxs: list[int]) -> list[int]:
        return self.rng.sample(idxs, len(idxs))

    def get_idxs(self) -> list[int]:
        idxs = list(range(len(self.dataset)))
        return self.shuffle_fn(idxs) if self.shuffle else idxs

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.bs)
        # training drops a last batch of one image: BatchNorm cannot normalise a single sample
        return full + (rest > 1 or (rest == 1 and not self.shuffle))

    def to_detach(self, b: Any, cpu: bool = True, gather: bool = True) -> Any:
        from fastai.torch_core import to_detach

        return to_detach(b, cpu, gather)

    def __iter__(self):
        idxs = self.get_idxs()
        for start in range(0, len(self) * self.bs, self.bs):
            began = time.perf_counter()
            batch = self.collate(idxs[start : start + self.bs])
            self.load_seconds += time.perf_counter() - began
            yield batch

    def collate(self, positions: list[int]) -> tuple[Any, ...]:
        x = self.images.take(positions)
        y = self.targets.to(self.targets.take(positions), self.device)
        if self.device.type == "cuda":
            x = x.pin_memory()
        x = x.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
        x, y = self.targets.resize(x, y, self.input_size)
        if self.aug is not None:
            x, y = self.targets.augment(x, y, self.aug)
        if self.norm is not None:
            x = (x - self.norm[0]) / self.norm[1]
        x = x.contiguous(memory_format=self.memory_format)
        if self.tabular is not None:  # augmentation and resizing change the image only
            return x, self.tabular[positions].to(self.device, non_blocking=True), y
        return x, y


def array_dataloaders(
    train: Sequence[Record],
    valid: Sequence[Record],
    targets: Callable[..., Targets[Any]],
    params: Any,
    norm: Any,
    aug: Augmentation | None,
    tabular: Callable[[Sequence[Record]], torch.Tensor] | None = None,
    **target_args: Any,
):
    """fastai ``DataLoaders`` of a shuffled, augmented training loader and a plain validation loader;
    ``tabular(records)``: a second model input per image (fastai then calls ``model(x, tabular)``)."""
    from fastai.data.core import DataLoaders
    from fastai.torch_core import default_device

    t = params.train
    train_dl = ArrayLoader(
        train,
        targets(train, **target_args),
        t.bs,
        t.input_size,
        norm,
        shuffle=True,
        aug=aug,
        channels_last=t.channels_last,
        tabular=tabular(train) if tabular else None,
    )
    valid_dl = ArrayLoader(
        valid,
        targets(valid, **target_args),
        t.bs,
        t.input_size,
        norm,
        channels_last=t.channels_last,
        tabular=tabular(valid) if tabular else None,
    )
    # The training device, set explicitly: batches are made (and augmented) there. Left unset, fastai reads
    # the train loader's own device (CPU until moved) as the DataLoaders' and moves the model to the CPU.
    return DataLoaders(train_dl, valid_dl, device=default_device())
