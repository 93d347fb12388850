#!/usr/bin/env bash
# The main job: train a small SegNode on the offline synthetic dataset, evaluate it, and
# measure its speed/accuracy along the ODE solve and across solvers (--trajectory).
#   bash scripts/main.sh                       # creates ./.venv on first use
#   WORKDIR=runs/mine bash scripts/main.sh --config.train.num_steps=300   # extra args go to train.py
# Rerunning resumes from the newest checkpoint in $WORKDIR (a finished run just re-evaluates).
set -euo pipefail
start=$(date +%s)  # the whole command: .venv creation (first run), data, training, evaluation
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
workdir="${WORKDIR:-runs/synthetic}"
t_env=$(date +%s)
python train.py --config configs/synthetic.py --workdir "$workdir" "$@"
t_train=$(date +%s)
python evaluate.py --ckpt "$workdir" --which best --output "$workdir/eval"
t_eval=$(date +%s)
python evaluate.py --ckpt "$workdir" --which best --trajectory --output "$workdir/eval/trajectory"
end=$(date +%s)
seconds=$(( end - start ))
printf '{"seconds": %d, "finished": "%s", "host_cpus": %d, "phases": {"environment": %d, "train": %d, "evaluate": %d, "trajectory": %d}}\n' \
  "$seconds" "$(date -u '+%Y-%m-%d %H:%M UTC')" "$(nproc)" \
  $(( t_env - start )) $(( t_train - t_env )) $(( t_eval - t_train )) $(( end - t_eval )) > "$workdir/main_job.json"
echo
echo "[segnode-jax] done in $(( seconds / 60 )) min $(( seconds % 60 )) s. Outputs:"
echo "  $workdir/eval/results.json          mIoU, pixel accuracy, per-class IoU, mean NFE"
echo "  $workdir/eval/predictions/          input | ground truth | prediction PNGs (titled, with a class legend)"
echo "  $workdir/eval/trajectory/           trajectory.png (mIoU along the solve, solver sweep), strips/ (t = ... panels)"
echo "  $workdir/metrics.jsonl              training and validation scalars per step"
echo "  $workdir/tensorboard/               the same for: tensorboard --logdir $workdir"
