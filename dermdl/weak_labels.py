"""How the learners of one training run are chained: ``train.weak_labels``.

- ``none``: one learner on ``sl_train``.
- ``pretrain`` (the thesis' original variant): train on the raw weak labels of ``wl_train``, then
  fine-tune the same model on ``sl_train``.
- ``self_train`` (the thesis loop, ``nrepeats`` rounds): a teacher trained on ``sl_train`` labels
  ``wl_train`` (classes, masks or boxes above ``detection.score_threshold``); a student starting
  from the pretrained weights trains on those pseudo-labels, is fine-tuned on ``sl_train`` and
  becomes the next teacher. Every round is scored on every test set (one DVCLive step each) and
  the final model is the last round's. A killed run resumes inside the round it was in, after
  re-deriving that round's pseudo-labels from the saved teacher (:mod:`dermdl.checkpoint`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dermdl.records import Record


def overall_values(metrics: dict) -> dict[str, float]:
    """The headline numbers of one test set's metrics (its ``overall`` section), CIs stripped."""
    from dermdl.bootstrap import point_values

    return {
        name: float(v) for name, v in point_values(metrics.get("overall") or {}).items() if isinstance(v, (int, float))
    }


def _score_round(session, model: Any, round_index: int, evaluate: Callable | None) -> dict | None:
    if evaluate is None:
        return None
    tests = evaluate(model, session.config, round_index)
    scores = {name: overall_values(m) for name, m in tests.items()}
    row = {"round": round_index, "tests": scores}
    for name, values in scores.items():
        for metric, value in values.items():
            session.log.log(f"round/{name}/{metric}", value, tensorboard_step=round_index)
    session.log.next_step()
    return row


def train_with_weak_labels(
    session, train: list[Record], valid: list[Record], weak: list[Record], evaluate: Callable | None
) -> tuple[Any, list[dict]]:
    """Run the strategy in ``train.weak_labels``; returns (final learner, per-round test rows)."""
    mode = session.params.train.weak_labels
    if mode != "none" and not weak:
        raise ValueError(
            f"train.weak_labels={mode} needs weakly labelled images; data.wl_train names none "
            "(or its datasets are empty): add them or set train.weak_labels: none"
        )
    if mode == "pretrain":
        learn = session.learner(weak, valid, loss_records=train)
        session.fine_tune(learn, weak, valid, "weak_")
        session.fine_tune(learn, train, valid, "")
        return learn, []
    learn = session.learner(train, valid)
    if mode == "self_train" and session.round_resume:  # a killed run: continue after its last finished round
        done, rounds = session.resume_round(learn)
    else:
        session.fine_tune(learn, train, valid, "")
        if mode == "none":
            return learn, []
        done, rounds = 0, [r for r in [_score_round(session, learn.model, 0, evaluate)] if r]
        session.save_round(0, learn.model, rounds)
    for index in range(done + 1, session.params.train.nrepeats + 1):
        with tempfile.TemporaryDirectory(dir=session.out, prefix=".pseudo-labels-") as work:
            pseudo = session.task.pseudo_label(learn.model, session.config, weak, session.params, Path(work))
            print(f"train: round {index}: {len(pseudo)} pseudo-labelled images from wl_train")
            student = session.learner(pseudo, valid, loss_records=train)
            session.fine_tune(student, pseudo, valid, f"round{index}_pseudo_")
            session.fine_tune(student, train, valid, f"round{index}_")
        learn = student
        row = _score_round(session, learn.model, index, evaluate)
        rounds += [row] if row else []
        session.save_round(index, learn.model, rounds)
    return learn, rounds


def rounds_table(rounds: list[dict]) -> str:
    """Markdown table: one row per round, one column per test set and headline metric, with changes."""
    if not rounds:
        return ""
    columns = [(t, m) for t, values in rounds[0]["tests"].items() for m in values]
    lines = ["| round | " + " | ".join(f"{t} {m}" for t, m in columns) + " |", "| --- |" + " --- |" * len(columns)]
    for row in rounds:
        cells = []
        for test, metric in columns:
            value = row["tests"].get(test, {}).get(metric)
            first = rounds[0]["tests"].get(test, {}).get(metric)
            text = "—" if value is None else f"{value:.3f}"
            if value is not None and first is not None and row is not rounds[0]:
                text += f" ({value - first:+.3f})"
            cells.append(text)
        lines.append(f"| {row['round']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
