"""SegNode on Cityscapes (19 classes), the paper's recipe.

    python -m segnode_jax.data.prepare --dataset cityscapes --manual_dir ~/downloads/cityscapes
    python train.py --config configs/cityscapes.py --workdir runs/cityscapes
    python evaluate.py --ckpt runs/cityscapes --mode multiscale

Recipe (paper sec. 4.1; the rest as HRNetV2, whose pipeline the paper follows): batch 16,
512x1024 crops of the 1024x2048 frames scaled by 0.5-2.1 with flips, class-weighted pixel
cross-entropy, HRNet's schedule of 484 epochs over the 2975 training images (89,540 steps at
batch 16), polynomial decay with power 0.9. The optimiser follows the model
(``train.recipes``): SegNode SGD lr 0.1, momentum 0.9, no weight decay; with
``--config.model.name=baseline`` AdamW lr 1e-4, weight decay 0.05; with ``hrnetv2`` HRNet's
SGD lr 0.01, momentum 0.9, weight decay 5e-4. Multi-scale test: scales 0.5-1.75 and flip.

Expected result (paper, Table 1): SegNode 81.8 mIoU on the Cityscapes *test* set, trained on
train+val+coarse (``--config.data.use_coarse=True --config.data.train_split=train+val+train_extra``)
from ImageNet-pretrained weights (``--config.init_from=CONVERTED_DIR``), multi-scale + flip
test. Not yet reproduced with this code (needs 8+ GPUs for days).
"""

from segnode_jax import data
from segnode_jax.config import base_config, dataset_solve


def get_config():
    cfg = base_config()
    # Training solve: Dopri5 with the recursive-checkpoint adjoint (segnode_jax.config.DATASET_SOLVE).
    dataset_solve(cfg)
    cfg.model.num_classes = 19
    cfg.data = data.data_config("cityscapes")
    cfg.train.num_epochs = 484
    cfg.train.recipes.hrnetv2.update(dict(optimizer="sgd", learning_rate=0.01, momentum=0.9, weight_decay=5e-4))
    cfg.train.checkpoint_every_steps = 2000
    cfg.train.eval_every_steps = 10000
    cfg.train.log_every_steps = 100
    return cfg
