"""The residual blocks of HRNet (and ResNet): BasicBlock (official post-activation and the
paper's pre-activation form, optionally time-dependent) and Bottleneck, with the activations
they take by name. Own module so that HRNetV2, the Baseline, SegNode's field and the
classification head all import them from below."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from segnode_jax.errors import ConfigError
from segnode_jax.models.layers import Dtype, NormSpec, conv


def _with_time(x, t):
    """Appends the solve time as a constant channel (time-dependent vector fields)."""
    if t is None:
        return x
    tt = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:-1] + (1,))
    return jnp.concatenate([x, tt], axis=-1)


ACTIVATIONS = {"relu": nn.relu, "silu": nn.silu, "softplus": nn.softplus, "gelu": nn.gelu}


def activation(name: str):
    """The activation function called ``name`` (relu | silu | softplus | gelu)."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ConfigError(f"unknown activation {name!r}; use one of {sorted(ACTIVATIONS)}") from None


class BasicBlock(nn.Module):
    """HRNet's BasicBlock.

    ``preact=False`` (official): conv3x3-BN-ReLU-conv3x3-BN, + identity, ReLU.
    ``preact=True`` (paper Fig. 2, "BN, ReLU, conv" units; used by Baseline and SegNode):
    x + conv(ReLU(N(conv(ReLU(N(x)))))), with no activation after the sum. ``t`` (optional)
    is concatenated as an extra input channel of both convolutions. ``act`` names the
    activation of the pre-activation form (the official form is always ReLU). ``conv_grads``:
    how the convolutions' gradients are computed (``layers.CONV_GRADS``).
    """

    features: int
    norm: NormSpec = NormSpec()
    preact: bool = False
    dtype: Dtype = jnp.float32
    act: str = "relu"
    conv_grads: str = "xla"

    @nn.compact
    def __call__(self, x, train: bool, t=None):
        c = self.features
        if not self.preact:
            y = conv(c, 3, dtype=self.dtype, name="conv1", grads=self.conv_grads)(x)
            y = nn.relu(self.norm(y, train, "bn1"))
            y = conv(c, 3, dtype=self.dtype, name="conv2", grads=self.conv_grads)(y)
            y = self.norm(y, train, "bn2")
            return nn.relu(y + x.astype(y.dtype))
        act = activation(self.act)
        y = act(self.norm(x, train, "norm1")).astype(self.dtype)
        y = conv(c, 3, dtype=self.dtype, name="conv1", grads=self.conv_grads)(_with_time(y, t))
        y = act(self.norm(y, train, "norm2")).astype(self.dtype)
        y = conv(c, 3, dtype=self.dtype, name="conv2", grads=self.conv_grads)(_with_time(y, t))
        return x + y.astype(x.dtype)


class Bottleneck(nn.Module):
    """HRNet's (ResNet's) Bottleneck: 1x1, 3x3, 1x1 (x4 expansion), 1x1 projection if needed."""

    planes: int
    norm: NormSpec = NormSpec()
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        p = self.planes
        y = nn.relu(self.norm(conv(p, 1, dtype=self.dtype, name="conv1")(x), train, "bn1"))
        y = nn.relu(self.norm(conv(p, 3, dtype=self.dtype, name="conv2")(y), train, "bn2"))
        y = self.norm(conv(4 * p, 1, dtype=self.dtype, name="conv3")(y), train, "bn3")
        if x.shape[-1] != 4 * p:
            x = self.norm(conv(4 * p, 1, dtype=self.dtype, name="downsample_0")(x), train, "downsample_1")
        return nn.relu(y + x.astype(y.dtype))
