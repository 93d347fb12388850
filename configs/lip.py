"""SegNode on LIP (20 classes including background, 473x473), the paper's recipe.

    python train.py --config configs/lip.py --workdir runs/lip

Paper (Table 1): SegNode 55.8 mIoU on the validation set.
"""

from segnode_jax.config import base_config


def get_config():
    cfg = base_config()
    cfg.model.num_classes = 20
    return cfg
