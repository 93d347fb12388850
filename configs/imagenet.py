"""ImageNet pretraining (paper sec. 4.1: "We pretrain our baseline and SegNode networks on
ImageNet"): the network with HRNet-Image-Classification's head, 1000 classes.

    python -m segnode_jax.data.prepare --dataset imagenet --manual_dir ~/downloads/ilsvrc2012
    python train.py --config configs/imagenet.py --workdir runs/imagenet_segnode
    python evaluate.py --ckpt runs/imagenet_segnode            # top-1 / top-5 on val
    python train.py --config configs/cityscapes.py --workdir runs/cityscapes \\
        --config.init_from=runs/imagenet_segnode               # its backbone, a fresh head

``--config.model.name=baseline`` / ``hrnetv2`` pretrain the other two networks. Your own
classes (one folder per class): ``--config.data.name=image_folder --config.data.root=DIR``
(built on first use; see docs/datasets.md).

Recipe: HRNet-Image-Classification's ``cls_hrnet_w48_sgd_lr5e-2_wd1e-4_bs32_x100.yaml`` for
every model (the paper gives none; our choice): SGD lr 0.05, momentum 0.9, Nesterov, weight decay
1e-4, batch 128 (32 on each of 4 GPUs), 100 epochs, the learning rate x0.1 at epochs 30, 60 and
90; random-resized 224 crops and flips; validation resize 256, centre crop 224; plain
cross-entropy. Another batch size: scale the learning rate with it (linear rule, lr 0.05 per 128
images), e.g. ``--config.train.batch_size=256 --config.train.learning_rate=0.1``.

Expected (HRNet-Image-Classification's README, not reproduced here): HRNet-W48-C 79.3 top-1.
Compute estimate and what has been run: docs/reproduction.md.
"""

from segnode_jax import data
from segnode_jax.config import base_config


def get_config():
    cfg = base_config()
    cfg.model.task = "classification"
    cfg.model.num_classes = None  # the dataset's (1000)
    cfg.data = data.data_config("imagenet")
    cfg.data.num_workers = 8
    t = cfg.train
    for name in ("segnode", "baseline", "hrnetv2"):
        t.recipes[name].update(dict(optimizer="sgd", learning_rate=0.05, momentum=0.9, weight_decay=1e-4))
    t.nesterov = True
    t.batch_size = 128
    t.num_epochs = 100
    t.lr_schedule = "multistep"
    t.lr_decay_at = (0.3, 0.6, 0.9)
    t.lr_decay_factor = 0.1
    t.log_every_steps = 100
    t.checkpoint_every_steps = 2000
    t.eval_every_steps = 10000  # about once per epoch (10,009 steps at batch 128)
    cfg.eval.batch_size = 128
    return cfg
