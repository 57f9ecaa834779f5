"""The printed summary of a classification test set: the metric table, then one short block per clinical
section (lesion level, calibration, operating points) — what a clinical reader checks, in plain words."""

from __future__ import annotations

from typing import Any

from dermdl.bootstrap import format_value
from dermdl.evaluation.subgroups import format_subgroups
from dermdl.tasks.classification.metrics import format_table


def _lesion_block(section: dict[str, Any]) -> list[str]:
    overall, macro = section["overall"], section["macro"]
    mixed = f"; {section['mixed_labels']} with mixed labels (majority label used)" if section["mixed_labels"] else ""
    return [
        f"Lesion level ({section['n_lesions']} lesions/patients, probabilities averaged per lesion{mixed}):",
        f"  balanced accuracy {format_value(overall['balanced_accuracy'])}, macro AUC {format_value(macro['auc'])}",
    ]


def _calibration_block(section: dict[str, Any]) -> list[str]:
    lines = [f"Calibration (top-label ECE over {section['bins']} bins; Brier score and log loss, 0 = perfect):"]
    labels = {
        "before": "network softmax",
        "after": f"temperature {section['temperature'] or 1:.3f} (fitted on validation)",
    }
    for key in ("before", "after"):
        if key in section:
            mark = "  <- in the predictions" if section["reported"] == key else ""
            values = section[key]
            lines.append(
                f"  {labels[key]:<40} ECE {format_value(values['ece'], 3)}, "
                f"Brier {format_value(values['brier'], 3)}, log loss {format_value(values['nll'], 3)}, "
                f"macro AUC {format_value(values['macro_auc'], 3)}{mark}"
            )
    if "after" not in section:
        lines.append("  no temperature: the model kept no validation split (train.full_data) to fit one on")
    return lines


def _decision_cells(decision: dict[str, Any]) -> list[str]:
    cells = [str(decision["n_positive"]), str(decision["n_negative"]), format_value(decision["auc"])]
    if decision.get("threshold") is None:
        return cells + ["-"] * 5
    cells.append(f"{decision['threshold']:.3f}")
    return cells + [format_value(decision[key]) for key in ("sensitivity", "specificity", "ppv", "npv")]


def _operating_block(section: dict[str, Any]) -> list[str]:
    target = section["target_sensitivity"]
    if section["chosen_on"]:
        head = (
            f"Operating points: threshold reaching sensitivity {target:g} on the {section['chosen_on']}; test values:"
        )
    else:
        head = f"Operating points: no thresholds ({section['why_not']}); AUC only:"
    rows = [(f"{name} ({', '.join(d['classes'])})", d) for name, d in section["groups"].items()]
    rows += [(name, d) for name, d in section["per_class"].items()]
    header = ["decision", "n+", "n-", "AUC", "threshold", "sensitivity", "specificity", "PPV", "NPV"]
    table = [header] + [[name, *_decision_cells(d)] for name, d in rows]
    widths = [max(len(row[j]) for row in table) for j in range(len(header))]
    lines = [head] + ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table]
    notes = [f"  {name}: {d['why']}" for name, d in rows if d.get("why")]
    return lines + notes


def format_report(metrics: dict[str, Any], title: str = "Classification metrics") -> str:
    blocks = [format_table(metrics, title).rstrip("\n")]
    for key, block in (
        ("lesion_level", _lesion_block),
        ("calibration", _calibration_block),
        ("operating_points", _operating_block),
        ("subgroups", lambda section: format_subgroups(section).rstrip("\n").split("\n")),
    ):
        if metrics.get(key):
            blocks.append("\n".join(block(metrics[key])))
    return "\n\n".join(blocks) + "\n"
