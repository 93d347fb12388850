"""SegNode on Cityscapes (19 classes), the paper's recipe.

    python train.py --config configs/cityscapes.py --workdir runs/cityscapes

Paper (Table 1): SegNode 81.8 mIoU on the test set (trained on train+val+coarse, ImageNet
pretrained). Switch networks with --config.model.name=hrnetv2|baseline.
"""

from segnode_jax.config import base_config


def get_config():
    cfg = base_config()
    cfg.model.num_classes = 19
    return cfg
