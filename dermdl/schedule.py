"""The training schedule as a pure function of params: which phases run, and how each sets its LRs.

``train.recipe``:

- ``one_cycle`` (default): every layer trains at ``lr`` under fastai's one-cycle (25% warm-up, cosine
  down), after ``fepochs`` optional epochs with the body frozen. On HAM10000 this beat the thesis
  schedule by a wide margin at the same 4-epoch budget (docs/results.md, ablation).
- ``thesis``: ``fepochs`` epochs with the pretrained body frozen (one-cycle peaking at the end), then
  discriminative LRs from lr/200 (first layers) to lr/2 (head) — fastai's ``fine_tune``, as the thesis.

With ``train.plateau`` the LR is constant (reduce-on-plateau divides it); progressive resizing runs
the whole schedule once per size factor.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from dermdl.options import RECIPES


@dataclass(frozen=True)
class Phase:
    name: str  # e.g. "unfrozen", "weak_frozen", "x0.5_unfrozen": logged, printed, checkpointed
    size_factor: float
    epochs: int
    frozen: bool


@dataclass(frozen=True)
class FitPlan:
    """How fastai fits one phase: ``fit`` (constant) or ``fit_one_cycle`` with these LRs and options."""

    method: str
    lrs: Any  # a float (every layer) or a slice (fastai: spread over the parameter groups)
    options: dict = field(default_factory=dict)
    description: str = ""


def phases(train: Any, label: str = "") -> Iterator[Phase]:
    """Every phase of one schedule in order (phases of 0 epochs are skipped)."""
    for factor in train.progressive_resizing or (1.0,):
        stage = f"{label}x{factor:g}_" if train.progressive_resizing else label
        for frozen, epochs in ((True, train.fepochs), (False, train.epochs)):
            if epochs:
                yield Phase(f"{stage}{'frozen' if frozen else 'unfrozen'}", factor, epochs, frozen)


def fit_plan(train: Any, phase: Phase, lr: float) -> FitPlan:
    if train.recipe not in RECIPES:
        raise ValueError(f"train.recipe: unknown recipe {train.recipe!r}; use one of {', '.join(RECIPES)}")
    lrs: float | slice
    if phase.frozen:
        lrs, what = slice(lr), "body frozen"
    elif train.recipe == "thesis":
        lrs, what = slice(lr / 200, lr / 2), "discriminative lr/200..lr/2"
    else:
        lrs, what = lr, "all layers"
    if train.plateau:
        return FitPlan("fit", lrs, {}, f"{what}, lr {lr:.1e} constant (reduced on plateau)")
    if phase.frozen:
        options = {"pct_start": 0.99}
    elif train.recipe == "thesis":
        options = {"pct_start": 0.3, "div": 5.0}
    else:
        options = {}  # fastai's one-cycle defaults: pct_start 0.25, div 25, div_final 1e5
    return FitPlan("fit_one_cycle", lrs, options, f"{what}, lr {lr:.1e} one-cycle")
