"""DeepLabv3 (Chen et al., "Rethinking Atrous Convolution for Semantic Image Segmentation",
2017), one of the paper's Table 2 comparisons.

The paper's 58.6M parameters are torchvision's ``deeplabv3_resnet101`` without its auxiliary
classifier (58,630,997 at 21 classes); this module follows it layer by layer, with its module
names, so that torchvision's checkpoints convert (``python -m segnode_jax.convert``):

* backbone: the dilated ResNet-101 of :mod:`segnode_jax.models.resnet`, output stride 8;
* ``classifier_0`` (ASPP): five parallel branches at ``channels`` (256) -- a 1x1 convolution,
  three 3x3 convolutions with dilation ``atrous_rates`` (12, 24, 36), and image pooling (global
  average, 1x1 convolution, broadcast back) -- each with BatchNorm and ReLU; concatenated, 1x1
  projection with BatchNorm, ReLU and dropout 0.5;
* ``classifier_1..4``: 3x3 convolution, BatchNorm, ReLU, 1x1 classifier with bias;
* optional auxiliary FCN head on layer3 (``aux_head``; torchvision's ``aux_classifier``: 3x3
  convolution to 256, BatchNorm, ReLU, dropout 0.1, 1x1 classifier), its logits in
  ``aux["aux_logits"]`` weighted by ``train.loss.aux_weight`` (torchvision's reference: 0.5);
* logits upsampled to the input with ``align_corners=False`` (torchvision's resize, whatever
  ``model.align_corners`` says).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from segnode_jax.models.layers import conv_bn_relu, state_dtype
from segnode_jax.models.resnet import aux_fcn_head, class_conv, dropout, head_on_backbone, positive_ints
from segnode_jax.resize import resize_bilinear


class ASPP(nn.Module):
    """torchvision's ASPP (``convs_0`` 1x1, ``convs_1..3`` dilated 3x3, ``convs_4`` image pooling,
    ``project``)."""

    channels: int
    rates: tuple[int, ...]
    dropout: float = 0.5
    momentum: float = 0.9
    epsilon: float = 1e-5
    dtype: object = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        bn: dict[str, Any] = dict(momentum=self.momentum, epsilon=self.epsilon, dtype=self.dtype)
        outs = [conv_bn_relu(x, self.channels, 1, train, ("convs_0_0", "convs_0_1"), **bn)]
        for i, rate in enumerate(self.rates, start=1):
            outs.append(conv_bn_relu(x, self.channels, 3, train, (f"convs_{i}_0", f"convs_{i}_1"), dilation=rate, **bn))
        i = len(self.rates) + 1
        pooled = jnp.mean(x.astype(state_dtype(x.dtype)), axis=(1, 2), keepdims=True).astype(x.dtype)
        pooled = conv_bn_relu(pooled, self.channels, 1, train, (f"convs_{i}_1", f"convs_{i}_2"), **bn)
        outs.append(jnp.broadcast_to(pooled, (*x.shape[:3], self.channels)))  # bilinear from 1x1 = constant
        y = conv_bn_relu(jnp.concatenate(outs, axis=-1), self.channels, 1, train, ("project_0", "project_1"), **bn)
        return dropout(self.dropout, train, self, channels=False)(y)


class DeepLabV3(nn.Module):
    """Returns ``(logits, aux)``: float32 logits at the input size; ``aux["features"]`` (the
    backbone's output, a 1-tuple) and, with ``aux_head``, ``aux["aux_logits"]`` (at the
    backbone's resolution; the loss resizes them)."""

    cfg: Any

    @nn.compact
    def __call__(self, images, train: bool = False):
        cfg = self.cfg
        d = cfg.deeplabv3
        rates = positive_ints(d.atrous_rates, "deeplabv3.atrous_rates", "(12, 24, 36)")
        channels = int(d.channels)
        dtype, bn, c3, c4 = head_on_backbone(cfg, "DeepLabv3", 101, images, train)
        x = ASPP(channels, rates, float(d.dropout), name="classifier_0", **bn)(c4, train)
        x = conv_bn_relu(x, channels, 3, train, ("classifier_1", "classifier_2"), **bn)
        logits = class_conv(cfg, dtype, "classifier_4")(x)
        out = {"features": (c4,)}
        if d.aux_head:
            names = ("aux_classifier_0", "aux_classifier_1", "aux_classifier_4")
            out["aux_logits"] = aux_fcn_head(
                self, c3, cfg, int(d.aux_channels), names, 0.1, channel_dropout=False, train=train, bn=bn, dtype=dtype
            )
        logits = resize_bilinear(logits, images.shape[1:3], align_corners=False)
        return logits.astype(state_dtype(dtype)), out
