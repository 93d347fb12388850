"""SegNode on PASCAL-Context (59 classes, background ignored, 520x520), the paper's recipe.

    python -m segnode_jax.data.prepare --dataset pascal_context --manual_dir ~/downloads/pcontext
    python train.py --config configs/pascal_context.py --workdir runs/pascal_context
    python evaluate.py --ckpt runs/pascal_context --mode multiscale

Recipe (paper sec. 4.1 and 4.5; the rest as HRNetV2's 520x520 PASCAL-Context recipe): batch
16, 520x520 crops of images whose long side is 520 scaled by 0.5-2.1, flips, pixel
cross-entropy, 200 epochs over the 4,998 training images (62,400 steps at batch 16), polynomial
decay with power 0.9. The optimiser follows the model (``train.recipes``): SegNode SGD lr 0.1,
momentum 0.9, no weight decay; Baseline AdamW lr 1e-4, weight decay 0.05; HRNetV2 HRNet's
PASCAL-Context recipe, SGD lr 0.001, momentum 0.9, weight decay 1e-4 (HRNetV2+OCR: the head's
learning rate x10, as HRNet-OCR). Multi-scale test: scales
0.5-2.0 and flip, sliding 520x520 windows. Whole-image evaluation pads images to a multiple of
128 pixels so that the many image sizes compile few shapes.

Expected result (paper, Table 1): SegNode 54.1 mIoU on the validation set (59 classes,
ImageNet-pretrained, ``--config.init_from=CONVERTED_DIR``). Not yet reproduced with this code.
"""

from segnode_jax import data
from segnode_jax.config import base_config, dataset_solve


def get_config():
    cfg = base_config()
    # Training solve: Dopri5 with the recursive-checkpoint adjoint (segnode_jax.config.DATASET_SOLVE).
    dataset_solve(cfg)
    cfg.model.num_classes = 59
    cfg.data = data.data_config("pascal_context")
    cfg.data.crop_size = (520, 520)
    cfg.train.num_epochs = 200
    cfg.train.recipes.hrnetv2.update(dict(optimizer="sgd", learning_rate=0.001, momentum=0.9, weight_decay=1e-4))
    # HRNet-OCR's PASCAL-Context recipe (--config.model.name=hrnetv2 --config.model.head=ocr):
    # the same SGD with the OCR head's learning rate x10 (its NONBACKBONE_MULT).
    cfg.train.recipes.hrnetv2_ocr = dict(
        optimizer="sgd", learning_rate=0.001, momentum=0.9, weight_decay=1e-4, head_lr_mult=10.0
    )
    cfg.train.checkpoint_every_steps = 2000
    cfg.train.eval_every_steps = 10000
    cfg.train.log_every_steps = 100
    cfg.eval.pad_multiple = 128
    return cfg
