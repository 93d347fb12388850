"""Small building blocks shared by every model: convolutions, normalisation, bilinear resize.

Conventions (PyTorch HRNet compatible, so that official checkpoints map one to one):
3x3 convolutions pad one pixel on each side (so stride 2 gives ``ceil(H / 2)``), convolutions
carry no bias unless stated, BatchNorm uses momentum 0.9 (PyTorch 0.1) and eps 1e-5, and
bilinear resizing uses half-pixel centres (PyTorch ``align_corners=False``) unless asked.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
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


# How a convolution's gradients are computed (``model.field.conv_grads``): "xla" lets JAX
# differentiate ``lax.conv_general_dilated`` (transposed-layout convolutions); "canonical" uses
# :func:`canonical_conv`, whose gradients are written as ordinary ops in the canonical layout;
# "auto" is "canonical" for a field differentiated inside loops on a CPU, else "xla"
# (see :func:`conv_grads_for_backend`).
CONV_GRADS = ("auto", "xla", "canonical")
_DIMS = ("NHWC", "HWIO", "NHWC")


def conv_grads_for_backend(choice: str, in_loops: bool) -> str:
    """Resolves ``"auto"`` for the backend the model is traced for. XLA:CPU rewrites gradient
    convolutions into its fast kernels' layout only in a program's entry computation, so inside
    a loop (``in_loops``: the field's gradients in diffrax's solves, for every adjoint but
    "unrolled") they run on its generic convolution, 10-20x slower; there "auto" is "canonical".
    Straight-line code (the unrolled adjoint) and GPU/TPU compilers have no such gap: "xla"."""
    if choice not in CONV_GRADS:
        raise ConfigError(f"invalid model.field.conv_grads={choice!r}; use one of {CONV_GRADS}")
    if choice == "auto":
        return "canonical" if in_loops and jax.default_backend() == "cpu" else "xla"
    return choice


def _kernel_grad(xp, g, kernel_shape, strides, dilation):
    """The kernel gradient (kh, kw, I, O) of a convolution whose padded input is ``xp`` and whose
    output gradient is ``g``: for each kernel tap, the (B, Ho, Wo, I) slice of ``xp`` that tap
    multiplies, contracted with ``g`` over batch and positions (one matrix product).

    The taps are taken one at a time in a loop: written out as separate slices, XLA keeps them all
    alive at once (a copy of the input per tap; tests/models/test_layers.py holds the gradient's
    analysed memory near JAX's own), while the loop keeps one."""
    kh, kw = kernel_shape
    _, ho, wo, cout = g.shape
    cin = xp.shape[3]
    (s0, s1), (d0, d1) = strides, dilation
    g_rows = g.reshape(-1, cout)
    window = (xp.shape[0], (ho - 1) * s0 + 1, (wo - 1) * s1 + 1, cin)

    def tap_grad(k):
        i, j = k // kw, k % kw
        tap = lax.dynamic_slice(xp, (0, i * d0, j * d1, 0), window)
        tap = lax.slice(tap, (0, 0, 0, 0), window, (1, s0, s1, 1))  # the stride's positions
        return lax.dot_general(tap.reshape(-1, cin), g_rows, (((0,), (0,)), ((), ())))

    if kh * kw == 1:
        return tap_grad(0).reshape(kh, kw, cin, cout)
    dtype = jnp.result_type(xp, g)
    grads = lax.fori_loop(0, kh * kw, lambda k, acc: acc.at[k].set(tap_grad(k)), jnp.zeros((kh * kw, cin, cout), dtype))
    return grads.reshape(kh, kw, cin, cout)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def canonical_conv(x, w, strides, padding, dilation):
    """``lax.conv_general_dilated`` (NHWC input, HWIO kernel, explicit ``padding``), whose
    gradients are computed without transposed-layout convolutions: the kernel gradient as one
    matrix product per kernel tap (over batch and positions, one tap at a time: no im2col
    buffer), the input gradient as an ordinary convolution of the output gradient -- spread by
    the stride with interior padding instead of ``lhs_dilation`` -- with the flipped, transposed
    kernel. The same numbers as JAX's own gradient up to float rounding
    (tests/models/test_layers.py)."""
    return lax.conv_general_dilated(x, w, strides, padding, rhs_dilation=dilation, dimension_numbers=_DIMS)


def _canonical_conv_fwd(x, w, strides, padding, dilation):
    return canonical_conv(x, w, strides, padding, dilation), (x, w)


def _canonical_conv_bwd(strides, padding, dilation, residuals, g):
    x, w = residuals
    kh, kw, cin, cout = w.shape
    _, h, wd, _ = x.shape
    _, ho, wo, _ = g.shape
    (top, bottom), (left, right) = padding
    xp = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    dw = _kernel_grad(xp, g, (kh, kw), strides, dilation)
    # Output gradient placed at the strided positions of the padded input (interior padding),
    # then correlated with the flipped kernel: a full correlation over the padded input's size,
    # of which the input's own rows and columns are the gradient. Where the padding allows
    # (every convolution whose padding is at most its kernel's extent) the correlation's own
    # padding drops the rest, so that no padded-size buffer is written and cropped.
    (s0, s1), (d0, d1) = strides, dilation
    spread = lax.pad(g, jnp.zeros((), g.dtype), ((0, 0, 0), (0, 0, s0 - 1), (0, 0, s1 - 1), (0, 0, 0)))
    full = (
        ((kh - 1) * d0, h + top + bottom - (ho - 1) * s0 - 1),
        ((kw - 1) * d1, wd + left + right - (wo - 1) * s1 - 1),
    )
    cropped = ((full[0][0] - top, full[0][1] - bottom), (full[1][0] - left, full[1][1] - right))
    flipped = jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2)
    if min(min(p) for p in cropped) >= 0:
        dx = lax.conv_general_dilated(spread, flipped, (1, 1), cropped, rhs_dilation=dilation, dimension_numbers=_DIMS)
    else:
        dxp = lax.conv_general_dilated(spread, flipped, (1, 1), full, rhs_dilation=dilation, dimension_numbers=_DIMS)
        dx = dxp[:, top : top + h, left : left + wd, :]
    return dx.astype(x.dtype), dw.astype(w.dtype)


canonical_conv.defvjp(_canonical_conv_fwd, _canonical_conv_bwd)


def _flax_canonical_conv(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    batch_group_count=1,
    precision=None,
    preferred_element_type=None,
):
    """:func:`canonical_conv` with ``lax.conv_general_dilated``'s signature (what ``nn.Conv``
    calls) for the convolutions :func:`conv` makes: explicit padding, no input dilation, no
    groups, flax's channels-last dimension numbers."""
    expected = lax.conv_dimension_numbers(lhs.shape, rhs.shape, _DIMS)
    if (
        isinstance(padding, str)
        or tuple(lhs_dilation or (1, 1)) != (1, 1)
        or feature_group_count != 1
        or batch_group_count != 1
        or precision is not None
        or preferred_element_type is not None
        or lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) != expected
    ):
        raise ValueError("canonical_conv covers plain NHWC/HWIO convolutions with explicit padding only")
    return canonical_conv(
        lhs,
        rhs,
        tuple(window_strides),
        tuple(tuple(p) for p in padding),
        tuple(rhs_dilation or (1, 1)),
    )


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
    grads: str = "xla",
) -> nn.Conv:
    """A ``kernel x kernel`` convolution with PyTorch's symmetric ``dilation * (kernel // 2)``
    padding (a dilated 3x3 convolution keeps the size, as torchvision's and DeepLab's).
    ``grads``: how its gradients are computed, "xla" or "canonical" (:func:`canonical_conv`; the
    same function either way)."""
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
        conv_general_dilated=_flax_canonical_conv if grads == "canonical" else None,
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
