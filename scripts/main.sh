#!/usr/bin/env bash
# The main job: train a small SegNode on the offline synthetic dataset, evaluate it, and
# measure its speed/accuracy along the ODE solve and across solvers (--trajectory).
#   bash scripts/main.sh                       # creates ./.venv on first use
#   WORKDIR=runs/mine bash scripts/main.sh --config.train.num_steps=300   # extra args go to train.py
# Rerunning resumes from the newest checkpoint in $WORKDIR (a finished run just re-evaluates).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
workdir="${WORKDIR:-runs/synthetic}"
start=$(date +%s)
python train.py --config configs/synthetic.py --workdir "$workdir" "$@"
python evaluate.py --ckpt "$workdir" --which best --output "$workdir/eval"
python evaluate.py --ckpt "$workdir" --which best --trajectory --output "$workdir/eval/trajectory"
echo
echo "[segnode-jax] done in $(( ($(date +%s) - start) / 60 )) min. Outputs:"
echo "  $workdir/eval/results.json          mIoU, pixel accuracy, per-class IoU, mean NFE"
echo "  $workdir/eval/predictions/          input | ground truth | prediction PNGs"
echo "  $workdir/eval/trajectory/           trajectory.png (mIoU along the solve, solver sweep), strips/"
echo "  $workdir/metrics.jsonl              training and validation scalars per step"
echo "  $workdir/tensorboard/               the same for: tensorboard --logdir $workdir"
