"""A tiny network for tests and smoke runs: width 4, one block everywhere, 32x32 images.

    python -m pytest tests   # uses it end to end

Not meant to learn anything useful; every code path of the full models runs at toy size.
"""

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
    m.ode.rtol = 1e-2
    m.ode.atol = 1e-2
    m.ode.max_steps = 64
    return cfg
