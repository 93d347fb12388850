"""Segmentation heads: HRNetV2's concat head and SegNode's per-branch classifiers."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from segnode_jax.models.layers import Dtype, NormSpec, classifier_init, conv
from segnode_jax.resize import resize_bilinear


class HRNetHead(nn.Module):
    """HRNetV2's head: upsample branches 1-3 to branch 0, concat (15w channels, 720 for W48),
    1x1 conv (bias), norm, ReLU, 1x1 conv (bias) to the classes.

    Returns float32 logits at branch-0 (1/4) resolution.
    """

    num_classes: int
    norm: NormSpec = NormSpec()
    align_corners: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, xs: Sequence, train: bool):
        size = xs[0].shape[1:3]
        feats = [xs[0]] + [resize_bilinear(x, size, align_corners=self.align_corners) for x in xs[1:]]
        x = jnp.concatenate([f.astype(self.dtype) for f in feats], axis=-1)
        x = conv(x.shape[-1], 1, bias=True, dtype=self.dtype, name="last_layer_0")(x)
        x = nn.relu(self.norm(x, train, "last_layer_1")).astype(self.dtype)
        x = conv(self.num_classes, 1, bias=True, dtype=self.dtype, name="last_layer_3", kernel_init=classifier_init)(x)
        return x.astype(jnp.float32)


class SegNodeHead(nn.Module):
    """SegNode's head (paper Fig. 1): per branch, a 1x1 conv (bias) to the classes, bilinear
    upsampling to the output size, and the sum over branches.

    The ODE state is pre-activation (the vector field's blocks are BN-ReLU-conv units), so each
    branch is normalised (BatchNorm) and rectified before its classifier, as pre-activation
    ResNets do before theirs; this adds 2 x 15w parameters. (Our choice: the paper shows only
    the 1x1 convolutions and the sum.)
    """

    num_classes: int
    norm: NormSpec = NormSpec()
    align_corners: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, xs: Sequence, size: Sequence[int], train: bool):
        total = None
        for i, x in enumerate(xs):
            z = nn.relu(self.norm(x, train, f"norm_{i}")).astype(self.dtype)
            z = conv(
                self.num_classes, 1, bias=True, dtype=self.dtype, name=f"classifier_{i}", kernel_init=classifier_init
            )(z)
            z = resize_bilinear(z.astype(jnp.float32), size, align_corners=self.align_corners)
            total = z if total is None else total + z
        return total
