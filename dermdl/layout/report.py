"""Problems found while checking inputs, collected rather than raised one at a time.

Why collect: a user fixing a dataset wants the whole list at once (every bad file, every missing
folder), not one error per run. Each :class:`Problem` names the exact path, what is wrong and how
to fix it, so the message is actionable without reading code.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Severity = Literal["error", "warning"]
SEVERITIES: tuple[str, ...] = ("error", "warning")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the inputs. ``error`` blocks the run; ``warning`` is only reported."""

    path: str
    problem: str
    fix: str
    severity: Severity = "error"

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")
        if not isinstance(self.path, str):  # accept Path objects, store text (JSON-able, hashable)
            object.__setattr__(self, "path", os.fspath(self.path))

    def line(self) -> str:
        """``ERROR <path>: <problem>. Fix: <fix>`` — one greppable line per problem."""
        return f"{self.severity.upper()} {self.path}: {self.problem.rstrip('.')}. Fix: {self.fix}"


@dataclass
class Report:
    """An ordered list of problems; ``ok`` means no errors (warnings allowed)."""

    problems: list[Problem] = field(default_factory=list)

    def add(self, path: str | os.PathLike, problem: str, fix: str, severity: Severity = "error") -> Problem:
        """Record a problem and return it."""
        item = Problem(os.fspath(path), problem, fix, severity)
        self.problems.append(item)
        return item

    def add_problem(self, problem: Problem) -> Problem:
        self.problems.append(problem)
        return problem

    def add_image_error(self, error: Any, severity: Severity = "error") -> Problem:
        """Record a :class:`dermdl.images.ImageError` (anything with path/problem/fix)."""
        return self.add(error.path, error.problem, error.fix, severity)

    def extend(self, other: Report) -> None:
        self.problems.extend(other.problems)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def lines(self) -> list[str]:
        return [p.line() for p in self.problems]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary with counts, for reports written next to stage outputs."""
        return {
            "ok": self.ok,
            "n_errors": len(self.errors),
            "n_warnings": len(self.warnings),
            "problems": [asdict(p) for p in self.problems],
        }
