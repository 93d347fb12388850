"""SegNode on CamVid (SegNet protocol: 11 classes, 480x360), the paper's recipe.

    python train.py --config configs/camvid.py --workdir runs/camvid

Paper (Table 1): SegNode 81.1 mIoU. Table 2 (parameters, memory, time) is measured at this
setting by benchmarks/table2.py.
"""

from segnode_jax.config import base_config


def get_config():
    cfg = base_config()
    cfg.model.num_classes = 11
    return cfg
