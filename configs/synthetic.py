"""A small SegNode trained on synthetic street scenes: the README's main job.

    python train.py --config configs/synthetic.py --workdir runs/synthetic
    python evaluate.py --ckpt runs/synthetic          # results.json + prediction images
    bash scripts/main.sh                              # both, with a fresh .venv

Nothing to download: 512 training and 64 validation street scenes (128x128, 8 classes with
Cityscapes' names and colours: road, sidewalk, building, vegetation, sky, pole, person, car;
``data.generator="street"``, docs/datasets.md) are generated on first use.
The network is SegNode at width 12 (branches of 12, 24, 48, 96 channels; one 4-branch module
of one pre-activation BasicBlock per branch as the vector field), trained with 2 fixed Euler
steps written out without a loop (``model.ode.adjoint=unrolled``: exact gradients of the
discrete solve, the fastest training solve on a CPU), SGD lr 0.1, momentum 0.9, no weight decay,
poly decay 0.9 (the paper's recipe), HRNet's OHEM cross-entropy (threshold 0.9, at least 2048
pixels per image), batch 8, 128x128 crops, 3000 steps. Exploratory 1500-step runs on 2026-12-01
(one seed each, benchmarks/README.md "Main job: accuracy"): width 8 plain cross-entropy 76.0 val
mIoU, width 8 + OHEM 80.8, width 12 + OHEM 83.0. The paper's solve
(adaptive Dopri5 + the adjoint method) is one flag away:
``--config.model.ode.solver=dopri5 --config.model.ode.num_steps=None --config.model.ode.adjoint=backsolve``
(``benchmarks/parity.py``, 2026-12-02, 200 steps: Euler x2 unrolled 57.9 +- 0.3 val mIoU over 3
seeds, Dopri5 + backsolve 57.1 and RK4 x2 + backsolve 55.2 with one seed; a training step at batch
24 took 0.48 s with Euler x2 unrolled and 40.4 s with Dopri5 + backsolve on 2 CPU cores, so Euler
x2 unrolled is the recommended training solve here: the fastest within 1 point of the paper's).

Expected result: see the README's results section (mIoU on the 64 validation images, and the
minutes the whole ``bash scripts/main.sh`` takes on a 2-core CPU).
"""

from segnode_jax import data
from segnode_jax.config import base_config


def get_config():
    cfg = base_config()
    m = cfg.model
    m.name = "segnode"
    m.num_classes = 8
    m.width = 12
    m.stem_width = 16
    m.layer1_planes = 8
    m.layer1_blocks = 1
    m.segnode.modules_per_field = 1
    m.segnode.blocks_per_branch = 1
    m.field.groups = 4
    m.ode.solver = "euler"
    m.ode.num_steps = 2
    m.ode.adjoint = "unrolled"

    d = cfg.data = data.data_config("synthetic")
    d.generator = "street"
    d.image_size = (128, 128)
    d.crop_size = (128, 128)

    t = cfg.train
    t.batch_size = 8
    t.num_steps = 3000
    # HRNet's online hard example mining: per 128x128 image, the pixels predicted below 0.9
    # and at least the 2048 hardest (1/8) -- poles, people and boundaries instead of sky.
    t.loss.ohem = True
    t.loss.ohem_threshold = 0.9
    t.loss.ohem_min_kept = 2048
    t.log_every_steps = 100
    t.checkpoint_every_steps = 500
    t.eval_every_steps = 1000
    cfg.eval.batch_size = 8
    cfg.eval.num_visualizations = 6
    # evaluate.py --trajectory: six solves (of the default nine) so that the whole main job fits
    # its 12 minutes on 2 cores; each one costs a compilation. The others: --config.eval.trajectory.sweep.
    cfg.eval.trajectory.sweep = ("euler:1", "euler:2", "rk4:1", "rk4:2", "dopri5@1e-2", "dopri5@1e-3")
    return cfg
