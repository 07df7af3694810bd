#!/usr/bin/env bash
# The paper's protocol (sec. 3-4): 4 training runs of 20 epochs, every epoch saved,
# then all 80 checkpoints ranked by Inception Score and the top 12 kept for
# inspection (the paper then picked experiment 4, epoch 18, by eye).
#
#   bash experiments/paper_protocol.sh [RUNS_DIR] [extra train flags...]
#   bash experiments/paper_protocol.sh runs/paper --config.batch_size=32
#
# The paper does not say what differed between its 4 runs; here it is the seed.
# Rerunning the script resumes unfinished runs and evaluates only new checkpoints.
set -euo pipefail
cd "$(dirname "$0")/.."
runs_dir=${1:-runs/paper}
shift || true
workdirs=()
for seed in 0 1 2 3; do
  workdir="$runs_dir/run$seed"
  python launch.py train --config experiments/paper.py --workdir "$workdir" \
      --config.seed="$seed" "$@"
  workdirs+=("$workdir")
done
python launch.py select --workdirs "${workdirs[@]}" --metric inception_score --top 12 \
    --out "$runs_dir/selection"
