"""The optimiser named by ``train.optimizer``, built from fastai's own parts.

Kept out of the training core so a task or a test can ask "which optimiser does this parameter
set mean" without building a Learner.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from dermdl.options import OPTIMIZERS


def opt_func(train: Any):
    """fastai optimiser factory for ``train.optimizer`` (weight decay and momentum from params).

    fastai's Adam applies decoupled ("true") weight decay, i.e. AdamW; ``adam`` therefore uses L2
    regularisation (``decouple_wd=False``) so the two names mean what they say in the outputs.
    """
    from fastai.optimizer import SGD, Adam, RMSProp

    wd = train.wd
    if train.optimizer == "adam":
        return partial(Adam, wd=wd, decouple_wd=False)
    if train.optimizer == "adamw":
        return partial(Adam, wd=wd, decouple_wd=True)
    if train.optimizer == "rmsprop":
        return partial(RMSProp, wd=wd, mom=train.momentum)
    if train.optimizer == "sgd":
        return partial(SGD, wd=wd, mom=train.momentum)
    raise ValueError(f"train.optimizer: unknown optimiser {train.optimizer!r}; use one of {OPTIMIZERS}")
