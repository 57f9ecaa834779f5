"""The plot folders dvc.yaml declares for every task, kept present so `dvc plots show` does not warn.

Why: dvc.yaml's top-level `plots:` lists each folder once for all tasks (one template per folder), and
DVC reports "failed to load some plots" for a declared folder that does not exist. A task writes only
its own folders, so analyze leaves the others empty with a `.keep` file in them: .dvcignore hides
`.keep` from DVC (an empty folder is accepted without a warning) and the file keeps the folder in git,
so committed revisions and experiments (`dvc plots diff`) do not warn either. The core never asks which
task wrote what; tests/test_dvc_plots.py checks this list against dvc.yaml.
"""

from pathlib import Path

PLOT_FOLDERS = ("confusion", "roc", "calibration", "subgroups", "pr", "figures")
KEEP = ".keep"  # listed in .dvcignore


def keep_plot_folders(plots_dir: Path) -> list[str]:
    """Create each declared folder that is missing or empty, with a `.keep` file; returns their names."""
    kept = []
    for name in PLOT_FOLDERS:
        folder = plots_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        if not any(path.name != KEEP for path in folder.iterdir()):
            (folder / KEEP).touch()
            kept.append(name)
    return kept
