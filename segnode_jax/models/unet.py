"""U-Net (Ronneberger, Fischer & Brox, MICCAI 2015), one of the paper's Table 2 comparisons.

The paper gives U-Net 31.0M parameters; that is the widely used PyTorch U-Net of
``milesial/Pytorch-UNet`` (``UNet(n_channels=3, n_classes, bilinear=False)``: 31,037,568
parameters plus ``65 x classes`` in the classifier), which this module follows layer by layer:

* encoder: ``depth + 1`` levels of a double convolution (3x3 conv without bias, BatchNorm,
  ReLU, twice; ``base_width * 2**i`` channels), 2x2 max pooling between levels;
* decoder: per level a 2x2 stride-2 transposed convolution halving the channels, the upsampled
  map zero-padded to its skip connection's size (odd sizes), the skip concatenated *before*
  it, then a double convolution;
* a 1x1 classifier with bias, at the input resolution (no resize).

Unlike Ronneberger's original (unpadded convolutions, output smaller than the input) the
convolutions are padded, as in that implementation and every segmentation benchmark of it.
``model.unet.upsampling="bilinear"`` is that implementation's other variant (bilinear
upsampling, the bottom level at half width: 17.3M).

The 1x1 classifier starts small (normal, std 0.01), the library's rule for final classifiers,
instead of PyTorch's default initialisation (NODEs-UNet shares this forward pass).

``model.remat.stem`` rematerialises the encoder level by level and ``model.remat.head`` the
decoder level by level (the names the other models use for their first and last parts).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from segnode_jax.errors import ConfigError
from segnode_jax.models.heads import require_own_head
from segnode_jax.models.layers import Dtype, classifier_init, conv, dtype_of, norm, state_dtype
from segnode_jax.resize import resize_bilinear

UPSAMPLING = ("transposed", "bilinear")


class DoubleConv(nn.Module):
    """(3x3 conv -> BatchNorm -> ReLU) x 2."""

    features: int
    mid_features: int | None = None
    momentum: float = 0.9
    epsilon: float = 1e-5
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        for i, width in enumerate((self.mid_features or self.features, self.features)):
            x = conv(width, 3, dtype=self.dtype, name=f"conv{i + 1}")(x)
            x = norm(x, train, kind="batch", name=f"bn{i + 1}", momentum=self.momentum, epsilon=self.epsilon)
            x = nn.relu(x)
        return x


def _pad_to(x, size):
    """Zero-pads ``x`` (NHWC) to ``size`` as the reference does: ``diff // 2`` before, the rest
    after."""
    dh, dw = size[0] - x.shape[1], size[1] - x.shape[2]
    if dh == 0 and dw == 0:
        return x
    return jnp.pad(x, ((0, 0), (dh // 2, dh - dh // 2), (dw // 2, dw - dw // 2), (0, 0)))


class Up(nn.Module):
    """Upsample (transposed conv or bilinear), pad to the skip, concatenate, double conv."""

    features: int
    bilinear: bool
    momentum: float = 0.9
    epsilon: float = 1e-5
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, skip, train: bool):
        if self.bilinear:
            x = resize_bilinear(x, (2 * x.shape[1], 2 * x.shape[2]), align_corners=True)
            block = DoubleConv(
                self.features,
                mid_features=(x.shape[-1] + skip.shape[-1]) // 2,
                momentum=self.momentum,
                epsilon=self.epsilon,
                dtype=self.dtype,
                name="conv",
            )
        else:
            x = nn.ConvTranspose(
                x.shape[-1] // 2,
                (2, 2),
                strides=(2, 2),
                padding="VALID",
                dtype=self.dtype,
                param_dtype=state_dtype(self.dtype),
                name="up",
            )(x)
            block = DoubleConv(
                self.features, momentum=self.momentum, epsilon=self.epsilon, dtype=self.dtype, name="conv"
            )
        x = _pad_to(x, skip.shape[1:3])
        return block(jnp.concatenate([skip, x.astype(skip.dtype)], axis=-1), train)


def unet(images, train: bool, cfg, u, *, after=None):
    """The U-Net forward pass (inside a compact method, whose module gets the layers):
    ``(logits, last decoder output)``. ``u``: the U-Net section (``base_width``, ``depth``,
    ``upsampling``); ``after(x, name)``, if given, transforms each double convolution's output
    (named ``inc``, ``down1``.., ``up1``..) -- NODEs-UNet's ODE blocks."""
    if u.upsampling not in UPSAMPLING:
        section = "nodes_unet" if cfg.name == "nodes_unet" else "unet"
        raise ConfigError(f"model.{section}.upsampling={u.upsampling!r}; use one of {list(UPSAMPLING)}")
    dtype = dtype_of(cfg.dtype)
    depth, base = int(u.depth), int(u.base_width)
    bilinear = u.upsampling == "bilinear"
    bn: dict[str, Any] = dict(momentum=float(cfg.bn_momentum), epsilon=float(cfg.bn_eps), dtype=dtype)
    down_cls = nn.remat(DoubleConv, static_argnums=(2,)) if cfg.remat.stem else DoubleConv
    up_cls = nn.remat(Up, static_argnums=(3,)) if cfg.remat.head else Up
    after = after or (lambda x, name: x)

    x = images.astype(dtype)
    skips = []
    for level in range(depth + 1):
        if level:
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        width = base * 2**level
        if bilinear and level == depth:
            width //= 2  # the reference's bilinear variant halves the bottom level
        name = "inc" if level == 0 else f"down{level}"
        x = after(down_cls(width, name=name, **bn)(x, train), name)
        skips.append(x)
    x = skips.pop()
    for level in range(depth - 1, -1, -1):
        width = base * 2**level
        if bilinear and level:
            width //= 2
        name = f"up{depth - level}"
        x = after(up_cls(width, bilinear, name=name, **bn)(x, skips[level], train), name)
    logits = nn.Conv(
        int(cfg.num_classes),
        (1, 1),
        dtype=dtype,
        param_dtype=state_dtype(dtype),
        kernel_init=classifier_init,
        name="outc",
    )(x)
    return logits.astype(state_dtype(dtype)), x


class UNet(nn.Module):
    """Returns ``(logits, aux)``: float32 logits at the input size, ``aux["features"]`` (the
    last decoder level's output, a 1-tuple)."""

    cfg: Any

    @nn.compact
    def __call__(self, images, train: bool = False):
        cfg = self.cfg
        require_own_head(cfg, "U-Net", "decoder")
        logits, x = unet(images, train, cfg, cfg.unet)
        return logits, {"features": (x,)}
