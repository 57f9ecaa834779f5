"""The two errors every command turns into one clear line (no traceback), importable without torch.

Why a module of their own: ``dermdl``'s entry point must catch them before it knows which stage runs,
and importing the stage modules for that would cost seconds on every command.
"""

from __future__ import annotations


class ParamsError(ValueError):
    """Raised for any invalid parameter; the message lists every problem, one per line."""


class StageError(RuntimeError):
    """A stage cannot run on these inputs; the message says which file and how to fix it."""
