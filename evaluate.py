"""Evaluates a checkpoint, or scores a folder of saved predictions.

    python evaluate.py --ckpt runs/cityscapes                          # newest checkpoint, eval.mode
    python evaluate.py --ckpt runs/cityscapes --which best --mode multiscale
    python evaluate.py --ckpt runs/cityscapes --which best --mode multiscale --split test --export submit/
    python evaluate.py --ckpt runs/cityscapes/checkpoints/4000 --split val --mode slide
    python evaluate.py --ckpt converted/ --config configs/cityscapes.py  # a checkpoint without config.json
    python evaluate.py --predictions preds/ --config configs/cityscapes.py
    python evaluate.py --ckpt runs/synthetic --trajectory               # SegNode speed/accuracy curve

The run's config is read from its config.json (no --config needed); --config replaces it (and
takes --config.x=y overrides). Writes results.json (mIoU, pixel accuracy, per-class IoU, ...)
and input | ground truth | prediction PNGs into --output (default WORKDIR/eval/<split>_<mode>);
--export writes what a benchmark server takes (Cityscapes: labelIds PNGs named
<city>_<seq>_<frame>_leftImg8bit.png at full resolution, and the zip to upload). The test
split's labels are not public: its mIoU is meaningless, the exported files are what counts.
--predictions finds Cityscapes predictions as cityscapesScripts does (any file under the
folder named <city>_<seq>_<frame>*.png).
Exit status: 0 done, 1 evaluation failed (ODE solve), 2 bad input.
"""

import os

from absl import flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file; default: the run's config.json.", lock_config=True)
flags.DEFINE_string("ckpt", None, "Training workdir, checkpoints/<step> folder, or converted-weights folder.")
flags.DEFINE_enum("which", "latest", ["latest", "best"], "For a workdir: its newest or its best checkpoint.")
flags.DEFINE_string("predictions", None, "Score this folder of predicted label images instead (needs --config).")
flags.DEFINE_string("split", None, "Split to evaluate (default: data.eval_split).")
flags.DEFINE_enum("mode", None, ["whole", "slide", "multiscale", "hrnet"], "Inference mode (default: eval.mode).")
flags.DEFINE_integer("num_images", None, "Evaluate the first N images only.", lower_bound=1)
flags.DEFINE_integer(
    "batch_size", None, "Images or windows per forward pass (default: eval.batch_size).", lower_bound=1
)
flags.DEFINE_string("output", None, "Output folder for results.json and prediction images.")
flags.DEFINE_string(
    "export",
    None,
    "Also write every prediction for the benchmark server (the dataset's ids and "
    "file names, e.g. Cityscapes labelIds *_leftImg8bit.png) into this folder, and FOLDER.zip.",
)
flags.DEFINE_bool("overwrite", False, "Allow --export to be a folder that already holds files.")
flags.DEFINE_bool(
    "trajectory",
    False,
    "SegNode: mIoU along the solve and for other solvers/steps/tolerances "
    "(eval.trajectory), with a plot, prediction strips and a recommended fast-inference setting.",
)

USAGE = "python evaluate.py --ckpt RUN [--which best] [--mode whole|slide|multiscale|hrnet] | --predictions DIR --config configs/<dataset>.py"


def main(argv):
    from segnode_jax import cli
    from segnode_jax.errors import UserError

    cli.quiet_logs()
    if bool(FLAGS.ckpt) == bool(FLAGS.predictions):
        raise UserError(f"pass exactly one of --ckpt or --predictions. Usage: {USAGE}")
    from segnode_jax import evaluation, scoring
    from segnode_jax.evaluation import trajectory

    if FLAGS.predictions:
        config = cli.read_config(FLAGS)
        if config is None:
            raise UserError("--predictions needs --config configs/<dataset>.py (the dataset to score against)")
        results, out_dir = scoring.score_folder(config, FLAGS.predictions, split=FLAGS.split, output=FLAGS.output)
    elif FLAGS.trajectory:
        result, out_dir = scoring.trajectory_checkpoint(
            FLAGS.ckpt,
            cli.read_config(FLAGS),
            which=FLAGS.which,
            split=FLAGS.split,
            num_images=FLAGS.num_images,
            output=FLAGS.output,
        )
        print(trajectory.summary(result))
        print(f"results: {os.path.join(out_dir, 'trajectory.json')}, plot: {result['plot']}")
        return 0
    else:
        results, out_dir = scoring.evaluate_checkpoint(
            FLAGS.ckpt,
            cli.read_config(FLAGS),
            which=FLAGS.which,
            split=FLAGS.split,
            mode=FLAGS.mode,
            num_images=FLAGS.num_images,
            batch_size=FLAGS.batch_size,
            output=FLAGS.output,
            export=FLAGS.export,
            overwrite=FLAGS.overwrite,
        )
    print(evaluation.summary(results))
    print(f"results: {os.path.join(out_dir, 'results.json')}")
    if results.get("export"):
        print(
            f"exported for the benchmark server: {results['export']}"
            + (f", upload {results['export_zip']}" if results.get("export_zip") else "")
        )
    if results.get("visualizations"):
        print(f"prediction images (input | ground truth | prediction): {os.path.dirname(results['visualizations'][0])}")
    return 0


if __name__ == "__main__":
    from segnode_jax import cli

    cli.run(main, usage=USAGE)
