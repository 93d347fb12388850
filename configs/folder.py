"""SegNode on your own data: a folder of images and masks, no config file to write.

    python train.py --config configs/folder.py --config.data.root=~/my_data --workdir runs/mine
    python evaluate.py --ckpt runs/mine

The folder (docs/datasets.md, "Your own data") holds ``images/`` and ``masks/`` (with or without
``train``/``val`` split folders; without them a deterministic 10 % becomes "val") and
``classes.json``, e.g. ``{"classes": ["background", "crack"]}``. It is converted into a TFDS
array_record dataset on first use (under ``$SEGNODE_DATA_DIR``; the same happens explicitly with
``python -m segnode_jax.data.prepare --dataset folder --root DIR``), and the number of classes is
taken from the class file (``model.num_classes`` stays None here).

Recipe: the paper's W48 SegNode (Dopri5, trained with the recursive-checkpoint adjoint; SGD lr 0.1, poly decay), batch 16,
512x512 crops of the images scaled by 0.5-2.0 with flips, 100 epochs, validation every 1000 steps.
For small data, a small GPU or a CPU, shrink it from the command line:
``--config.model.size=small`` (the real-data main job's 1.3M-parameter network; ``w18``, ``w32``
and ``tiny`` exist too) with ``--config.model.ode.solver=euler --config.model.ode.num_steps=2
--config.model.ode.adjoint=unrolled`` (the fast training solve on a CPU),
``--config.train.batch_size=8``, ``--config.data.crop_size="(256, 256)"``; start from converted
ImageNet weights with ``--config.init_from=DIR`` (README, "Pretrained weights"). Expected result:
depends on your data; the training log and ``evaluate.py`` report the validation mIoU.
"""

from segnode_jax import data
from segnode_jax.config import base_config, dataset_solve, placeholder


def get_config():
    cfg = base_config()
    # Training solve: Dopri5 with the recursive-checkpoint adjoint (segnode_jax.config.DATASET_SOLVE).
    dataset_solve(cfg)
    del cfg.model["num_classes"]
    cfg.model.num_classes = placeholder(int)  # None: from data.root's class file
    cfg.data = data.data_config("folder")
    cfg.train.num_epochs = 100
    cfg.train.checkpoint_every_steps = 500
    cfg.train.eval_every_steps = 1000
    cfg.train.log_every_steps = 50
    return cfg
