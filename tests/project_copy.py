"""A copy of this project's pipeline in a new folder, for tests that run DVC on it (a fresh git repo per test
module): the files git would commit — tracked or new, not ignored — so outputs, caches and the venv stay out."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def copy_project(repo: Path, *paths: str) -> None:
    """Copy the project's files (only those under ``paths`` when given) into ``repo``."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", *paths],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
