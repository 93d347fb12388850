"""The object-contextual representation (OCR) head of HRNet-OCR (Yuan, Chen & Wang 2020), as
the official HRNet-Semantic-Segmentation OCR branch builds it (``cfg.model.head = "ocr"``).

    feats  = concat(branch 0, branches 1-3 upsampled to branch 0)          # 15w channels
    aux    = 1x1 conv (bias) -> BN -> ReLU -> 1x1 conv (bias) to classes   # soft object regions
    x      = 3x3 conv (bias) to mid_channels -> BN -> ReLU                 # pixel representation
    region = softmax over pixels of aux, per class;  objects = region^T x  # (classes, mid)
    query  = f_pixel(x), key = f_object(objects), value = f_down(objects)  # key_channels each
    ctx    = f_up(softmax(query key^T / sqrt(key_channels)) value)         # back to mid_channels
    x      = 1x1 conv (no bias) of concat(ctx, x) -> BN -> ReLU -> channel dropout
    logits = 1x1 conv (bias) to classes

``f_pixel``/``f_object`` are two (1x1 conv without bias, BN, ReLU) units, ``f_down``/``f_up``
one. Choices read from the official code, kept here: every BatchNorm has PyTorch's default
momentum (0.1, ours 0.9) and eps 1e-5 like the rest of HRNet; the pixel-region softmax has
scale 1; the attention is scaled by ``key_channels ** -0.5``; the concatenation puts the
context first; the dropout (0.05) zeroes whole channels (``Dropout2d``) after the fusion's
ReLU and is active in training only (it needs a ``"dropout"`` RNG; without one the head is
deterministic); the branch upsampling uses the model's ``align_corners``. Parameter names
follow the official keys (``conv3x3_ocr.0`` -> ``conv3x3_ocr_0``,
``ocr_distri_head.object_context_block.f_pixel.1.0`` -> ``ocr_distri_head/
object_context_block/f_pixel_1_0``), so official HRNet-OCR checkpoints convert one to one.
The two classifiers start small (normal, std 0.01) like this library's other heads.

SegNode's ODE state is pre-activation (its field's blocks are BN-ReLU-conv units), so with
``preact=True`` each branch is normalised and rectified first (``norm_i``, as in SegNode's own
head); HRNetV2's and the Baseline's branches are already post-ReLU.

The head returns the final logits and the auxiliary (soft-region) logits, both at branch-0
(1/4) resolution; the training loss weights them 1.0 and ``train.loss.aux_weight`` (0.4, as
HRNet-OCR's ``LOSS.BALANCE_WEIGHTS``).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from segnode_jax.models.layers import Dtype, NormSpec, classifier_init, conv
from segnode_jax.resize import resize_bilinear


def _units(x, specs, norm: NormSpec, train: bool, prefix: str, dtype):
    """Official ``nn.Sequential`` of (1x1 conv without bias, BNReLU) pairs: conv at even
    indices ``{prefix}_{2k}``, BN at ``{prefix}_{2k+1}_0`` (BNReLU is itself a Sequential)."""
    for k, features in enumerate(specs):
        x = conv(features, 1, dtype=dtype, name=f"{prefix}_{2 * k}")(x)
        x = nn.relu(norm(x, train, f"{prefix}_{2 * k + 1}_0")).astype(dtype)
    return x


class ObjectAttention(nn.Module):
    """``_ObjectAttentionBlock`` (scale 1): pixels attend to the class-region representations."""

    key_channels: int
    norm: NormSpec = NormSpec()
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, objects, train: bool):
        n, h, w, c = x.shape
        k = self.key_channels
        query = _units(x, (k, k), self.norm, train, "f_pixel", self.dtype).reshape(n, h * w, k)
        key = _units(objects, (k, k), self.norm, train, "f_object", self.dtype)[:, :, 0, :]
        value = _units(objects, (k,), self.norm, train, "f_down", self.dtype)[:, :, 0, :]
        sim = jnp.einsum("npk,nqk->npq", query.astype(jnp.float32), key.astype(jnp.float32)) * (k**-0.5)
        sim = jax.nn.softmax(sim, axis=-1)
        ctx = jnp.einsum("npq,nqk->npk", sim, value.astype(jnp.float32)).reshape(n, h, w, k)
        return _units(ctx.astype(self.dtype), (c,), self.norm, train, "f_up", self.dtype)


class SpatialOCR(nn.Module):
    """``SpatialOCR_Module``: object attention, then the fusion of [context, pixels]."""

    key_channels: int
    out_channels: int
    dropout: float = 0.05
    norm: NormSpec = NormSpec()
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, objects, train: bool):
        ctx = ObjectAttention(self.key_channels, self.norm, self.dtype, name="object_context_block")(x, objects, train)
        y = jnp.concatenate([ctx.astype(self.dtype), x.astype(self.dtype)], axis=-1)
        y = _units(y, (self.out_channels,), self.norm, train, "conv_bn_dropout", self.dtype)
        deterministic = not (train and self.has_rng("dropout"))
        return nn.Dropout(self.dropout, broadcast_dims=(1, 2), deterministic=deterministic)(y)


class OCRHead(nn.Module):
    """HRNet-OCR's head over the 4 branches; returns float32 ``(logits, aux_logits)`` at
    branch-0 resolution (see the module docstring)."""

    num_classes: int
    mid_channels: int = 512
    key_channels: int = 256
    dropout: float = 0.05
    preact: bool = False
    norm: NormSpec = NormSpec()
    align_corners: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, xs: Sequence, train: bool):
        if self.preact:
            xs = [nn.relu(self.norm(x, train, f"norm_{i}")) for i, x in enumerate(xs)]
        size = xs[0].shape[1:3]
        feats = [xs[0]] + [resize_bilinear(x, size, align_corners=self.align_corners) for x in xs[1:]]
        feats = jnp.concatenate([f.astype(self.dtype) for f in feats], axis=-1)
        total = feats.shape[-1]

        aux = conv(total, 1, bias=True, dtype=self.dtype, name="aux_head_0")(feats)
        aux = nn.relu(self.norm(aux, train, "aux_head_1")).astype(self.dtype)
        aux = conv(self.num_classes, 1, bias=True, dtype=self.dtype, name="aux_head_3", kernel_init=classifier_init)(
            aux
        )
        aux = aux.astype(jnp.float32)

        x = conv(self.mid_channels, 3, bias=True, dtype=self.dtype, name="conv3x3_ocr_0")(feats)
        x = nn.relu(self.norm(x, train, "conv3x3_ocr_1")).astype(self.dtype)

        # Spatial gather: per class, the mean of the pixel representations weighted by the
        # softmax (over pixels) of that class's auxiliary logits.
        n, h, w, _ = x.shape
        region = jax.nn.softmax(aux.reshape(n, h * w, self.num_classes), axis=1)
        objects = jnp.einsum("npq,npc->nqc", region, x.reshape(n, h * w, -1).astype(jnp.float32))
        objects = objects[:, :, None, :].astype(self.dtype)  # (N, classes, 1, mid): an NCHW "K x 1 image"

        x = SpatialOCR(
            self.key_channels, self.mid_channels, self.dropout, self.norm, self.dtype, name="ocr_distri_head"
        )(x, objects, train)
        logits = conv(self.num_classes, 1, bias=True, dtype=self.dtype, name="cls_head", kernel_init=classifier_init)(x)
        return logits.astype(jnp.float32), aux
