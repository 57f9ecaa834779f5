"""The container, tested without a Docker engine (none on this machine, README "Docker"): hadolint on the
Dockerfile, the build context, `make lint-scripts`, the entrypoint script run with bash against stand-in mounts
(a git clone, tmp folders, real read-only bind mounts in a user namespace), and the install script's two torch
flavours resolved by pip --dry-run in a plain venv."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's tools: hadolint, shellcheck, dvc, python
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
INSTALL = ROOT / "docker" / "install.sh"


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=600, **kwargs)


# --- hadolint, build context, make lint-scripts --------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    result = run([str(BIN / "hadolint"), "Dockerfile"], cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("snippet", "rule"),
    [
        ("FROM python:latest\n", "DL3007"),  # an unpinned base
        ("FROM python:3.11-slim-bookworm\nRUN pip install requests\n", "DL3013"),  # an unpinned package
        (
            "FROM python:3.11-slim-bookworm\nRUN apt-get update && apt-get install -y --no-install-recommends git\n",
            "DL3009",
        ),
        ("FROM python:3.11-slim-bookworm\nUSER root\n", "DL3002"),  # runs as root
    ],
)
def test_hadolint_fails_on_a_bad_dockerfile(tmp_path: Path, snippet: str, rule: str) -> None:
    (tmp_path / "Dockerfile").write_text(snippet)
    result = run([str(BIN / "hadolint"), "Dockerfile"], cwd=tmp_path)
    assert result.returncode != 0
    assert rule in result.stdout


def test_build_context_holds_what_the_dockerfile_copies() -> None:
    """.dockerignore lets in only what is named (a clone holds GBs of outputs/cache); every COPY from the
    context must be among those names, or the build fails on a machine we cannot test here."""
    allowed = [
        line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")
    ]
    copies = [line.split()[1:-1] for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("COPY ")]
    sources = [src for args in copies if not any(a.startswith("--from") for a in args) for src in args]
    assert sources, "no COPY from the build context found"
    for src in sources:
        assert (ROOT / src).exists(), src
        assert any(src == name or src.startswith(name + "/") for name in allowed), f"{src} is excluded by .dockerignore"


def git(*args: str, cwd: Path) -> None:
    identity = ["-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    subprocess.run(["git", *identity, *args], cwd=cwd, check=True, capture_output=True)


def test_make_lint_scripts_checks_new_and_tracked_scripts(tmp_path: Path) -> None:
    """The real Makefile target in a scratch repository: an untracked *.sbatch counts, an ignored one does not."""
    (tmp_path / ".ci").mkdir()
    for name in ("Makefile", "Dockerfile", ".ci/run"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "ok.sh").write_text('#!/usr/bin/env bash\necho "$1"\n')
    git("init", "-q", cwd=tmp_path)
    git("add", "-A", cwd=tmp_path)
    (tmp_path / ".gitignore").write_text("ignored.sh\n")
    bad = "#!/bin/bash\necho $1\n"  # SC2086: an unquoted expansion
    (tmp_path / "ignored.sh").write_text(bad)
    make = ["make", "-s", "lint-scripts", f"BIN={BIN}"]

    clean = run(make, cwd=tmp_path)
    assert clean.returncode == 0, clean.stdout + clean.stderr

    (tmp_path / "slurm").mkdir()
    (tmp_path / "slurm" / "new.sbatch").write_text(bad)
    dirty = run(make, cwd=tmp_path)
    assert dirty.returncode != 0
    assert "slurm/new.sbatch" in dirty.stdout and "SC2086" in dirty.stdout
    assert "ignored.sh" not in dirty.stdout


# --- the entrypoint ------------------------------------------------------------------------------------------


@dataclass
class Mounts:
    """Stand-ins for what `docker run` mounts, and the environment that points the entrypoint at them."""

    root: Path
    repo: Path
    data: Path
    cache: Path
    home: Path
    image_lock: Path

    def env(self) -> dict[str, str]:
        return {
            "PATH": f"{BIN}:{os.environ['PATH']}",
            "HOME": str(self.home),
            "GIT_CONFIG_NOSYSTEM": "1",
            "DERMDL_REPO": str(self.repo),
            "DERMDL_DATA": str(self.data),
            "DERMDL_CACHE": str(self.cache),
            "DERMDL_IMAGE_LOCK": str(self.image_lock),
        }

    def entrypoint(self, *command: str) -> subprocess.CompletedProcess[str]:
        return run(["bash", str(ENTRYPOINT), *command], env=self.env(), cwd=self.root)


@pytest.fixture
def mounts(tmp_path: Path) -> Mounts:
    """A dermdl-shaped repository cloned with git (as a user's clone is), images, a cache folder, a home."""
    origin = tmp_path / "origin"
    (origin / ".dvc").mkdir(parents=True)
    (origin / ".dvc" / "config").write_text("[core]\n    analytics = false\n")
    (origin / "dvc.yaml").write_text("stages: {}\n")
    (origin / "params.yaml").write_text("data:\n  root: data/demo\n")
    (origin / "requirements.lock").write_text("torch==2.14.1\n")
    git("init", "-q", cwd=origin)
    git("add", "-A", cwd=origin)
    git("commit", "-qm", "tiny", cwd=origin)
    git("clone", "-q", str(origin), "repo", cwd=tmp_path)
    (tmp_path / "data" / "clinic").mkdir(parents=True)
    (tmp_path / "data" / "clinic" / "image.png").write_bytes(b"not really")
    for folder in ("cache", "home"):
        (tmp_path / folder).mkdir()
    shutil.copy(origin / "requirements.lock", tmp_path / "image.lock")
    return Mounts(
        tmp_path, tmp_path / "repo", tmp_path / "data", tmp_path / "cache", tmp_path / "home", tmp_path / "image.lock"
    )


def set_data_root(m: Mounts, root: str) -> None:
    (m.repo / "params.yaml").write_text(f"data:\n  root: {root}\n")


BROKEN = [
    ("no repo mounted", lambda m: setattr(m, "repo", m.root / "absent"), [], "nothing is mounted at"),
    ("empty mount point", lambda m: setattr(m, "repo", m.cache), [], "nothing is mounted at"),
    ("not a dermdl repo", lambda m: (m.repo / "dvc.yaml").unlink(), [], "is not a dermdl repository (no dvc.yaml)"),
    ("a copy, not a clone", lambda m: shutil.rmtree(m.repo / ".git"), [], "has no .git"),
    ("image from another lock", lambda m: m.image_lock.write_text("torch==2.0.0\n"), [], "rebuild the image"),
    ("data not mounted", lambda m: shutil.rmtree(m.data), ["data.root={data}/clinic"], "nothing is mounted at"),
    ("data.root outside the mount", lambda m: None, ["data.root={data}/other"], "which is not in the folder mounted"),
    ("read-write data (-S)", lambda m: None, ["data.root={data}/clinic"], "is writable from the container"),
    (
        "read-write data (params)",
        lambda m: set_data_root(m, str(m.data / "clinic")),
        [],
        "is writable from the container",
    ),
]


@pytest.mark.parametrize(("setup", "args", "message"), [case[1:] for case in BROKEN], ids=[c[0] for c in BROKEN])
def test_entrypoint_refuses_a_broken_contract_in_one_line(mounts: Mounts, setup, args: list[str], message: str) -> None:
    setup(mounts)
    marker = mounts.root / "ran"
    # The command would create the marker; the data.root=... argument reaches sh as a spare argument, as
    # `dvc exp run -S data.root=...` would carry it.
    command = ["sh", "-c", 'touch "$1"', "sh", str(marker), *(a.format(data=mounts.data) for a in args)]
    result = mounts.entrypoint(*command)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr
    assert result.stdout == ""
    assert not marker.exists()


def test_entrypoint_without_a_command(mounts: Mounts) -> None:
    result = mounts.entrypoint()
    assert (result.returncode, result.stderr.strip()) == (
        2,
        "dermdl container: no command given: e.g. dvc repro, dvc exp run, dermdl --help",
    )


def test_entrypoint_runs_the_command_in_the_clone(mounts: Mounts) -> None:
    """exec: the command's own exit status comes back; it runs in the clone with the clone's code first on
    PYTHONPATH, git trusts the clone, and an identity exists for DVC's experiment commits."""
    script = 'pwd; echo "$PYTHONPATH"; git config user.email; git status --porcelain; exit 7'
    result = mounts.entrypoint("sh", "-c", script)
    assert result.returncode == 7, result.stderr
    assert result.stderr == ""
    cwd, pythonpath, email = result.stdout.splitlines()
    assert Path(cwd) == mounts.repo
    assert pythonpath.split(":")[0] == str(mounts.repo)
    assert email == "dermdl@container.invalid"
    gitconfig = run(["git", "config", "--file", str(mounts.home / ".gitconfig"), "--get-all", "safe.directory"])
    assert gitconfig.stdout.splitlines() == [str(mounts.repo)]


def test_entrypoint_keeps_the_clones_identity(mounts: Mounts) -> None:
    git("config", "user.email", "me@clinic.invalid", cwd=mounts.repo)
    result = mounts.entrypoint("git", "config", "user.email")
    assert (result.returncode, result.stdout.strip()) == (0, "me@clinic.invalid")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the clone another owner")
def test_entrypoint_handles_git_dubious_ownership(mounts: Mounts) -> None:
    """A mounted clone belongs to the host's uid, not the container's: git refuses it until the entrypoint
    makes it a safe.directory."""
    subprocess.run(["chown", "-R", "4242:4242", str(mounts.repo)], check=True)
    plain = run(["git", "-C", str(mounts.repo), "status"], env=mounts.env())
    assert plain.returncode != 0 and "dubious ownership" in plain.stderr
    result = mounts.entrypoint("git", "status", "--porcelain")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def user_namespaces_work() -> bool:
    try:
        return run(["unshare", "-rm", "true"]).returncode == 0
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not user_namespaces_work(), reason="unshare -rm (user + mount namespace) is not permitted here")
def test_entrypoint_accepts_read_only_data_and_uses_the_cache_volume(mounts: Mounts) -> None:
    """Real mounts, as docker run makes them: the images bind-mounted read-only, a volume at the cache path.
    The entrypoint lets the command run and DVC's cache is the volume (global config, the clone untouched)."""
    set_data_root(mounts, str(mounts.data / "clinic"))
    inside = (
        'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && mount --bind "$2" "$2" && shift 2 && exec bash "$@"'
    )
    args = [str(mounts.data), str(mounts.cache), str(ENTRYPOINT), "dvc", "cache", "dir"]
    result = run(["unshare", "-rm", "bash", "-c", inside, "bash", *args], env=mounts.env(), cwd=mounts.root)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == mounts.cache
    assert not (mounts.repo / ".dvc" / "config.local").exists()
    # without a volume there (and a fresh home), DVC keeps the default cache in the clone
    set_data_root(mounts, "data/demo")
    mounts.home = mounts.root / "fresh-home"
    mounts.home.mkdir()
    plain = mounts.entrypoint("dvc", "cache", "dir")
    assert plain.returncode == 0, plain.stderr
    assert Path(plain.stdout.strip()) == mounts.repo / ".dvc" / "cache"


# --- the install script --------------------------------------------------------------------------------------


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins() -> dict[str, str]:
    lines = (ROOT / "requirements.lock").read_text().split()
    return {normalize(name): version for name, version in (line.split("==") for line in lines)}


def cuda_only(name: str) -> bool:
    """What torch's CUDA build brings; nvidia-ml-py is dvclive's pure-Python NVML binding, not CUDA."""
    return (name.startswith(("nvidia-", "cuda-")) or name == "triton") and name != "nvidia-ml-py"


def stand_in_wheel(index: Path, name: str, version: str, requires: list[str]) -> None:
    """A wheel with the metadata the PyTorch CPU index serves for this release (no CUDA requirements); pip's
    --dry-run reads only metadata. Stands in for download.pytorch.org, which this machine cannot reach."""
    file = f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {r}\n" for r in requires)
    files = {
        f"{info}/METADATA": metadata,
        f"{info}/WHEEL": "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{path},,\n" for path in [*files, f"{info}/RECORD"])
    (index / name).mkdir(parents=True)
    with zipfile.ZipFile(index / name / file, "w") as wheel:
        for path, text in files.items():
            wheel.writestr(path, text)
    (index / name / "index.html").write_text(f'<a href="{file.replace("+", "%2B")}">{file}</a>\n')


@pytest.fixture(scope="module")
def plain_venv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A venv with nothing but pip (the image's build stage starts so), and the stand-in CPU index."""
    root = tmp_path_factory.mktemp("install")
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    pins = lock_pins()
    torch_deps = ["filelock", "typing-extensions>=4.10.0", "setuptools>=77.0.3", "sympy>=1.13.3", "networkx>=2.5.1"]
    stand_in_wheel(root / "cpu", "torch", pins["torch"] + "+cpu", [*torch_deps, "jinja2", "fsspec>=0.8.5"])
    stand_in_wheel(root / "cpu", "torchvision", pins["torchvision"] + "+cpu", ["numpy", "torch>=2.14.0", "pillow"])
    return root / "venv" / "bin" / "python", root / "cpu"


def test_install_script_refuses_an_unknown_flavour() -> None:
    result = run(["bash", str(INSTALL), "rocm"])
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "install.sh: torch flavour 'rocm' is not cuda or cpu: run docker/install.sh cuda|cpu [pip arguments]"
    )


@pytest.mark.slow
@pytest.mark.parametrize("flavor", ["cpu", "cuda"])
def test_install_script_resolves_the_lock(plain_venv: tuple[Path, Path], tmp_path: Path, flavor: str) -> None:
    """pip resolves the image's dependencies exactly at the lock's pins; the CPU flavour gets the +cpu torch
    and none of the CUDA wheels, the CUDA flavour all of them; nothing needs a compiler (the slim base has none)."""
    python, cpu_index = plain_venv
    report = tmp_path / "report.json"
    env = {**os.environ, "PYTHON": str(python), "TORCH_INDEX_URL": cpu_index.as_uri()}
    result = run(["bash", str(INSTALL), flavor, "--dry-run", "--quiet", "--report", str(report)], env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    items = json.loads(report.read_text())["install"]
    resolved = {normalize(i["metadata"]["name"]): i["metadata"]["version"] for i in items}
    pins = lock_pins()
    suffix = "+cpu" if flavor == "cpu" else ""
    expected = {
        name: pins.get(name, "unpinned") + (suffix if name in ("torch", "torchvision") else "") for name in resolved
    }
    assert resolved == expected
    cuda_pins = {name for name in pins if cuda_only(name)}
    assert len(cuda_pins) >= 10  # the lock is the CUDA build's
    if flavor == "cpu":
        assert not {name for name in resolved if cuda_only(name)}
        assert "nvidia-ml-py" in resolved
    else:
        assert cuda_pins <= set(resolved)
    sdists = {normalize(i["metadata"]["name"]) for i in items if not i["download_info"]["url"].endswith(".whl")}
    assert sdists <= {"antlr4-python3-runtime"}  # pure Python: pip builds it without a compiler
