#!/usr/bin/env bash
# The image's entrypoint: checks the runtime contract, then runs the command in the mounted repository.
# Every broken contract is ONE line on stderr and exit status 2 before anything runs, so a wrong `docker run`
# fails in a second, not after preprocessing.
#
# The contract (README "Docker"), each path overridable by environment for tests:
#   DERMDL_REPO  (/repo)   your dermdl clone, read-write: its code runs (PYTHONPATH), its params apply, its git
#                          records the experiments (a git repository made inside the image dies with the container)
#   DERMDL_DATA  (/data)   the images, read-only, when data.root (params.yaml or a data.root=... argument) is in it
#   DERMDL_CACHE (/cache)  when a volume is mounted there, the DVC cache (else DVC keeps it in the clone's
#                          .dvc/cache); set in DVC's global config in $HOME, never in the clone's config, which
#                          the host shares
#   DERMDL_IMAGE_LOCK      the requirements.lock the image was built from; the clone's must be the same
set -euo pipefail

repo=${DERMDL_REPO:-/repo}
data=${DERMDL_DATA:-/data}
cache=${DERMDL_CACHE:-/cache}
image_lock=${DERMDL_IMAGE_LOCK:-/opt/dermdl/requirements.lock}

fail() {
    echo "dermdl container: $*" >&2
    exit 2
}

[[ $# -gt 0 ]] || fail "no command given: e.g. dvc repro, dvc exp run, dermdl --help"

# The repository.
if [[ ! -d $repo ]] || [[ -z $(ls -A "$repo") ]]; then
    fail "nothing is mounted at $repo: run from your dermdl clone with -v \"\$PWD:$repo\""
fi
for marker in dvc.yaml params.yaml .dvc requirements.lock; do
    [[ -e $repo/$marker ]] || fail "$repo is not a dermdl repository (no $marker): mount the root of your dermdl clone there"
done
[[ -e $repo/.git ]] || fail "$repo has no .git: experiments are recorded in its git history, so mount a git clone, not a copy"
[[ -w $repo ]] || fail "$repo is not writable by uid $(id -u): mount it read-write and run with --user \"\$(id -u):\$(id -g)\""
if [[ -f $image_lock ]] && ! cmp -s "$image_lock" "$repo/requirements.lock"; then
    fail "$repo/requirements.lock differs from the lock this image was built from ($image_lock): rebuild the image from this clone (docker build -t dermdl .)"
fi

# A uid without a home (docker run --user) gets a private one: git and DVC write their global config there.
if [[ -z ${HOME:-} ]] || [[ ! -w $HOME ]]; then
    HOME=$(mktemp -d)
    export HOME
fi
# The mounted clone usually belongs to another uid than the one running here; git (and libgit2, which DVC
# uses) refuse such "dubious ownership" unless the path is a safe.directory in the global config.
git config --global --get-all safe.directory 2>/dev/null | grep -qxF "$repo" ||
    git config --global --add safe.directory "$repo"
if ! git_problem=$(git -C "$repo" rev-parse --is-inside-work-tree 2>&1 >/dev/null); then
    fail "$repo is not a usable git repository: ${git_problem%%$'\n'*}"
fi
# DVC experiments are commits: an identity is needed when neither the clone nor the caller set one.
git -C "$repo" config user.email >/dev/null || git config --global user.email "dermdl@container.invalid"
git -C "$repo" config user.name >/dev/null || git config --global user.name "dermdl container"

# The images: the last data.root=... argument (dvc exp run -S data.root=...), else params.yaml's.
data_root=""
for arg in "$@"; do
    if [[ $arg == *data.root=* ]]; then
        data_root=${arg##*data.root=}
    fi
done
if [[ -z $data_root ]]; then
    data_root=$(python - "$repo/params.yaml" 2>/dev/null <<'PY' || true
import sys

import yaml

with open(sys.argv[1], encoding="utf-8") as f:
    params = yaml.safe_load(f) or {}
print((params.get("data") or {}).get("root") or "")
PY
    )
fi
data_root=${data_root//[\"\']/}
if [[ $data_root == "$data" || $data_root == "$data"/* ]]; then
    if [[ ! -d $data ]] || [[ -z $(ls -A "$data") ]]; then
        fail "data.root is $data_root but nothing is mounted at $data: add -v /path/to/images:$data:ro"
    fi
    [[ -e $data_root ]] || fail "data.root is $data_root, which is not in the folder mounted at $data: fix data.root or the -v source"
    if [[ -w $data_root ]]; then
        fail "$data_root is writable from the container: mount the images read-only (-v /path/to/images:$data:ro)"
    fi
fi

# The DVC cache on its volume.
if mountpoint -q "$cache" 2>/dev/null; then
    [[ -w $cache ]] || fail "the DVC cache volume $cache is not writable by uid $(id -u): chown it or mount another volume"
    dvc config --global cache.dir "$cache"
fi

# The clone's code runs, not a copy baked into the image: DVC hashes the clone's dermdl/ as a stage dependency.
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
cd "$repo"
exec "$@"
