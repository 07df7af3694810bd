#!/usr/bin/env bash
# The paper's protocol (sec. 3-4): 4 training runs of 20 epochs, every epoch saved,
# then all 80 checkpoints ranked by Inception Score and the top 12 kept for
# inspection (the paper then picked experiment 4, epoch 18, by eye).
#
#   bash experiments/paper_protocol.sh [RUNS_DIR] [extra train flags...]
#   bash experiments/paper_protocol.sh runs/paper --config.batch_size=32
#   SELECT_FLAGS='--inception-weights inception_v3.h5' bash experiments/paper_protocol.sh
#
# RUNS_DIR (default runs/paper) is relative to where it is started from; PYTHON picks the
# interpreter (default: python); SELECT_FLAGS are added to the final `select` (e.g. a
# weights file on a machine without internet, or --fallback-metric psnr).
# The paper does not say what differed between its 4 runs; here it is the seed.
# Rerunning the script resumes unfinished runs and evaluates only new checkpoints.
set -euo pipefail
runs_dir=runs/paper
if [[ $# -gt 0 && $1 != -* ]]; then   # a first argument that is a flag is a train flag
  runs_dir=$1
  shift
fi
mkdir -p "$runs_dir"
runs_dir=$(cd "$runs_dir" && pwd)
python=${PYTHON:-python}
read -r -a select_flags <<< "${SELECT_FLAGS:-}"
cd "$(dirname "$0")/.."
workdirs=()
for seed in 0 1 2 3; do
  workdir="$runs_dir/run$seed"
  "$python" launch.py train --config experiments/paper.py --workdir "$workdir" \
      --config.seed="$seed" "$@"
  workdirs+=("$workdir")
done
"$python" launch.py select --workdirs "${workdirs[@]}" --metric inception_score --top 12 \
    --out "$runs_dir/selection" ${select_flags[@]+"${select_flags[@]}"}
