"""The one table of bench/gpu_check.sh: a row per step, each with the check it passed or why it failed.

Reads only what the steps wrote in OUT (``<step>.status`` from the script: exit status and seconds;
``<step>.json`` from the step), so it needs no torch and a failed or skipped step still gets its row.
The table is markdown: OUT/table.md is what goes into docs/results.md ("GPU check").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

OUTPUT_DTYPE = {"bf16": "bfloat16", "fp16": "float16", "off": "float32"}
DDP_LOSS_TOLERANCE = 0.3  # |valid loss, DDP - one process|: tests/test_distributed.py's (BatchNorm per rank)
STEPS = {"amp": "(a) demo, AMP", "ddp": "(b) DDP", "throughput": "(c) throughput", "versus_bare": "(d) dermdl vs bare"}


class Row(NamedTuple):
    step: str
    what: str
    wall: str
    result: str
    check: str


def _verdict(problems: list[str]) -> str:
    return "ok" if not problems else "FAIL: " + "; ".join(problems)


def used_mode(device: str, requested: str) -> str:
    """The mixed precision a run must end up with: CUDA honours the request, the CPU trains in fp32."""
    return requested if device == "cuda" else "off"


def amp_problems(run: dict, device: str) -> list[str]:
    """What is wrong with one training run of step (a) or (b), from what the probe saw and the files."""
    mode = used_mode(device, run["amp"])
    probe = run.get("probe") or {}
    if not probe:
        return ["the probe saw no training batch"]
    problems = [
        f"{what} on {probe[key]}, not {device}"
        for what, key in (("batch", "batch_device"), ("weights", "model_device"))
        if not probe[key].startswith(device)
    ]
    if probe["autocast"] != (OUTPUT_DTYPE[mode] if mode != "off" else "off"):
        problems.append(f"autocast {probe['autocast']}, expected {mode}")
    if probe["output_dtype"] != OUTPUT_DTYPE[mode]:
        problems.append(f"model output {probe['output_dtype']}, expected {OUTPUT_DTYPE[mode]}")
    if run["train_json_precision"] != mode:
        problems.append(f"train.json says {run['train_json_precision']}, expected {mode}")
    if not probe["channels_last"]:
        problems.append("input or weights not channels_last")
    if not (run["curves_finite"] and run["weights_finite"]):
        problems.append("NaN/inf in the logged curves or the weights")
    return problems


def _ran(run: dict) -> str:
    probe = run["probe"]
    layout = "on" if probe["channels_last"] else "off"
    return (
        f"{run['epochs']} epoch(s) × {run['train_images']} images on {probe['batch_device']}; autocast "
        f"{probe['autocast']}, output {probe['output_dtype']}, channels_last {layout}"
    )


def _loss(run: dict) -> str:
    finite = "finite" if run["curves_finite"] and run["weights_finite"] else "NOT finite"
    return f"valid loss {run['valid_loss']:.4f}; {run['curve_values']} curve values and the weights {finite}"


def amp_rows(data: dict) -> list[Row]:
    rows = []
    for run in data["runs"]:
        label = f"(a) demo, {run['amp']} requested"
        if "skipped" in run:
            rows.append(Row(label, f"not run: {run['skipped']}", "-", "-", "ok (skipped)"))
            continue
        problems = amp_problems(run, data["device"])
        what = _ran(run) if run.get("probe") else "?"
        rows.append(Row(label, what, f"{run['wall_s']:.1f}", _loss(run), _verdict(problems)))
    return rows


def ddp_row(ddp: dict, amp: dict | None, device: str) -> Row:
    label = f"(b) DDP, {ddp['nproc']} process{'es' if ddp['nproc'] > 1 else ''}"
    if ddp["returncode"] != 0 or "probe" not in ddp:
        return Row(label, ddp["two_ranks"], "-", f"torchrun exit status {ddp['returncode']}", "FAIL: training failed")
    probe = ddp["probe"]
    problems = amp_problems(ddp, device)
    backend = "nccl" if device == "cuda" else "gloo"
    if not probe["ddp"]:
        problems.append("model not wrapped in DistributedDataParallel")
    if probe["backend"] != backend or probe["world"] != ddp["nproc"]:
        problems.append(f"process group {probe['backend']} × {probe['world']}, expected {backend} × {ddp['nproc']}")
    result = _loss(ddp)
    same = [r for r in (amp or {}).get("runs", []) if "valid_loss" in r]
    single = next((r for r in same if used_mode(device, r["amp"]) == used_mode(device, ddp["amp"])), None)
    if single:
        gap = ddp["valid_loss"] - single["valid_loss"]
        result += f"; one process without DDP: {single['valid_loss']:.4f} (Δ {gap:+.4f})"
        if abs(gap) > DDP_LOSS_TOLERANCE:
            problems.append(f"valid loss differs from one process by more than {DDP_LOSS_TOLERANCE}")
    what = f"{probe['backend']} × {probe['world']}, DDP {'on' if probe['ddp'] else 'off'}"
    if ddp["nproc"] == 1:
        what += f" ({ddp['two_ranks']})"
    return Row(label, f"{what}; {_ran(ddp)}", f"{ddp['wall_s']:.1f}", result, _verdict(problems))


def throughput_row(tp: dict, wall: str) -> Row:
    problems = []
    if tp["output_dtype"] != OUTPUT_DTYPE[tp["amp"]]:
        problems.append(f"model output {tp['output_dtype']}, expected {OUTPUT_DTYPE[tp['amp']]}")
    if not (tp["train_images_per_second"] > 0 and tp["infer_images_per_second"] > 0):
        problems.append("no images/s measured")
    what = (
        f"{tp['model']} {tp['size']} px, batch {tp['bs']}, {tp['steps']} steps, {tp['device']}, amp {tp['amp']} "
        f"(output {tp['output_dtype']}), channels_last {'on' if tp['channels_last'] else 'off'}"
    )
    result = (
        f"train {tp['train_images_per_second']:.1f} images/s, inference {tp['infer_images_per_second']:.1f} images/s"
    )
    return Row(STEPS["throughput"], what, wall, result, _verdict(problems))


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def versus_row(vb: dict, wall: str) -> Row:
    t = vb["tasks"][0]
    train, infer = t["train_images_per_second"], t["infer_images_per_second"]
    problems = [f"{side} measured nothing" for side in ("bare", "dermdl") if not _median(train[side]) > 0]
    what = (
        f"{t['task']}, {t['train_images']} images, batch {t['batch']}, {t['device']}, amp {t['amp']}, "
        f"median of {t['rounds']} round(s), same model and data"
    )
    result = (
        f"train images/s: bare {_median(train['bare']):.1f}, dermdl {_median(train['dermdl']):.1f} "
        f"(ratio {t['train_ratio']:.2f}); inference: bare {_median(infer['bare']):.1f}, dermdl "
        f"{_median(infer['dermdl']):.1f} (ratio {t['infer_ratio']:.2f})"
    )
    return Row(STEPS["versus_bare"], what, wall, result, _verdict(problems))


def _status(out: Path, step: str) -> tuple[str, str]:
    """(exit status or "skipped" or "not run", seconds) as the script recorded them."""
    path = out / f"{step}.status"
    if not path.is_file():
        return "not run", "-"
    status, seconds = (path.read_text().split() + ["-"])[:2]
    return status, seconds


def _why(status: str) -> str:
    reasons = {
        "skipped": "skipped: the time budget was spent",
        "not run": "not run",
        "124": "stopped at its time limit",
    }
    return reasons.get(status, f"exit status {status}")


def _load(out: Path, step: str) -> dict | None:
    path = out / f"{step}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def rows(out: Path) -> list[Row]:
    """One row per step (two for (a)); a step that failed, timed out or was skipped says so in its row."""
    env = _load(out, "env") or {"device": "?"}
    data = {step: _load(out, step) for step in STEPS}
    table: list[Row] = []
    status, seconds = _status(out, "demo")
    if status != "0":  # every training step reads the demo data set
        table.append(Row("demo data set", _why(status), seconds, f"see {out / 'demo.log'}", "FAIL"))
    for step, label in STEPS.items():
        status, seconds = _status(out, step)
        found = data[step]
        if found is None:  # ddp writes its JSON (exit status included) even when training failed
            table.append(Row(label, _why(status), seconds, f"see {out / (step + '.log')}", "FAIL"))
        elif step == "amp":
            table += amp_rows(found)
        elif step == "ddp":
            table.append(ddp_row(found, data["amp"], env["device"]))
        elif step == "throughput":
            table.append(throughput_row(found, seconds))
        else:
            table.append(versus_row(found, seconds))
    return table


def heading(env: dict[str, Any]) -> str:
    if env.get("device") == "cuda":
        return (
            f"GPU check on {env['gpus']} × {env['gpu']}: torch {env['torch']}, CUDA {env['cuda']}, NCCL {env['nccl']}, "
            f"AMP {env['amp']}"
        )
    return f"GPU check, CPU plumbing run (GPU_CHECK_DEVICE=cpu, gloo, fp32): torch {env.get('torch', '?')}"


def render(table: list[Row], env: dict[str, Any], total: str) -> str:
    lines = [heading(env) + f"; whole check {total} s", "", "| " + " | ".join(Row._fields) + " |"]
    lines.append("|" + "---|" * len(Row._fields))
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in table]
    return "\n".join(lines) + "\n"


def print_table(out: Path) -> int:
    """Print the table and write it to OUT/table.md; exit status 1 when a row failed its check."""
    table = rows(out)
    total = (out / "total.seconds").read_text().strip() if (out / "total.seconds").is_file() else "?"
    text = render(table, _load(out, "env") or {}, total)
    (out / "table.md").write_text(text)
    print(text, end="")
    return 0 if all(row.check.startswith("ok") for row in table) else 1
