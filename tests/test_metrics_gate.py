"""The metrics gate of `make reproduce`: tables of baseline/current values with hand-derived verdicts,
the command's exit status and one-line errors, the git baseline, and the committed baseline itself
(it must hold what the current headline hook makes of the committed report, so it cannot rot)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from dermdl import metrics_gate
from dermdl.headline import headline_metrics
from dermdl.metrics_gate import Config, Rule, compare, flatten, load_config
from dermdl.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]
RULES = Config(
    files=("m.json",),
    rules=(
        Rule("step", "none", 0.0),
        Rule("ece", "lower", 0.03),
        Rule("loss*", "lower", 0.05),
        Rule("*accuracy*", "higher", 0.05),
        Rule("ap", "higher", 0.05),
        Rule("ap[0-9]*", "higher", 0.05),
    ),
)


@pytest.mark.parametrize(
    ("baseline", "current", "failed"),
    [
        ({"t.accuracy": 0.90}, {"t.accuracy": 0.90}, []),  # identical
        ({"t.accuracy": 0.90}, {"t.accuracy": 0.87}, []),  # drop 0.03 < 0.05
        ({"t.accuracy": 0.90}, {"t.accuracy": 0.85}, []),  # drop exactly the tolerance (0.9 - 0.05 < 0.85 in binary)
        ({"t.accuracy": 0.90}, {"t.accuracy": 0.84}, ["t.accuracy"]),  # drop 0.06
        ({"t.accuracy": 0.50}, {"t.accuracy": 1.00}, []),  # an improvement never fails
        ({"t.ece": 0.05}, {"t.ece": 0.07}, []),  # lower is better: a rise within 0.03
        ({"t.ece": 0.05}, {"t.ece": 0.09}, ["t.ece"]),  # a rise of 0.04
        ({"t.ece": 0.30}, {"t.ece": 0.00}, []),  # a large fall of a lower-is-better metric is a gain
        ({"valid.loss": 0.10}, {"valid.loss": 0.16}, ["valid.loss"]),
        ({"t.AP": 0.60}, {"t.AP": 0.50}, ["t.AP"]),  # patterns ignore case: ap matches AP
        ({"gloss.accuracy": 0.9}, {"gloss.accuracy": 1.0}, []),  # the name decides, not the test set's
        ({"valid.AP50": 0.6}, {"valid.AP50": 0.5}, ["valid.AP50"]),
        ({"step": 3.0}, {"step": 9.0}, []),  # better: none is shown, never gated
        ({"t.accuracy": 0.9, "t.ece": 0.1}, {"t.accuracy": 0.9}, ["t.ece"]),  # a metric that disappears
        ({"t.accuracy": 0.9}, {"t.accuracy": 0.9, "t.new_score": 0.1}, []),  # a new one is only reported
        ({"t.accuracy": 0.9}, {"t.accuracy": None}, ["t.accuracy"]),  # became undefined
        ({"t.accuracy": None}, {"t.accuracy": 0.1}, []),  # was undefined: nothing to compare with
        ({"t.kappa": 0.9}, {"t.kappa": 0.9}, ["t.kappa"]),  # no rule (ap* misses kappa): it needs a direction
        ({"t.accuracy": 0.9, "t.ece": 0.1}, {"t.accuracy": 0.7, "t.ece": 0.2}, ["t.accuracy", "t.ece"]),
    ],
)
def test_verdicts(baseline, current, failed):
    findings = compare(baseline, current, RULES)
    assert [f.key for f in findings if f.failed] == failed
    assert {f.key for f in findings} == set(baseline) | set(current)  # every metric is one line


def test_new_and_missing_metrics_say_so():
    by_key = {f.key: f.text for f in compare({"a.accuracy": 0.9}, {"b.accuracy": 0.8}, RULES)}
    assert by_key["a.accuracy"] == "a.accuracy disappeared (baseline 0.9)"
    assert by_key["b.accuracy"] == "b.accuracy = 0.8 (not in the baseline, not gated)"


def test_the_first_matching_rule_wins_and_a_dotted_pattern_matches_the_whole_key():
    config = Config(("m",), (Rule("t.loss", "higher", 0.0), Rule("loss", "lower", 0.0)))
    assert [f.failed for f in compare({"t.loss": 1.0, "v.loss": 1.0}, {"t.loss": 0.5, "v.loss": 0.5}, config)] == [
        True,
        False,
    ]


@pytest.mark.parametrize(
    ("tree", "expected"),
    [
        (
            {"sl_test": {"accuracy": 1, "ece": None}, "step": 3},
            {"sl_test.accuracy": 1.0, "sl_test.ece": None, "step": 3},
        ),
        ({"a": {"b": {"c": 0.5}}}, {"a.b.c": 0.5}),
        ({}, {}),
    ],
)
def test_flatten_joins_keys_as_dvc_shows_them(tree, expected):
    assert flatten(tree, "m.json") == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"t": {"accuracy": "high"}}', "m.json: t.accuracy is 'high', not a number or null"),
        ('{"t": [0.5]}', "m.json: t is [0.5], not a number or null"),
        ('{"t": true}', "m.json: t is True, not a number or null"),
        ("[1, 2]", "m.json: expected a JSON object of metrics, got list"),
        ('{"t": 0.5', "m.json: not valid JSON"),
    ],
)
def test_bad_metrics_are_one_clear_line(tmp_path, capsys, text, message):
    (tmp_path / "m.json").write_text(text)
    (tmp_path / "ok.json").write_text('{"t": {"accuracy": 0.5}}')
    code = _main(tmp_path, ["--baseline", str(tmp_path / "ok.json"), str(tmp_path / "m.json")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err.replace(str(tmp_path) + "/", "")


def _main(tmp_path: Path, args: list[str], rules: dict | None = None) -> int:
    config = tmp_path / "gate.yaml"
    rules = rules or {"files": ["m.json"], "rules": [{"match": "*accuracy", "better": "higher", "tolerance": 0.05}]}
    config.write_text(yaml.safe_dump(rules))
    return metrics_gate.main([*args, "--config", str(config)])


@pytest.mark.parametrize(("current", "code"), [(0.88, 0), (0.80, 1)])
def test_the_command_against_a_baseline_file(tmp_path, capsys, current, code):
    (tmp_path / "base.json").write_text(json.dumps({"sl_test": {"accuracy": 0.9}}))
    (tmp_path / "m.json").write_text(json.dumps({"sl_test": {"accuracy": current}}))
    assert _main(tmp_path, [str(tmp_path / "m.json"), "--baseline", str(tmp_path / "base.json")]) == code
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[:-1]] == (["FAIL"] if code else ["ok"])
    assert lines[-1].startswith("metrics gate FAILED on 1 of 1 metrics" if code else "metrics gate passed (1 metrics)")


def test_a_missing_metrics_file_is_one_line(tmp_path, capsys):
    (tmp_path / "base.json").write_text("{}")
    assert _main(tmp_path, [str(tmp_path / "absent.json"), "--baseline", str(tmp_path / "base.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "absent.json: no such metrics file" in err


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({"files": [], "rules": []}, "'files' must be a non-empty list"),
        ({"files": ["m.json"]}, "expected exactly the keys 'files' and 'rules'"),
        ({"files": ["m.json"], "rules": [{"match": "*", "better": "up", "tolerance": 0}]}, "better must be higher"),
        ({"files": ["m.json"], "rules": [{"match": "*", "better": "lower", "tolerance": -1}]}, "tolerance must be"),
        ({"files": ["m.json"], "rules": [{"match": "*", "better": "lower"}]}, "rules[0] must have exactly the keys"),
    ],
)
def test_bad_rules_are_one_clear_line(tmp_path, capsys, rules, message):
    (tmp_path / "m.json").write_text("{}")
    assert _main(tmp_path, ["--baseline", str(tmp_path / "m.json")], rules) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "gate.yaml: " in err and message in err


def test_baseline_from_git_and_a_missing_one(tmp_path, capsys, monkeypatch):
    """Without --baseline each file is compared with its version at --rev (default HEAD)."""
    monkeypatch.chdir(tmp_path)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    Path("out").mkdir()
    Path("out/m.json").write_text(json.dumps({"t": {"accuracy": 0.9}}))
    rules = {"files": ["out/m.json"], "rules": [{"match": "*accuracy", "better": "higher", "tolerance": 0.05}]}
    assert _main(tmp_path, [], rules) == 2  # nothing committed yet: no baseline
    assert "no baseline HEAD:./out/m.json" in capsys.readouterr().err
    subprocess.run([*git, "add", "out/m.json"], check=True)
    subprocess.run([*git, "commit", "-qm", "baseline"], check=True)
    Path("out/m.json").write_text(json.dumps({"t": {"accuracy": 0.7}}))
    assert _main(tmp_path, [], rules) == 1
    assert "FAIL out/m.json: t.accuracy = 0.7, baseline 0.9" in capsys.readouterr().out


def test_the_committed_rules_load_and_cover_every_committed_metric():
    config = load_config(ROOT / metrics_gate.CONFIG)
    for name in config.files:
        metrics = json.loads((ROOT / name).read_text())
        for key in flatten(metrics, name):
            assert config.rule(key) is not None, f"{name}: {key} has no rule in {metrics_gate.CONFIG}"


def test_the_committed_baseline_is_what_the_current_headline_hook_makes():
    """outputs/metrics.json against the same run's report.json through today's hook: a hook that now
    names other metrics means the baseline is stale (docs/reproduce.md: run make reproduce, commit)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    committed = json.loads((ROOT / "outputs" / "metrics.json").read_text())
    report = json.loads((ROOT / "outputs" / "report.json").read_text())
    assert sorted(committed) == sorted(params["data"]["sl_tests"])
    sections = {name: report[name] for name in committed}
    assert headline_metrics(get_task(params["task"]), sections) == committed


def test_dvc_lock_records_the_committed_metrics():
    """dvc.lock and the metrics come from one run: the lock's md5 of each gated file is the file's."""
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())
    recorded = {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])}
    for name in load_config(ROOT / metrics_gate.CONFIG).files:
        assert recorded[name] == hashlib.md5((ROOT / name).read_bytes()).hexdigest(), name


def _outside_make() -> dict[str, str]:
    """The environment without a calling make's flags (`make test` runs this suite: a nested make would
    inherit -n/-s/-j and print "Entering directory" lines)."""
    return {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES")}


def test_make_reproduce_starts_from_scratch_prints_the_diff_and_gates_last():
    """`make -n` prints the recipe without running it: outputs deleted, every stage forced without the run
    cache, the diff printed even when it fails (make's '-' prefix), then the gate decides the exit status."""
    dry = subprocess.run(
        ["make", "-n", "--no-print-directory", "-o", ".venv/.installed", "reproduce"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env=_outside_make(),
    ).stdout.splitlines()
    steps = [line for line in dry if not line.startswith("test -d .dvc")]
    assert steps[0] == "rm -rf outputs data/demo"
    assert steps[1] == "dvc repro --force --no-run-cache"
    assert steps[2].startswith("dvc metrics diff") and "HEAD" in steps[2]
    assert steps[3].endswith("python -m dermdl.metrics_gate") and len(steps) == 4
    makefile = (ROOT / "Makefile").read_text()
    assert "\t-dvc metrics diff" in makefile  # a failing diff must not stop make before the gate


def test_ci_run_tests_then_reproduces():
    commands = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.startswith("make ")]
    assert commands == ["make test", "make reproduce"]


def test_the_hosted_workflow_runs_ci_run_with_cpu_torch():
    """The workflow cannot run here (no GitHub runner); what can be checked is its structure and that its
    install step picks exactly the locked torch/torchvision versions from the CPU index."""
    flow = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    assert {"push", "pull_request"} <= set(flow[True])  # YAML 1.1 reads the key `on` as True
    (job,) = flow["jobs"].values()
    assert job["runs-on"].startswith("ubuntu") and job["timeout-minutes"] >= 30
    steps = job["steps"]
    uses = {step["uses"].split("@")[0]: step for step in steps if "uses" in step}
    assert uses["actions/setup-python"]["with"]["python-version"] == "3.11"
    assert uses["actions/setup-python"]["with"]["cache"] == "pip"
    runs = [step.get("run", "") for step in steps]
    install = next(i for i, run in enumerate(runs) if "--index-url https://download.pytorch.org/whl/cpu" in run)
    ci_run = next(i for i, run in enumerate(runs) if run.strip() == "bash .ci/run")
    assert install < ci_run
    command = re.search(r"\$\((sed .+? requirements\.lock)\)", runs[install])
    assert command, runs[install]
    picked = subprocess.run(command.group(1), shell=True, cwd=ROOT, capture_output=True, text=True, check=True)
    lock = dict(line.split("==") for line in (ROOT / "requirements.lock").read_text().splitlines() if "==" in line)
    assert picked.stdout.split() == [f"torch=={lock['torch']}+cpu", f"torchvision=={lock['torchvision']}+cpu"]
    artifact = uses["actions/upload-artifact"]
    assert artifact["if"] == "always()"
    assert set(artifact["with"]["path"].split()) == {"outputs/summary.txt", "outputs/report.html"}


def test_the_verdict_lists_every_metric_once_with_its_mark(capsys):
    baseline = {"t.accuracy": 0.9, "t.ece": 0.1, "step": 3.0}
    current = {"t.accuracy": 0.7, "step": 4.0, "t.balanced_accuracy": 0.5}
    assert metrics_gate.gate([("m.json", baseline, current)], RULES) == 1
    marks = {line.split()[2]: line.split()[0] for line in capsys.readouterr().out.splitlines()[:-1]}
    assert marks == {"t.accuracy": "FAIL", "t.ece": "FAIL", "step": "ok", "t.balanced_accuracy": "new"}


@pytest.mark.parametrize(
    ("key", "better"),
    [
        ("sl_test.balanced_accuracy", "higher"),
        ("sl_test.macro_auc", "higher"),
        ("sl_test.ece", "lower"),
        ("sl_test.malignant.auc", "higher"),  # a class group's decision
        ("sl_test.malignant.sensitivity", "higher"),
        ("sl_test.malignant.specificity", "higher"),
        ("t.dice_foreground", "higher"),  # segmentation
        ("t.iou_foreground", "higher"),
        ("t.hd95", "lower"),
        ("t.hd95_scale", "lower"),
        ("t.AP", "higher"),  # detection
        ("t.AP50", "higher"),
        ("train.loss", "lower"),  # dvclive: every task's losses and validation values
        ("valid.loss_box_reg", "lower"),
        ("valid.foreground_dice", "higher"),
        ("valid.AP50", "higher"),
        ("valid.balanced_accuracy_score", "higher"),
        ("valid.f1_score", "higher"),
        ("step", "none"),
    ],
)
def test_the_committed_rules_give_every_task_metric_its_direction(key, better):
    rule = load_config(ROOT / metrics_gate.CONFIG).rule(key)
    assert rule is not None and rule.better == better
