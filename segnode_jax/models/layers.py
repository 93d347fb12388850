"""Small building blocks shared by every model: convolutions, normalisation, bilinear resize.

Conventions (PyTorch HRNet compatible, so that official checkpoints map one to one):
3x3 convolutions pad one pixel on each side (so stride 2 gives ``ceil(H / 2)``), convolutions
carry no bias unless stated, BatchNorm uses momentum 0.9 (PyTorch 0.1) and eps 1e-5, and
bilinear resizing uses half-pixel centres (PyTorch ``align_corners=False``) unless asked.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jaxtyping import Array, Float

from segnode_jax.errors import ConfigError

Dtype = Any

# He-normal over fan-out, as torchvision / HRNet-ImageNet train from scratch.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# Final classifiers start small (normal, std 0.01, as mmsegmentation's decode heads) so that
# the initial prediction is near uniform whatever the width.
classifier_init = nn.initializers.normal(0.01)


DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16, "float64": jnp.float64}


def dtype_of(name: str) -> Dtype:
    """Maps a config dtype name to a jnp dtype ("float64" needs ``jax_enable_x64``; tests)."""
    try:
        return DTYPES[name]
    except KeyError:
        raise ConfigError(f"unknown model.dtype={name!r}; use one of {sorted(DTYPES)}") from None


def conv(
    features: int,
    kernel: int,
    *,
    stride: int = 1,
    dilation: int = 1,
    bias: bool = False,
    dtype: Dtype = jnp.float32,
    name: str | None = None,
    kernel_init=conv_init,
) -> nn.Conv:
    """A ``kernel x kernel`` convolution with PyTorch's symmetric ``dilation * (kernel // 2)``
    padding (a dilated 3x3 convolution keeps the size, as torchvision's and DeepLab's)."""
    pad = dilation * (kernel // 2)
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        kernel_dilation=(dilation, dilation),
        padding=((pad, pad), (pad, pad)),
        use_bias=bias,
        dtype=dtype,
        param_dtype=state_dtype(dtype),
        kernel_init=kernel_init,
        name=name,
    )


def state_dtype(dtype) -> Dtype:
    """float32 for every compute dtype but float64 (kept for float64 tests)."""
    return jnp.float64 if jnp.dtype(dtype) == jnp.float64 else jnp.float32


def group_count(channels: int, groups: int) -> int:
    """Number of GroupNorm groups for ``channels``: the largest divisor of it <= ``groups``."""
    return max(g for g in range(1, min(groups, channels) + 1) if channels % g == 0)


def norm(
    x: Float[Array, "b h w c"],
    train: bool,
    *,
    kind: str,
    name: str,
    groups: int = 16,
    momentum: float = 0.9,
    epsilon: float = 1e-5,
) -> Float[Array, "b h w c"]:
    """Creates (inside the calling module's compact method) and applies a normalisation.

    ``"batch"``: BatchNorm with running statistics (collection ``batch_stats``); in training it
    normalises with the statistics of the whole global batch, also when the batch is sharded
    over devices (what PyTorch users know as SyncBatchNorm). ``"group"``: GroupNorm, a pure
    function of its input (used inside the ODE vector field). ``"none"``: identity.
    Statistics are computed in float32 whatever the compute dtype.
    """
    if kind == "none":
        return x
    dtype = state_dtype(x.dtype)
    if kind == "batch":
        layer = nn.BatchNorm(momentum=momentum, epsilon=epsilon, dtype=dtype, param_dtype=dtype, name=name)
        y = layer(x.astype(dtype), use_running_average=not train)
    elif kind == "group":
        layer = nn.GroupNorm(
            num_groups=group_count(x.shape[-1], groups),
            epsilon=epsilon,
            dtype=dtype,
            param_dtype=dtype,
            name=name,
        )
        y = layer(x.astype(dtype))
    else:
        raise ConfigError(f"unknown normalisation {kind!r}; use 'batch', 'group' or 'none'")
    return y.astype(x.dtype)


def branch_sizes(height: int, width: int, num_branches: int = 4) -> list[tuple[int, int]]:
    """Spatial sizes of the branches for an input image: stem /4, then /2 per branch."""
    h, w = math.ceil(math.ceil(height / 2) / 2), math.ceil(math.ceil(width / 2) / 2)
    sizes = [(h, w)]
    for _ in range(num_branches - 1):
        h, w = math.ceil(h / 2), math.ceil(w / 2)
        sizes.append((h, w))
    return sizes


@dataclasses.dataclass(frozen=True)
class NormSpec:
    """Which normalisation a layer uses and its hyper-parameters (see ``layers.norm``)."""

    kind: str = "batch"
    groups: int = 16
    momentum: float = 0.9
    epsilon: float = 1e-5

    def __call__(self, x, train: bool, name: str):
        return norm(
            x,
            train,
            kind=self.kind,
            name=name,
            groups=self.groups,
            momentum=self.momentum,
            epsilon=self.epsilon,
        )


def conv_bn_relu(
    x,
    features: int,
    kernel: int,
    train: bool,
    names: tuple[str, str],
    *,
    dilation: int = 1,
    momentum: float = 0.9,
    epsilon: float = 1e-5,
    dtype: Dtype = jnp.float32,
):
    """``relu(bn(conv(x)))`` with a bias-free convolution (inside a compact method); ``names``:
    the convolution's and the BatchNorm's (e.g. PyTorch's ``("cls_0", "cls_1")``)."""
    x = conv(features, kernel, dilation=dilation, dtype=dtype, name=names[0])(x)
    return nn.relu(norm(x, train, kind="batch", name=names[1], momentum=momentum, epsilon=epsilon))


def _pool_matrix(size: int, bins: int, dtype) -> jnp.ndarray:
    rows = []
    for i in range(bins):
        start, end = (i * size) // bins, -((-(i + 1) * size) // bins)
        rows.append([1.0 / (end - start) if start <= j < end else 0.0 for j in range(size)])
    return jnp.asarray(rows, dtype)


def adaptive_avg_pool(x: Float[Array, "b h w c"], bins: int) -> Float[Array, "b bins bins c"]:
    """PyTorch's ``AdaptiveAvgPool2d(bins)``: output cell ``i`` averages the input rows
    ``floor(i h / bins) .. ceil((i + 1) h / bins) - 1`` (overlapping windows when ``bins`` does
    not divide the size), likewise for columns; computed in float32."""
    dtype = state_dtype(x.dtype)
    ph, pw = _pool_matrix(x.shape[1], bins, dtype), _pool_matrix(x.shape[2], bins, dtype)
    return jnp.einsum("ih,jw,bhwc->bijc", ph, pw, x.astype(dtype)).astype(x.dtype)
