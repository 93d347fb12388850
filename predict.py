"""Segments your own images with a trained model.

    python predict.py --ckpt runs/cityscapes --input photos/ --output preds/
    python predict.py --ckpt runs/cityscapes --which best --input 'street/**/*.jpg' --output preds/ --mode slide
    python predict.py --ckpt runs/synthetic --input a.png b.jpg --output preds/ --solver rk4:1
    python predict.py --ckpt runs/cityscapes --input frames/ --output ids/ --format dataset   # labelIds

--input takes image files, folders (searched recursively) and globs, any size. Writes per
image labels/<name>.png (train ids; --format dataset: the dataset's own ids, e.g. Cityscapes
labelIds), color/<name>.png (the class palette) and overlay/<name>.jpg, and predictions.json
(per image: size, seconds, NFE, pixels per class). --solver swaps SegNode's solve for this
run (the format of evaluate.py --trajectory's recommendation: rk4:1, euler:3, dopri5@1e-2).
An unreadable file is reported on one line and skipped; an --output that already holds files
is left alone unless --overwrite.
Exit status: 0 done, 1 some inputs skipped or an ODE solve failed, 2 bad input.
"""

import os

from absl import flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file; default: the run's config.json.", lock_config=True)
flags.DEFINE_string("ckpt", None, "Training workdir, checkpoints/<step> folder, or converted-weights folder.")
flags.DEFINE_enum("which", "latest", ["latest", "best"], "For a workdir: its newest or its best checkpoint.")
flags.DEFINE_multi_string("input", None, "Image files, folders (recursive) or globs; several allowed.")
flags.DEFINE_string("output", None, "Output folder.")
flags.DEFINE_enum(
    "mode", None, ["whole", "slide", "multiscale", "hrnet"], "Inference mode (default: the run's eval.mode)."
)
flags.DEFINE_string("solver", None, "SegNode only: the ODE solve for inference, e.g. rk4:1 or dopri5@1e-2.")
flags.DEFINE_enum(
    "format", "train_ids", ["train_ids", "dataset"], "Label PNG values: train ids or the dataset's own ids."
)
flags.DEFINE_integer("batch_size", None, "Images (whole) or windows (slide) per forward pass.", lower_bound=1)
flags.DEFINE_bool("overwrite", False, "Write into an --output folder that already holds files.")
flags.DEFINE_bool("progress", True, "Show a progress bar.")

USAGE = "python predict.py --ckpt RUN --input PATH [PATH ...] --output DIR [--mode slide] [--solver rk4:1] [--format dataset]"


def main(argv):
    from segnode_jax import cli
    from segnode_jax.errors import UserError

    cli.quiet_logs()
    missing = [f"--{n}" for n in ("ckpt", "input", "output") if not FLAGS[n].value]
    if missing:
        raise UserError(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required. Usage: {USAGE}")
    from segnode_jax import scoring, segment

    # Bad inputs and an occupied output folder are found before the model is loaded.
    segment.find_inputs(FLAGS.input)
    segment.check_output(FLAGS.output, FLAGS.overwrite)
    cfg, variables, pytree_dir, description = scoring.load_model(FLAGS.ckpt, cli.read_config(FLAGS), FLAGS.which)
    scoring.refuse_classifier(cfg, "predict.py")
    summary = segment.predict_files(
        variables,
        cfg,
        FLAGS.input,
        FLAGS.output,
        mode=FLAGS.mode,
        solver=FLAGS.solver,
        fmt=FLAGS.format,
        overwrite=FLAGS.overwrite,
        batch_size=FLAGS.batch_size,
        progress=FLAGS.progress,
        metadata={"checkpoint": description},
    )
    n = summary["num_images"]
    nfe = [r["nfe"] for r in summary["images"] if r["nfe"] is not None]
    extra = f", mean NFE {sum(nfe) / len(nfe):.1f} ({summary['solver']})" if nfe else ""
    warm = [r["seconds"] for r in summary["images"] if not r["includes_compilation"]]
    if warm:
        extra += f", {1000 * sum(warm) / len(warm):.0f} ms/image once compiled"
    print(
        f"{n} image{'s' if n != 1 else ''} segmented in {summary['seconds']:.1f} s{extra}: "
        f"{os.path.join(FLAGS.output, segment.LABELS_DIR)} ({summary['label_values']}), "
        f"{segment.COLOR_DIR}/, {segment.OVERLAY_DIR}/, {segment.SUMMARY_NAME}"
    )
    return 0


if __name__ == "__main__":
    from segnode_jax import cli

    cli.run(main, usage=USAGE)
