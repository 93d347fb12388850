"""U-Node (Pinckaers & Litjens, "Neural ordinary differential equations for semantic
segmentation of individual colon glands", 2019): a U-Net whose levels are neural ODE blocks. One
of the neural-ODE segmentation methods the paper compares SegNode with (Table 1).

Follows the authors' public code (``DIAGNijmegen/neural-odes-segmentation``, ``ConvODEUNet``)
layer by layer, with its training setting as the default (``num_filters=16``,
``time_dependent=True``, ``activation="lrelu"``):

* a 1x1 convolution from RGB to ``num_filters`` channels and the activation;
* down path, ``levels`` levels: an ODE block at ``num_filters * 2**i`` channels (its output is the
  level's skip connection), a 1x1 convolution doubling the channels, the activation, bilinear
  downsampling by 2;
* an ODE block at the bottom (``num_filters * 2**levels`` channels);
* up path: bilinear upsampling to the skip's size, concatenation ``[upsampled, skip]``, a 1x1
  convolution to the skip's width, the activation, an ODE block;
* a 1x1 classifier at the input resolution.

Every ODE block solves ``dh/dt = f(t, h)`` over [t0, t1] with ``model.ode``'s settings (the
reference: Dopri5, rtol = atol = 1e-3, adjoint) through :mod:`segnode_jax.ode`, each block its own
solve; ``f`` = InstanceNorm (no affine) -> 3x3 conv -> activation -> InstanceNorm -> 3x3 conv
-> activation, the time entering every convolution as an extra first input channel when
``time_dependent``. The authors' code computes the first InstanceNorm of a time-dependent field
but convolves the un-normalised state (``out = self.norm1(x); out = self.conv1(t, x)``):
``model.unode.norm_input=False`` computes exactly that (what their trained weights expect:
``segnode_jax.convert`` asks for it); the default normalises, as the field is described.
``aux["ode"]`` sums the statistics of the ``2 * levels + 1`` solves (``nfe``: all their field
evaluations) and reports the first failure's ``result``.

Where the reference fixes sizes, this module generalises: its ``interpolate(scale_factor=...)``
needs inputs divisible by ``2**levels`` (the upsampled map must match the skip); here each
resize goes to the exact target size (``floor(size / 2)`` down, the skip's size up), which is
the same resize for sizes divisible by ``2**levels``. The classifier starts small (normal, std
0.01, the library's rule for final classifiers) instead of PyTorch's default initialisation: with
the default, the un-normalised ODE output gives large initial logits (measured: initial loss 4.6
for 5 classes) and training first spends its steps shrinking them.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from segnode_jax.errors import ConfigError
from segnode_jax.models.layers import Dtype, classifier_init, conv, dtype_of, state_dtype
from segnode_jax.models.odeblock import ODEBlock, check_ode_unet, sum_statistics
from segnode_jax.resize import resize_bilinear

ACTIVATIONS = {
    "relu": nn.relu,
    "softplus": nn.softplus,
    "lrelu": lambda x: nn.leaky_relu(x, 0.01),  # PyTorch LeakyReLU's default slope
    "swish": nn.swish,
}


def _activation(name: str):
    if name not in ACTIVATIONS:
        raise ConfigError(f"invalid model.unode.activation={name!r}; use one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def _instance_norm(x, epsilon: float = 1e-5):
    """InstanceNorm2d without affine parameters, statistics in float32 (float64 for float64)."""
    x32 = x.astype(state_dtype(x.dtype))
    mean = jnp.mean(x32, axis=(1, 2), keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=(1, 2), keepdims=True)
    return ((x32 - mean) * jax.lax.rsqrt(var + epsilon)).astype(x.dtype)


class ConvODEField(nn.Module):
    """``f(t, h)`` of one U-Node block (the reference's ``ConvODEFunc``)."""

    features: int
    time_dependent: bool = True
    activation: str = "lrelu"
    dtype: Dtype = jnp.float32
    norm_input: bool = True

    @nn.compact
    def __call__(self, t, h):
        act = _activation(self.activation)
        x = h
        for i in (1, 2):
            if i == 2 or self.norm_input:
                x = _instance_norm(x)
            if self.time_dependent:
                tt = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:3] + (1,))
                x = jnp.concatenate([tt, x], axis=-1)
            x = conv(self.features, 3, bias=True, dtype=self.dtype, name=f"conv{i}")(x.astype(self.dtype))
            x = act(x)
        return x.astype(h.dtype)


class UNode(nn.Module):
    """Returns ``(logits, aux)``: float32 logits at the input size; ``aux["ode"]`` (summed
    solver statistics), ``aux["features"]`` (the last ODE block's output, a 1-tuple)."""

    cfg: Any

    @nn.compact
    def __call__(self, images, train: bool = False):
        cfg = self.cfg
        u = cfg.unode
        check_ode_unet(cfg, "U-Node", "2 * levels + 1 separate ODEs")
        dtype = dtype_of(cfg.dtype)
        sd = state_dtype(dtype)  # the ODE states: float32 (float64 in float64 tests)
        act = _activation(str(u.activation))
        nf, levels = int(u.num_filters), int(u.levels)
        remat = bool(cfg.remat.field)

        def block(width, name):
            field = functools.partial(
                ConvODEField,
                width,
                bool(u.time_dependent),
                str(u.activation),
                dtype,
                bool(u.get("norm_input", True)),
                parent=None,
            )
            return ODEBlock(field, cfg.ode, remat, name=name)

        def conv1x1(width, name):
            return conv(width, 1, bias=True, dtype=dtype, name=name)

        stats = []
        x = act(conv1x1(nf, "input_1x1")(images.astype(dtype))).astype(sd)
        skips = []
        for i in range(levels):
            width = nf * 2**i
            x, s = block(width, f"odeblock_down{i + 1}")(x)
            stats.append(s)
            skips.append(x)
            name = f"conv_down{i + 1}_{i + 2}" if i + 1 < levels else f"conv_down{i + 1}_embed"
            x = act(conv1x1(2 * width, name)(x.astype(dtype))).astype(sd)
            x = resize_bilinear(x, (x.shape[1] // 2, x.shape[2] // 2))
        x, s = block(nf * 2**levels, "odeblock_embedding")(x)
        stats.append(s)
        for j, i in enumerate(range(levels - 1, -1, -1)):
            skip = skips[i]
            x = resize_bilinear(x, skip.shape[1:3])
            x = jnp.concatenate([x, skip], axis=-1)
            name = "conv_up_embed_1" if j == 0 else f"conv_up{j}_{j + 1}"
            x = act(conv1x1(nf * 2**i, name)(x.astype(dtype))).astype(sd)
            x, s = block(nf * 2**i, f"odeblock_up{j + 1}")(x)
            stats.append(s)
        logits = nn.Conv(
            int(cfg.num_classes), (1, 1), dtype=dtype, param_dtype=sd, kernel_init=classifier_init, name="classifier"
        )(x.astype(dtype))
        return logits.astype(sd), {"ode": sum_statistics(stats), "features": (x,)}
