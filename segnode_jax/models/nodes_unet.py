"""NODEs-UNet (Li et al., "Robust Blood Cell Image Segmentation Method Based on Neural Ordinary
Differential Equations", Computational and Mathematical Methods in Medicine, 2021): a U-Net with
neural ODE blocks. One of the neural-ODE segmentation methods the paper compares SegNode with
(Table 1).

No code of it is public and the paper describes the network in one sentence: "the ODE-block
module was added to the nine convolutional layers in the U-Net network", the blocks' positions
and error tolerance chosen by experiment. Our reading, each part a choice where the paper is
silent:

* the U-Net of :mod:`segnode_jax.models.unet` (the 31.0M PyTorch U-Net; ``model.nodes_unet``
  sets ``base_width``, ``depth``, ``upsampling`` as ``model.unet`` does);
* after each of its nine double convolutions named in ``ode_blocks`` (``inc``, ``down1``..
  ``down4``, ``up1``..``up4``; default all nine) an ODE block at that width,
  ``dy/dt = f(t, y)`` over ``[t0, t1]`` with ``model.ode``'s settings (each its own solve through
  :class:`segnode_jax.models.odeblock.ODEBlock`; ``aux["ode"]`` sums their statistics);
* ``f``: the ODE block of Chen et al.'s torchdiffeq ODE-Net (``odenet_mnist``'s ``ODEfunc``),
  which the neural-ODE papers of that time built on: GroupNorm (``min(groups, c)`` groups) ->
  ReLU -> 3x3 convolution with bias and the time as an extra first input channel -> GroupNorm
  -> ReLU -> the same convolution -> GroupNorm. Parameters per block at ``c`` channels:
  ``18c^2 + 26c``.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from segnode_jax.errors import ConfigError
from segnode_jax.models.layers import Dtype, conv, dtype_of, group_count, state_dtype
from segnode_jax.models.odeblock import ODEBlock, check_ode_unet, sum_statistics
from segnode_jax.models.unet import unet


class ConcatConvField(nn.Module):
    """``f(t, y)`` of one block: torchdiffeq's ODE-Net ``ODEfunc`` (norm, ReLU, time-concat conv, x2, norm)."""

    features: int
    groups: int = 32
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, t, y):
        sd = state_dtype(self.dtype)

        def gn(x, name):
            layer = nn.GroupNorm(
                num_groups=group_count(self.features, self.groups), epsilon=1e-5, dtype=sd, param_dtype=sd, name=name
            )
            return layer(x.astype(sd))

        x = y
        for i in (1, 2):
            x = nn.relu(gn(x, f"norm{i}"))
            tt = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:3] + (1,))
            x = conv(self.features, 3, bias=True, dtype=self.dtype, name=f"conv{i}")(
                jnp.concatenate([tt, x], axis=-1).astype(self.dtype)
            )
        return gn(x, "norm3").astype(y.dtype)


class NODEsUNet(nn.Module):
    """Returns ``(logits, aux)``: float32 logits at the input size; ``aux["ode"]`` (the summed
    statistics of the ODE blocks' solves), ``aux["features"]`` (the last decoder output)."""

    cfg: Any

    @nn.compact
    def __call__(self, images, train: bool = False):
        cfg = self.cfg
        n = cfg.nodes_unet
        check_ode_unet(cfg, "NODEs-UNet", "one ODE per block")
        depth = int(n.depth)
        names = ("inc",) + tuple(f"down{i}" for i in range(1, depth + 1)) + tuple(f"up{i}" for i in range(1, depth + 1))
        chosen = tuple(n.ode_blocks)
        unknown = [b for b in chosen if b not in names]
        if unknown:
            raise ConfigError(f"model.nodes_unet.ode_blocks has {unknown}; choose among {list(names)} (depth {depth})")
        dtype = dtype_of(cfg.dtype)
        stats = []

        def after(x, name):
            if name not in chosen:
                return x
            field = functools.partial(ConcatConvField, x.shape[-1], int(n.groups), dtype, parent=None)
            y, s = ODEBlock(field, cfg.ode, bool(cfg.remat.field), name=f"ode_{name}")(x.astype(state_dtype(dtype)))
            stats.append(s)
            return y.astype(x.dtype)

        logits, x = unet(images, train, cfg, n, after=after)
        aux: dict[str, Any] = {"features": (x,)}
        if stats:
            aux["ode"] = sum_statistics(stats)
        return logits, aux
