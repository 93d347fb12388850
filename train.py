"""Trains a segmentation model (SegNode, Baseline or HRNetV2) and validates it.

    python train.py --config configs/cityscapes.py --workdir runs/cityscapes
    python train.py --config configs/camvid.py --workdir runs/camvid_baseline --config.model.name=baseline
    python train.py --config configs/synthetic.py --workdir runs/synthetic --config.model.ode.adjoint=recursive_checkpoint

Any config field can be set with --config.a.b=value, and an optional one unset with
--config.a.b=None (e.g. --config.model.ode.num_steps=None: adaptive steps again).
Rerunning the same command resumes from the newest checkpoint in --workdir. Exit status: 0 done,
1 training failed (non-finite loss, failed ODE solve), 2 bad input (config, dataset, checkpoint).
See docs/training.md.
"""

from absl import flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/cityscapes.py.", lock_config=True)
flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, logs and config.json (resumed if it has a checkpoint)."
)
flags.mark_flags_as_required(["config", "workdir"])

USAGE = "python train.py --config configs/<dataset>.py --workdir DIR [--config.a.b=value ...]"


def main(argv):
    import sys

    from segnode_jax import cli, training

    cli.quiet_logs()
    cfg = cli.read_config(FLAGS)
    assert cfg is not None, "--config is a required flag"
    result = training.train_and_evaluate(cfg, FLAGS.workdir)
    import jax

    if jax.process_index() != 0:
        return 0
    val = result.get("val")
    summary = f"done: step {result['step']}, loss {result['loss']:.4f}"
    if val:
        summary += f", val mIoU {100 * val['miou']:.2f}"
    print(f"{summary}; checkpoints in {FLAGS.workdir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from segnode_jax import cli

    cli.run(main, usage=USAGE)
