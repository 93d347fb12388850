"""PSPNet (Zhao et al., "Pyramid Scene Parsing Network", CVPR 2017), one of the paper's Table 2
comparisons.

Follows the authors' PyTorch code (``hszhao/semseg``, ``model/pspnet.py``) on the dilated
ResNet of :mod:`segnode_jax.models.resnet` (output stride 8):

* pyramid pooling (``ppm``): for each bin count in ``bins`` (1, 2, 3, 6), adaptive average
  pooling (PyTorch's bin rule), 1x1 convolution to ``C4 / len(bins)`` channels (512 for
  ResNet-50's 2048), BatchNorm, ReLU, bilinear upsampling back; concatenated after the
  backbone's output (``[x, pooled_1, ..., pooled_6]``: 4096 channels);
* classifier (``cls``): 3x3 convolution to ``channels`` (512), BatchNorm, ReLU, channel dropout
  (``Dropout2d``, 0.1), 1x1 convolution with bias to the classes;
* auxiliary head on layer3 (``aux``; ``aux_head``): 3x3 convolution to 256,
  BatchNorm, ReLU, Dropout2d 0.1, 1x1 classifier. Its logits come back in
  ``aux["aux_logits"]`` and the loss weights them ``train.loss.aux_weight`` (0.4, the paper's);
* logits upsampled to the input with ``align_corners=True`` (the authors' resize, whatever
  ``model.align_corners`` says).

Differences, chosen so that public weights convert: the authors' ResNet has a deep stem
(three 3x3 convolutions); ours is torchvision's (one 7x7), whose ImageNet checkpoints convert
with ``python -m segnode_jax.convert``. Parameters (ResNet-50, 19 classes): 46.6M without and
49.0M with the auxiliary head (docs/reproduction.md) -- not the 23.7M of the SegNode paper's
Table 2, which matches no PSPNet configuration we could identify.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from segnode_jax.models.layers import adaptive_avg_pool, conv_bn_relu, state_dtype
from segnode_jax.models.resnet import aux_fcn_head, class_conv, dropout, head_on_backbone, positive_ints
from segnode_jax.resize import resize_bilinear


class PPM(nn.Module):
    """Pyramid pooling: ``[x, up(relu(bn(conv1x1(pool_b x)))) for b in bins]`` concatenated."""

    bins: tuple[int, ...]
    momentum: float = 0.9
    epsilon: float = 1e-5
    dtype: object = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        reduction = x.shape[-1] // len(self.bins)
        out = [x]
        for i, b in enumerate(self.bins):
            y = conv_bn_relu(
                adaptive_avg_pool(x, b),
                reduction,
                1,
                train,
                (f"features_{i}_1", f"features_{i}_2"),
                momentum=self.momentum,
                epsilon=self.epsilon,
                dtype=self.dtype,
            )
            out.append(resize_bilinear(y, x.shape[1:3], align_corners=True).astype(x.dtype))
        return jnp.concatenate(out, axis=-1)


def pyramid_head(module: nn.Module, c4, cfg, train: bool, bn: dict, dtype):
    """PSPNet's head on the backbone's output ``c4`` (call inside ``module``'s compact
    ``__call__``): ``ppm``, then ``cls`` (3x3 conv-BN-ReLU, channel dropout, 1x1 classifier);
    logits at ``c4``'s resolution."""
    p = cfg.pspnet
    bins = positive_ints(p.bins, "pspnet.bins", "(1, 2, 3, 6)")
    x = PPM(bins, name="ppm", **bn)(c4, train)
    x = conv_bn_relu(x, int(p.channels), 3, train, ("cls_0", "cls_1"), **bn)
    x = dropout(float(p.dropout), train, module, channels=True)(x)
    return class_conv(cfg, dtype, "cls_4")(x)


class PSPNet(nn.Module):
    """Returns ``(logits, aux)``: float32 logits at the input size; ``aux["features"]`` (the
    backbone's output, a 1-tuple) and, with ``aux_head``, ``aux["aux_logits"]`` (at the
    backbone's resolution; the loss resizes them)."""

    cfg: Any

    @nn.compact
    def __call__(self, images, train: bool = False):
        cfg = self.cfg
        p = cfg.pspnet
        positive_ints(p.bins, "pspnet.bins", "(1, 2, 3, 6)")  # checked before the backbone is built
        dtype, bn, c3, c4 = head_on_backbone(cfg, "PSPNet", 50, images, train)
        logits = pyramid_head(self, c4, cfg, train, bn, dtype)
        out = {"features": (c4,)}
        if p.aux_head:
            out["aux_logits"] = aux_fcn_head(
                self,
                c3,
                cfg,
                int(p.aux_channels),
                ("aux_0", "aux_1", "aux_4"),
                float(p.dropout),
                channel_dropout=True,
                train=train,
                bn=bn,
                dtype=dtype,
            )
        logits = resize_bilinear(logits, images.shape[1:3], align_corners=True)
        return logits.astype(state_dtype(dtype)), out
