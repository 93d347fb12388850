"""A tiny network and dataset for tests and smoke runs: width 4, one block everywhere, 32x32
synthetic images (5 classes), 4 training steps.

    python -m pytest tests                                      # uses it end to end
    python train.py --config configs/tiny.py --workdir /tmp/tiny # ~1 minute on a CPU (compilation)

Not meant to learn anything useful (expect an mIoU near chance); every code path of the full
models, the training loop, checkpoints and evaluation runs at toy size.
"""

from segnode_jax import data
from segnode_jax.config import base_config


def get_config():
    cfg = base_config()
    m = cfg.model
    m.num_classes = 5
    m.width = 4
    m.stem_width = 8
    m.layer1_planes = 4
    m.layer1_blocks = 1
    m.hrnet.stage_modules = (1, 1, 1)
    m.hrnet.stage_blocks = (1, 1, 1)
    m.baseline.stage_modules = (1, 1)
    m.baseline.stage_blocks = (1, 1)
    m.baseline.num_modules = 2
    m.baseline.blocks_per_branch = 1
    m.segnode.modules_per_field = 1
    m.segnode.blocks_per_branch = 1
    m.field.groups = 2
    m.unet.base_width = 4
    m.unet.depth = 3
    m.unode.num_filters = 4
    m.unode.levels = 2
    m.nodes_unet.base_width = 4
    m.nodes_unet.depth = 2
    m.nodes_unet.groups = 2
    m.nodes_unet.ode_blocks = ("inc", "down1", "down2", "up1", "up2")
    m.resnet.stem_width = 4
    m.resnet.blocks = (1, 1, 1, 1)
    m.pspnet.channels = 8
    m.pspnet.aux_channels = 8
    m.deeplabv3.channels = 8
    m.deeplabv3.atrous_rates = (1, 2, 3)
    m.deeplabv3.aux_channels = 8
    m.ode.rtol = 1e-2
    m.ode.atol = 1e-2
    m.ode.max_steps = 64

    d = cfg.data = data.data_config("synthetic")
    d.generator = "shapes"
    d.num_classes = 5
    d.image_size = (32, 32)
    d.num_train = 16
    d.num_val = 4
    d.crop_size = (32, 32)
    d.num_workers = 0

    t = cfg.train
    t.batch_size = 4
    t.num_steps = 4
    t.log_every_steps = 1
    t.checkpoint_every_steps = 2
    t.progress_bar = False
    cfg.eval.batch_size = 4
    cfg.eval.num_visualizations = 2
    return cfg
