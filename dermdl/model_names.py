"""Backbone names that ``train.model`` accepts, known without importing torch or timm.

Why a file: checking a name with ``timm.is_model`` imports torch (~5 s), and params.yaml is validated by
every command, ``dermdl --help`` and a typo included. ``timm_models.txt`` is ``timm.list_models()`` of
the pinned timm; ``tests/test_model_names.py`` fails when the installed timm lists other names.
Regenerate: ``python -m dermdl.model_names``.
"""

from __future__ import annotations

import difflib
from functools import lru_cache
from pathlib import Path

NAMES_FILE = Path(__file__).with_name("timm_models.txt")

#: The thesis used efficientnet-pytorch names; they map onto timm's ports of the same networks.
ALIASES = {f"efficientnet-b{i}": f"efficientnet_b{i}" for i in range(8)} | {
    f"efficientnet-lite{i}": f"efficientnet_lite{i}" for i in range(5)
}


@lru_cache(maxsize=1)
def timm_names() -> frozenset[str]:
    lines = NAMES_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(line for line in lines if line and not line.startswith("#"))


def check_model_name(name: str) -> str:
    """``name`` if it is (an alias of) a timm architecture, optionally with a ``.pretrained_tag``;
    else ValueError with close matches."""
    arch = ALIASES.get(name, name).split(".", 1)[0]
    if arch in timm_names():
        return name
    close = difflib.get_close_matches(arch, sorted(timm_names()), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else " See timm.list_models()."
    raise ValueError(f"unknown model {name!r}.{hint}")


def write_names_file() -> Path:
    import timm

    NAMES_FILE.write_text(
        f"# timm {timm.__version__}: timm.list_models(); regenerate with "
        "`python -m dermdl.model_names`\n" + "\n".join(timm.list_models()) + "\n",
        encoding="utf-8",
    )
    return NAMES_FILE


if __name__ == "__main__":
    print(write_names_file())
