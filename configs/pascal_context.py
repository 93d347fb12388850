"""SegNode on PASCAL-Context (59 classes, background ignored, 520x520), the paper's recipe.

    python train.py --config configs/pascal_context.py --workdir runs/pascal_context

Paper (Table 1): SegNode 54.1 mIoU on the validation set.
"""

from segnode_jax.config import base_config


def get_config():
    cfg = base_config()
    cfg.model.num_classes = 59
    return cfg
