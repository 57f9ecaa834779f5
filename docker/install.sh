#!/usr/bin/env bash
# Installs dermdl's locked dependencies for one torch flavour into the Python environment of $PYTHON.
# The Dockerfile's build stage runs it; it lives in a script (not in RUN lines) so tests/test_container.py can run
# the same logic in a plain venv with `--dry-run`, without a Docker engine.
#
#   docker/install.sh cuda|cpu [more pip arguments, e.g. --dry-run --report report.json]
#
# cuda: torch/torchvision from PyPI, whose Linux wheels are the CUDA 13 build and bring their CUDA libraries as
#       the nvidia-*/cuda-*/triton wheels pinned in requirements.lock; the host needs only the NVIDIA driver.
# cpu:  torch/torchvision pinned to the +cpu builds of the same versions from $TORCH_INDEX_URL (default: the
#       PyTorch CPU index), and the lock's CUDA-only pins left out: an image without ~3 GB of CUDA libraries.
# Environment: PYTHON (default python), TORCH_INDEX_URL (cpu only), DERMDL_SRC (folder with pyproject.toml and
# requirements.lock; default the repository this script lies in).
set -euo pipefail

flavor=${1:-}
if [[ $flavor != cuda && $flavor != cpu ]]; then
    echo "install.sh: torch flavour '$flavor' is not cuda or cpu: run docker/install.sh cuda|cpu [pip arguments]" >&2
    exit 2
fi
shift
src=${DERMDL_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
python=${PYTHON:-python}
torch_index=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The direct dependencies from pyproject.toml; the lock (used as constraints) pins the whole tree. The lock also
# pins the test tools, which the image leaves out.
"$python" - "$src/pyproject.toml" >"$work/requirements.txt" <<'PY'
import sys
import tomllib

with open(sys.argv[1], "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["dependencies"]))
PY

index_args=()
case $flavor in
cuda)
    cp "$src/requirements.lock" "$work/constraints.txt"
    ;;
cpu)
    # What only the CUDA build of torch pulls in: nvidia-* (but nvidia-ml-py, dvclive's pure-Python NVML
    # binding, stays pinned), cuda-* and triton. torch/torchvision become ==X+cpu: `torch==X` alone would also
    # accept PyPI's CUDA build of X.
    awk '!/^(nvidia-|cuda-|triton==)/ || /^nvidia-ml-py==/' "$src/requirements.lock" |
        sed -E 's/^(torch|torchvision)==([^+]+)$/\1==\2+cpu/' >"$work/constraints.txt"
    index_args=(--extra-index-url "$torch_index")
    ;;
esac

"$python" -m pip install -c "$work/constraints.txt" -r "$work/requirements.txt" "${index_args[@]}" "$@"
