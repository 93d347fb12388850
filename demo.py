"""A local web page for a trained model: drop in a photo, see the segmentation.

    bash scripts/install_demo.sh                              # once: Gradio (optional requirements)
    python demo.py --ckpt pretrained/camvid_small             # the shipped CamVid model
    python demo.py --ckpt runs/synthetic --port 8000
    python demo.py --ckpt pretrained/camvid_small --examples CamVid/test   # your example images

Open the printed address (http://127.0.0.1:7860 by default). The page shows the overlay, the
colour legend and each class's share of the pixels; for SegNode a solver, steps/tolerance and
the time t the ODE is solved to, with the NFE and milliseconds of each prediction. Without
--examples it offers three generated street scenes. Serves until Ctrl-C.
Exit status: 0 stopped, 2 bad input (a missing checkpoint, Gradio not installed).
"""

from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_string("ckpt", None, "Training workdir, checkpoints/<step> folder, or exported model folder.")
flags.DEFINE_enum("which", "best", ["latest", "best"], "For a workdir: its best or its newest checkpoint.")
flags.DEFINE_string("host", "127.0.0.1", "Address to serve on (0.0.0.0: reachable from other machines).")
flags.DEFINE_integer("port", 7860, "Port to serve on.", lower_bound=1, upper_bound=65535)
flags.DEFINE_multi_string("examples", None, "Example images: files, folders or globs (the first 3 are offered).")
flags.DEFINE_integer("max_side", 2048, "Uploads with a longer side are shrunk to it first.", lower_bound=16)

USAGE = "python demo.py --ckpt RUN [--port 7860] [--examples DIR]"


def main(argv):
    import importlib.util
    import os
    import tempfile

    from segnode_jax import cli
    from segnode_jax.errors import UserError

    cli.quiet_logs()
    if not FLAGS.ckpt:
        raise UserError(f"--ckpt is required. Usage: {USAGE}")
    if importlib.util.find_spec("gradio") is None:
        raise UserError("the demo needs Gradio: install it with bash scripts/install_demo.sh (requirements-demo.txt)")
    from segnode_jax import demo_app

    model = demo_app.DemoModel(FLAGS.ckpt, FLAGS.which, max_side=FLAGS.max_side)
    folder = os.path.join(tempfile.gettempdir(), "segnode_demo_examples")
    size = tuple(model.cfg.data.get("eval_size") or (240, 320))
    examples = demo_app.example_images(FLAGS.examples, folder, size)
    print(f"[segnode-jax] demo of {model.description}: http://{FLAGS.host}:{FLAGS.port}", flush=True)
    demo_app.serve(model, examples, host=FLAGS.host, port=FLAGS.port)
    return 0


if __name__ == "__main__":
    from segnode_jax import cli

    cli.run(main, usage=USAGE)
