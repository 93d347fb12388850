"""HRNet-Image-Classification's head, for ImageNet pretraining of HRNetV2, the Baseline and
SegNode (``model.task="classification"``; paper sec. 4.1: "We pretrain our baseline and SegNode
networks on ImageNet").

The official ``cls_hrnet`` head over the 4 branches, module by module (names mirror its keys,
so that the official HRNet-W48-C checkpoint converts):

* ``incre_modules_{i}_0``: one Bottleneck per branch raising it to ``4 x head_channels[i]``
  channels (128, 256, 512, 1024), with a 1x1 projection;
* ``downsamp_modules_{i}``: from the highest resolution down, a 3x3 stride-2 convolution *with
  bias*, BatchNorm and ReLU, added to the next branch's increment;
* ``final_layer``: 1x1 convolution with bias to ``features`` (2048), BatchNorm, ReLU;
* global average pooling and a linear ``classifier`` to the classes (1000 for ImageNet).

SegNode's branches come from the ODE's final state, which is pre-activation: each is normalised
and rectified first (``norm_{i}``, as its segmentation head does; our choice).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from segnode_jax.errors import ConfigError
from segnode_jax.models.blocks import Bottleneck
from segnode_jax.models.layers import Dtype, NormSpec, classifier_init, conv, state_dtype

TASKS = ("segmentation", "classification")


def task_of(cfg) -> str:
    task = cfg.get("task", "segmentation")
    if task not in TASKS:
        raise ConfigError(f"model.task={task!r}; use one of {list(TASKS)}")
    if task == "classification" and cfg.get("head", "default") != "default":
        raise ConfigError(
            f"model.head={cfg.head!r} is a segmentation head; model.task=classification has its own (model.head=default)"
        )
    if task == "classification" and cfg.name not in ("hrnetv2", "baseline", "segnode"):
        raise ConfigError(
            f"model.task=classification is for hrnetv2, baseline and segnode, not model.name={cfg.name!r}"
        )
    return task


class ClassificationHead(nn.Module):
    """Returns float32 logits ``(N, num_classes)`` from the 4 branches."""

    num_classes: int
    head_channels: tuple[int, ...] = (32, 64, 128, 256)
    features: int = 2048
    norm: NormSpec = NormSpec()
    preact: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, xs: Sequence, train: bool):
        if self.preact:
            xs = [nn.relu(self.norm(x, train, f"norm_{i}")) for i, x in enumerate(xs)]
        incre = [
            Bottleneck(c, self.norm, self.dtype, name=f"incre_modules_{i}_0") for i, c in enumerate(self.head_channels)
        ]
        y = incre[0](xs[0].astype(self.dtype), train)
        for i in range(len(xs) - 1):
            down = conv(
                4 * self.head_channels[i + 1], 3, stride=2, bias=True, dtype=self.dtype, name=f"downsamp_modules_{i}_0"
            )(y)
            down = nn.relu(self.norm(down, train, f"downsamp_modules_{i}_1"))
            y = incre[i + 1](xs[i + 1].astype(self.dtype), train) + down.astype(self.dtype)
        y = conv(self.features, 1, bias=True, dtype=self.dtype, name="final_layer_0")(y)
        y = nn.relu(self.norm(y, train, "final_layer_1"))
        pooled = jnp.mean(y.astype(state_dtype(y.dtype)), axis=(1, 2))
        logits = nn.Dense(
            self.num_classes,
            dtype=state_dtype(self.dtype),
            param_dtype=state_dtype(self.dtype),
            kernel_init=classifier_init,
            name="classifier",
        )(pooled)
        return logits.astype(jnp.float32)


def classification_head(cfg, norm: NormSpec, dtype, *, preact: bool = False) -> ClassificationHead:
    c = cfg.classification
    return ClassificationHead(
        int(cfg.num_classes), tuple(int(h) for h in c.head_channels), int(c.features), norm, preact, dtype, name="head"
    )
