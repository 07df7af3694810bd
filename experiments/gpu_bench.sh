#!/usr/bin/env bash
# The GPU benchmark of issue 6, as one prepared run: the paper's config (256x256, batch
# 16, width 64) trained and run for inference in float32 and bfloat16 mixed precision,
# with the 'fast' (CPU-tuned) and 'plain' (lax, i.e. cuDNN) convolutions, the faster
# of them at batch 128 too, and the PyTorch peer on the same GPU with the same harness.
#
#   bash experiments/gpu_bench.sh OUT_DIR [PEER_BENCH_DIR]
#
# PEER_BENCH_DIR holds ../shared/bench's common.py and bench_torch.py (default
# ../shared/bench). Each measurement is its own process (clean device-memory peaks;
# one failure does not stop the rest) and appends to OUT_DIR/gpu.jsonl (ours,
# `launch.py bench` records) or OUT_DIR/peers.jsonl (../shared/bench's format); logs go
# to OUT_DIR/gpu.log. Steps start only while BUDGET_S seconds (default 420) have not
# run out, most important first; a table with the fraction of the measured matmul peak
# (model FLOPs as ../shared/bench counts them) is printed last.
# SMOKE=1 shrinks every size so the script itself can be checked on a CPU in minutes.
set -u
out=${1:?usage: gpu_bench.sh OUT_DIR [PEER_BENCH_DIR]}
peer=${2:-../shared/bench}
py=${PYTHON:-python3}
mkdir -p "$out"
log=$out/gpu.log
deadline=$(( $(date +%s) + ${BUDGET_S:-420} ))
export COLORIZE_JAX_JIT_CACHE=''   # every program compiles cold: compile times are honest
if [[ ${SMOKE:-0} == 1 ]]; then
  size=32 width=8 batch=4 big=8 steps=3 peer_steps=3
else
  size=256 width=64 batch=16 big=128 steps=30 peer_steps=30
fi

step() {  # step NAME SECONDS_NEEDED CMD...: runs CMD if that much budget is left
  local name=$1 need=$2; shift 2
  local left=$(( deadline - $(date +%s) ))
  if (( left < need )); then
    echo "== skip $name: ${left}s left, needs ~${need}s" | tee -a "$log"; return 0
  fi
  echo "== $name ($(date +%T), ${left}s left)" | tee -a "$log"
  local start=$(date +%s)
  timeout "$left" "$@" >>"$log" 2>&1
  local rc=$?
  echo "== $name: rc=$rc in $(( $(date +%s) - start ))s" | tee -a "$log"
}

ours() {  # ours DTYPE IMPL BATCH PARTS [SECONDS_NEEDED]: launch.py bench at the paper's config
  step "ours $1 $2 b$3 $4" "${5:-90}" "$py" launch.py bench --config experiments/paper.py \
    --config.image_size="$size" --config.model.width="$width" --config.batch_size="$3" \
    --config.model.compute_dtype="$1" --config.model.conv_impl="$2" \
    --parts "$4" --steps "$steps" --warmup 5 --out "$out/gpu.jsonl"
}

peer_flags=(--size "$size" --width "$width" --steps "$peer_steps" --infer-steps $((2 * peer_steps))
            --warmup 5 --max-seconds 20 --quiet-wait 0)
torch_peer() {  # torch_peer BATCH [--channels-last]
  step "torch eager b$1${2:+ $2}" 40 bash -c "\"$py\" experiments/torch_peer_on_gpu.py \"$peer\" \
    ${peer_flags[*]} --batch $1 ${2:-} >>\"$out/peers.jsonl\""
}

faster_impl() {  # faster_impl DTYPE: the conv_impl whose train step was faster at batch $batch
  "$py" - "$out/gpu.jsonl" "$1" "$batch" <<'EOF'
import json, os, sys
path, dtype, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
best = {}
# No records yet (every earlier step failed or ran out of time): the default impl.
for r in map(json.loads, open(path) if os.path.exists(path) else []):
  if r['what'] == 'train' and r['compute_dtype'] == dtype and r['batch_size'] == batch:
    best[r['conv_impl']] = max(best.get(r['conv_impl'], 0), r['images_per_s'])
print(max(best, key=best.get) if best else 'fast')
EOF
}

{ date; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,memory.used \
    --format=csv 2>&1; "$py" -c "import jax, flax, optax; print('jax', jax.__version__, \
    jax.devices(), 'flax', flax.__version__, 'optax', optax.__version__)"; } 2>&1 | tee -a "$log"

ours float32 fast "$batch" peak 30   # alone: its big buffers would count in later parts' memory peak
ours float32 fast "$batch" train,infer
ours bfloat16 fast "$batch" train,infer
torch_peer "$batch"
ours float32 plain "$batch" train,infer
ours bfloat16 plain "$batch" train,infer
ours bfloat16 "$(faster_impl bfloat16)" "$big" train,infer
ours float32 "$(faster_impl float32)" "$big" train,infer
torch_peer "$big"
torch_peer "$batch" --channels-last
step "ours peer-format b$batch" 90 bash -c "\"$py\" -m colorize_jax.bench --bench-dir \"$peer\" \
  ${peer_flags[*]} --batch $batch >>\"$out/peers.jsonl\""
ours float32 "$(faster_impl float32)" "$batch" photo

"$py" - "$out" "$peer" <<'EOF' 2>&1 | tee -a "$log"
"""The table: images/s, and model FLOPs per second over the measured matmul peak."""
import json, os, sys
out, peer = sys.argv[1], sys.argv[2]
sys.path.insert(0, peer)
import common  # ../shared/bench: the model FLOPs both implementations are judged by
load = lambda name: ([json.loads(l) for l in open(os.path.join(out, name)) if l.strip()]
                     if os.path.exists(os.path.join(out, name)) else [])
ours, peers = load('gpu.jsonl'), load('peers.jsonl')
peak = next((r for r in ours if r['what'] == 'peak'), {})
print('peak:', {k: v for k, v in peak.items() if k.endswith(('tflops', 'gbps'))})
def frac(flops_per_img, ips, dtype):
  key = 'bf16_matmul_tflops' if dtype == 'bfloat16' else 'f32_matmul_tflops'
  return f"{flops_per_img * ips / 1e12 / peak[key]:.1%}" if peak.get(key) else '-'
print(f"{'what':32s} {'img/s':>9s} {'step ms':>8s} {'compile s':>9s} {'of peak':>8s} {'dev MB':>8s}")
for r in ours:
  if r['what'] not in ('train', 'infer'):
    if r['what'] == 'colorize_photo':
      print(f"12 MP photo: {r['seconds_median']} s (median)")
    continue
  fl = common.flop_counts(r['image_size'], r['width'])['train' if r['what'] == 'train' else 'gen_fwd']
  name = f"ours {r['what']} {r['compute_dtype']} {r['conv_impl']} b{r['batch_size']}"
  print(f"{name:32s} {r['images_per_s']:9.1f} {1e3 * r['step_s_median']:8.2f} {r['compile_s']:9.1f} "
        f"{frac(fl, r['images_per_s'], r['compute_dtype']):>8s} {r.get('device_peak_mb', 0):8.0f}")
for r in peers:
  fl = common.flop_counts(r['size'], r['width'])
  for what, key, f in (('train', 'train_img_per_s', fl['train']), ('infer', 'infer_img_per_s', fl['gen_fwd'])):
    name = f"{r['framework']} {r['mode']} {what} f32 b{r['batch']}"
    print(f"{name:32s} {r[key]:9.1f} {1e3 * r['batch'] / r[key]:8.2f} {'':9s} "
          f"{frac(f, r[key], 'float32'):>8s}")
EOF
