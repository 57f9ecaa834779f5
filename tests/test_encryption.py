"""dermdl keygen / encrypt / decrypt (dermdl/crypto.py): round trip of a real demo layout, nothing readable
without the key, wrong/missing key and tampering are one clear line, the key is never printed or written."""

from __future__ import annotations

import hashlib
import io
import json
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from dermdl.cli import main
from dermdl.crypto.folders import MARKER
from dermdl.demo import generate_demo


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _decodable(path: Path) -> bool:
    """Would a program without the key get pixels, an array or a table out of this file?"""
    if _pixels_or_array(path):
        return True
    data = path.read_bytes()
    return b"," in data or b"{" in data  # CSV / JSON text (a Fernet token is url-safe base64: neither)


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clear") / "demo"
    generate_demo(out, size=32, n_train=2, n_test=2, n_weak=1, n_negative=1)
    return out


@pytest.fixture(scope="module")
def key_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "dermdl.key"
    assert main(["keygen", "--out", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def encrypted(layout: Path, key_file: Path, tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("enc") / "demo"
    before = _digests(layout)
    assert main(["encrypt", "--key-file", str(key_file), str(layout), str(dst)]) == 0
    assert _digests(layout) == before  # the source is only read
    return dst


def test_keygen_is_private_and_never_overwritten(key_file: Path, capsys) -> None:
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_bytes()
    assert main(["keygen", "--out", str(key_file)]) == 1
    assert key_file.read_bytes() == key
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists" in err and str(key_file) in err


def test_encrypted_layout_keeps_names_and_hides_content(layout: Path, encrypted: Path) -> None:
    clear = _digests(layout)
    enc = _digests(encrypted)
    assert set(enc) == set(clear) | {MARKER}  # same names, nothing added but the marker
    assert any(name.endswith(".png") for name in clear) and any(name.endswith(".json") for name in clear)
    readable = [name for name in enc if _decodable(encrypted / name)]
    assert readable == []
    # the clear layout itself is decodable by the same check: the check can fail
    assert all(_decodable(layout / name) for name in clear if name.endswith((".png", ".json", ".csv")))


@pytest.mark.parametrize("how", ["file", "env_file", "env_key"])
def test_round_trip_is_byte_identical(layout, encrypted, key_file, tmp_path, monkeypatch, capsys, how) -> None:
    dst = tmp_path / "back"
    argv = ["decrypt", str(encrypted), str(dst)]
    if how == "file":
        argv[1:1] = ["--key-file", str(key_file)]
    elif how == "env_file":
        monkeypatch.setenv("DERMDL_KEY_FILE", str(key_file))
    else:
        monkeypatch.setenv("DERMDL_KEY", key_file.read_text().strip())
    assert main(argv) == 0
    assert _digests(dst) == _digests(layout)
    out = capsys.readouterr().out
    assert key_file.read_text().strip() not in out


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dermdl: error: "), err
    return err


def test_wrong_key_is_one_line_and_writes_nothing(encrypted: Path, tmp_path: Path, capsys) -> None:
    other = tmp_path / "other.key"
    assert main(["keygen", "--out", str(other)]) == 0
    capsys.readouterr()
    dst = tmp_path / "back"
    assert main(["decrypt", "--key-file", str(other), str(encrypted), str(dst)]) == 1
    err = _one_error_line(capsys)
    assert "wrong key" in err and str(encrypted) in err
    assert not dst.exists() and [p for p in tmp_path.iterdir() if p.name != "other.key"] == []


def test_missing_key_is_one_line(encrypted: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("DERMDL_KEY", raising=False)
    monkeypatch.delenv("DERMDL_KEY_FILE", raising=False)
    assert main(["decrypt", str(encrypted), str(tmp_path / "back")]) == 1
    assert "no encryption key" in _one_error_line(capsys)
    assert main(["decrypt", "--key-file", str(tmp_path / "nope.key"), str(encrypted), str(tmp_path / "b")]) == 1
    assert "nope.key" in _one_error_line(capsys)


def test_not_a_key_is_one_line_without_the_value(encrypted: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("DERMDL_KEY_FILE", raising=False)
    monkeypatch.setenv("DERMDL_KEY", "hunter2-not-a-key")
    assert main(["decrypt", str(encrypted), str(tmp_path / "back")]) == 1
    err = _one_error_line(capsys)
    assert "DERMDL_KEY" in err and "hunter2" not in err


def test_tampered_file_is_detected_and_named(encrypted, key_file, tmp_path, capsys) -> None:
    copy = tmp_path / "enc"
    assert main(["decrypt", "--key-file", str(key_file), str(encrypted), str(tmp_path / "ok")]) == 0
    import shutil

    shutil.copytree(encrypted, copy)
    victim = sorted(p for p in copy.rglob("*.png"))[0]
    token = bytearray(victim.read_bytes())
    token[len(token) // 2] = ord("A") if token[len(token) // 2] != ord("A") else ord("B")
    victim.write_bytes(bytes(token))
    capsys.readouterr()
    assert main(["decrypt", "--key-file", str(key_file), str(copy), str(tmp_path / "back")]) == 1
    err = _one_error_line(capsys)
    assert str(victim) in err and "changed after encryption" in err
    assert not (tmp_path / "back").exists()


@pytest.mark.parametrize(
    ("case", "message"),
    [("exists", "already exists"), ("inside", "inside"), ("twice", "already encrypted"), ("nofolder", "not a folder")],
)
def test_bad_folders_are_refused(encrypted, layout, key_file, tmp_path, capsys, case, message) -> None:
    src, dst = {
        "exists": (layout, tmp_path),
        "inside": (layout, layout / "sub"),
        "twice": (encrypted, tmp_path / "again"),
        "nofolder": (tmp_path / "missing", tmp_path / "out"),
    }[case]
    assert main(["encrypt", "--key-file", str(key_file), str(src), str(dst)]) == 1
    assert message in _one_error_line(capsys)
    assert not (layout / "sub").exists()


# --- data.encrypted: validate reads the encrypted layout in memory ------------------------------------------


@pytest.fixture(autouse=True)
def _fresh_process_state(monkeypatch):
    """validate sets the process-wide mode and caches the key: give each test a fresh process's state."""
    import dermdl.crypto as crypto

    monkeypatch.delenv(crypto.MODE_ENV, raising=False)
    monkeypatch.delenv(crypto.KEY_ENV, raising=False)
    monkeypatch.delenv(crypto.KEY_FILE_ENV, raising=False)
    monkeypatch.setattr(crypto, "_process_key", None)


def _validate(tmp_path: Path, task: str, root: Path, encrypted: bool, stage: str = "validate") -> int:
    params = {
        "task": task,
        "out_dir": str(tmp_path / "out"),
        "data": {"root": str(root / task), "wl_train": [], "sl_train": ["sl_train"], "sl_tests": ["sl_test"]},
    }
    params["data"]["encrypted"] = encrypted
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return main([stage, "--params", str(path)])


def _problems(tmp_path: Path) -> list[tuple[str, str]]:
    report = json.loads((tmp_path / "out" / "validate" / "report.json").read_text())
    return sorted((Path(p["path"]).name, p["problem"]) for p in report["problems"])


TASKS = ["classification", "segmentation", "detection"]


@pytest.mark.parametrize("task", TASKS)
def test_validate_encrypted_layout_agrees_with_clear(layout, encrypted, key_file, tmp_path, monkeypatch, task) -> None:
    assert _validate(tmp_path / "clear", task, layout, encrypted=False) == 0
    monkeypatch.setenv("DERMDL_KEY_FILE", str(key_file))
    assert _validate(tmp_path / "enc", task, encrypted, encrypted=True) == 0
    assert _problems(tmp_path / "enc") == _problems(tmp_path / "clear")
    # without data.encrypted the same tokens are (rightly) unreadable images
    monkeypatch.setattr("dermdl.crypto._process_key", None)
    assert _validate(tmp_path / "plain", task, encrypted, encrypted=False) == 1


def test_leak_check_finds_a_duplicate_inside_the_encrypted_layout(layout, key_file, tmp_path, monkeypatch) -> None:
    """Tokens of one image differ on every encryption: duplicates must be found on decrypted content."""
    import shutil

    clear = tmp_path / "clear"
    shutil.copytree(layout, clear)
    cls = clear / "classification"
    source = sorted((cls / "sl_train" / "nevus").iterdir())[0]
    shutil.copy(source, cls / "sl_test" / "nevus" / "copy_of_train.png")
    enc = tmp_path / "enc"
    assert main(["encrypt", "--key-file", str(key_file), str(clear), str(enc)]) == 0
    assert _validate(tmp_path / "v_clear", "classification", clear, encrypted=False) == 1
    monkeypatch.setenv("DERMDL_KEY_FILE", str(key_file))
    assert _validate(tmp_path / "v_enc", "classification", enc, encrypted=True) == 1
    found = json.dumps(json.loads((tmp_path / "v_enc" / "out" / "validate" / "report.json").read_text()))
    assert "copy_of_train.png" in found


def test_validate_encrypted_without_key_or_with_tampered_image(encrypted, key_file, tmp_path, monkeypatch, capsys):
    import shutil

    assert _validate(tmp_path / "nokey", "classification", encrypted, encrypted=True) == 1
    assert "no encryption key" in _one_error_line(capsys)
    copy = tmp_path / "enc"
    shutil.copytree(encrypted, copy)
    victim = sorted((copy / "classification" / "sl_test" / "melanoma").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:-8] + b"AAAAAAAA")
    monkeypatch.setenv("DERMDL_KEY_FILE", str(key_file))
    assert _validate(tmp_path / "tampered", "classification", copy, encrypted=True) == 1
    problems = _problems(tmp_path / "tampered")
    assert [name for name, problem in problems if "cannot be decrypted" in problem] == [victim.name]
    assert str(victim) in capsys.readouterr().err


def test_key_never_reaches_outputs(encrypted, key_file, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DERMDL_KEY", key_file.read_text().strip())
    assert _validate(tmp_path, "detection", encrypted, encrypted=True) == 0
    key = key_file.read_bytes().strip()
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert files and all(key not in p.read_bytes() for p in files)
    assert key not in (tmp_path / "params.yaml").read_bytes()


# --- data.encrypted: the whole pipeline on an encrypted layout writes nothing decrypted ----------------------

# Files an encrypted run may leave readable: metric plots (no patient pixels). Everything else that would
# decode as an image or an array must be a Fernet token.
METRIC_PLOTS = ("_metrics.png", "_confusion.png", "_roc.png", "_pr.png", "_reliability.png", "_operating_points.png")


WEIGHTS = (".pt", ".onnx")  # model weights only (no images): a zip that np.load would open as .npz


def _metric_plot(path: Path) -> bool:
    return path.parent.name == "figures" and path.name.endswith(METRIC_PLOTS) or path.name == "lr_find.png"


# segmentation's per-image counts of probabilities per bin (n, classes, ..., bins): numbers, no pixel positions
STATISTICS = ("histograms.npy", "calibration.npz")


def _allowed(path: Path) -> bool:
    return _metric_plot(path) or path.suffix in WEIGHTS or path.name in STATISTICS


def _pixels_or_array(path: Path) -> bool:
    data = path.read_bytes()
    try:
        Image.open(io.BytesIO(data)).load()
        return True
    except Exception:
        pass
    try:
        np.load(io.BytesIO(data), allow_pickle=False)
        return True
    except Exception:
        return False


TRAIN = {"bs": 8, "fepochs": 0, "epochs": 1, "pretrained": False, "deterministic": True}
PIPELINES = {  # task -> (its params, a figure of patient images it draws, a prepared array)
    "classification": (
        {"preprocess": {"size": 32}, "train": {"input_size": 32}, "analyze": {"explain": 1}},
        "plots/figures/sl_test_explanations.png",
    ),
    "segmentation": (
        {"data": {"sl_train": ["sl_train"]}, "preprocess": {"size": 32}, "train": {"input_size": 32}},
        "plots/figures/sl_test_gallery_best.png",
    ),
    "detection": (
        {
            "data": {"sl_train": ["sl_train.json"]},
            "preprocess": {"size": 64, "resize": "pad"},
            "train": {"input_size": 64, "lr": 1e-3, "valid_size": 0.25},
        },
        "plots/figures/sl_test_gallery.png",
    ),
}


def _pipeline_params(task: str, root: Path, out: Path, encrypted: bool) -> Any:
    from dermdl.params import params_from_dict

    extra = PIPELINES[task][0]
    return params_from_dict(
        {
            "task": task,
            "out_dir": str(out),
            "data": {"root": str(root / task), "wl_train": [], "sl_tests": ["sl_test"], "encrypted": encrypted}
            | extra.get("data", {}),
            "preprocess": {"workers": 1} | extra["preprocess"],
            "train": TRAIN | extra["train"],
            "analyze": {"n_boot": 100} | extra.get("analyze", {}),
        }
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("runs")
    generate_demo(base / "clear", size=64, n_train=6, n_test=3, n_weak=0, n_negative=1)
    key = base / "dermdl.key"
    assert main(["keygen", "--out", str(key)]) == 0
    assert main(["encrypt", "--key-file", str(key), str(base / "clear"), str(base / "enc")]) == 0
    return base, key


@pytest.fixture(scope="module", params=list(PIPELINES))
def runs(demo, request):
    """The clear demo and its encrypted copy through preprocess/train/infer/analyze, same seed and schedule."""
    import dermdl.crypto as crypto
    from dermdl import pipeline

    base, key = demo
    task = request.param
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        for name, encrypted in (("clear", False), ("enc", True)):
            mp.setattr(crypto, "_process_key", None)
            mp.delenv(crypto.KEY_ENV, raising=False)
            if encrypted:
                mp.setenv(crypto.KEY_FILE_ENV, str(key))
            params = _pipeline_params(task, base / name, base / f"{task}_{name}", encrypted)
            for stage in ("preprocess", "train", "infer", "analyze"):
                getattr(pipeline, stage)(params)
            out[name] = params
        crypto.use_encrypted(False)
    return task, key, out


def test_encrypted_pipeline_gives_the_same_metrics(runs) -> None:
    _task, _key, out = runs
    for name in ("metrics.json", "report.json"):
        clear = json.loads((out["clear"].out / name).read_text())
        enc = json.loads((out["enc"].out / name).read_text())
        assert enc == clear, name
    assert json.loads((out["enc"].out / "metrics.json").read_text())  # not two empty files


def test_encrypted_pipeline_leaves_no_readable_image_and_no_key(runs) -> None:
    task, key, out = runs
    files = [p for p in out["enc"].out.rglob("*") if p.is_file()]
    readable = [str(p.relative_to(out["enc"].out)) for p in files if not _allowed(p) and _pixels_or_array(p)]
    assert readable == []
    secret = key.read_bytes().strip()
    assert all(secret not in p.read_bytes() for p in files)
    # the check can fail: the clear run's arrays and explanation figure decode, and the encrypted run has them
    names = {str(p.relative_to(out["enc"].out)) for p in files}
    for rel in ("prepared/sl_test/arrays/images.npy", PIPELINES[task][1]):
        assert rel in names and _pixels_or_array(out["clear"].out / rel), rel
    assert any(_metric_plot(p) and _pixels_or_array(p) for p in files)  # metric plots stay readable
    html = (out["enc"].out / "report.html").read_text()
    assert Path(PIPELINES[task][1]).name in html and "left out of this page" in html
    assert "left out of this page" not in (out["clear"].out / "report.html").read_text()


def test_encrypted_prepared_arrays_decrypt_to_the_clear_ones(runs, monkeypatch) -> None:
    import dermdl.crypto as crypto
    from dermdl.crypto.outputs import load_array

    _task, key, out = runs
    rel = "prepared/sl_test/arrays/images.npy"
    clear = np.load(out["clear"].out / rel)
    monkeypatch.setenv(crypto.KEY_FILE_ENV, str(key))
    crypto.use_encrypted(True)
    assert np.array_equal(load_array(out["enc"].out / rel), clear) and clear.any()


def test_wrong_key_at_train_time_is_one_line(runs, tmp_path, monkeypatch, capsys) -> None:
    _task, _key, out = runs
    other = tmp_path / "other.key"
    assert main(["keygen", "--out", str(other)]) == 0
    monkeypatch.setenv("DERMDL_KEY_FILE", str(other))
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(out["enc"].to_dict()))
    before = (out["enc"].out / "model" / "model.pt").read_bytes()
    capsys.readouterr()
    assert main(["train", "--params", str(params_file)]) == 1
    err = _one_error_line(capsys)
    assert "cannot be decrypted: wrong key" in err and "/arrays/" in err and ".npy" in err
    assert (out["enc"].out / "model" / "model.pt").read_bytes() == before


def test_a_command_that_is_not_a_stage_never_inherits_an_encrypted_run(tmp_path):
    """An encrypted stage run in this process (a notebook, a test worker) must not make a later
    `dermdl predict` read its clear photos as encrypted or encrypt what it writes."""
    from dermdl.cli import main
    from dermdl.crypto import encrypted, use_encrypted

    use_encrypted(True)
    try:
        main(["report", str(tmp_path / "no-outputs")])  # any non-stage command; this one fails fast
        assert not encrypted()
    finally:
        use_encrypted(False)
