"""How long a user waits for ``dermdl --help``, ``dermdl --version`` and a params error (goal: < 1 s each).

    python bench/startup.py            # median of 5 runs each, run it alone on the machine

Why it matters: these answer in the time Python needs to start only if nothing imports torch, timm or
fastai on the way (issue 11, item 5); a timed test would be flaky, so the goal lives here.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNS = 5


def _seconds(args: list[str]) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "dermdl.cli", *args], capture_output=True, check=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        bad = Path(tmp) / "params.yaml"
        bad.write_text("train:\n  lr: -1\n  model: efficientnet_lit0\n")
        cases = {
            "dermdl --help": ["--help"],
            "dermdl --version": ["--version"],
            "params error (validate)": ["validate", "--params", str(bad)],
        }
        worst = 0.0
        for label, args in cases.items():
            seconds = _seconds(args)
            worst = max(worst, seconds)
            print(f"{label:28s} {seconds:6.2f} s (median of {RUNS})")
    print(f"goal < 1 s: {'met' if worst < 1 else 'NOT met'}")
    return 0 if worst < 1 else 1


if __name__ == "__main__":
    raise SystemExit(main())
