"""SegNode on LIP (20 classes including background, 473x473), the paper's recipe.

    python -m segnode_jax.data.prepare --dataset lip --manual_dir ~/downloads/LIP
    python train.py --config configs/lip.py --workdir runs/lip
    python evaluate.py --ckpt runs/lip --mode multiscale    # scale 1.0 + flip (arms/legs/shoes swapped back)

Recipe (paper sec. 4.1 and 4.4; the rest as HRNetV2): batch 16, images resized to 473x473,
scaled by 0.5-1.6, 473x473 crops, flips that swap left/right classes, pixel cross-entropy,
HRNet's schedule of 150 epochs over the 30,462 training images (285,450 steps at batch 16),
polynomial decay with power 0.9. The optimiser follows the model (``train.recipes``): SegNode
SGD lr 0.1, momentum 0.9, no weight decay; Baseline AdamW lr 1e-4, weight decay 0.05;
HRNetV2 HRNet's LIP recipe, SGD lr 0.007, momentum 0.9, weight decay 5e-4. Evaluation
resizes images to 473x473 and scores predictions resized back to each label's size.

Expected result (paper, Table 1): SegNode 55.8 mIoU on the validation set (ImageNet-pretrained,
``--config.init_from=CONVERTED_DIR``). Not yet reproduced with this code.
"""

from segnode_jax import data
from segnode_jax.config import base_config, dataset_solve


def get_config():
    cfg = base_config()
    # Training solve: Dopri5 with the recursive-checkpoint adjoint (segnode_jax.config.DATASET_SOLVE).
    dataset_solve(cfg)
    cfg.model.num_classes = 20
    cfg.data = data.data_config("lip")
    cfg.train.num_epochs = 150
    cfg.train.recipes.hrnetv2.update(dict(optimizer="sgd", learning_rate=0.007, momentum=0.9, weight_decay=5e-4))
    cfg.train.checkpoint_every_steps = 2000
    cfg.train.eval_every_steps = 20000
    cfg.train.eval_num_images = 2000
    cfg.train.log_every_steps = 100
    return cfg
