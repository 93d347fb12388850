"""Bilinear resizing, the one home of PyTorch's ``F.interpolate(mode="bilinear")`` rules
(no antialiasing; ``align_corners`` both ways) for the three places that resize (and
:func:`resize_nearest`, ``mode="nearest"``, for HRNet-Image-Classification's fusions):

* :func:`resize_bilinear` -- NHWC arrays in a model or loss (static sizes, on device);
* :func:`resize_bilinear_np` -- host images and logits in inference (NumPy);
* :func:`resize_in_canvas` -- padded logits to padded labels while scoring (sizes traced).

All three take their source pixels from :func:`source_index`'s rule (``_traced_source_index``
is the same rule on traced sizes; a test checks they agree).
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int


def source_index(out_size: int, in_size: int, align_corners: bool = False):
    """Per output pixel of one axis: the two source pixels and the weight of the second."""
    if align_corners:
        scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
        src = np.arange(out_size, dtype=np.float64) * scale
    else:
        src = (np.arange(out_size, dtype=np.float64) + 0.5) * (in_size / out_size) - 0.5
        src = np.maximum(src, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int32), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    return i0, i1, (src - i0).astype(np.float32)


def _traced_source_index(length: int, out_size, in_size):
    """:func:`source_index` (``align_corners=False``) for ``length`` output positions of an
    axis resized from traced ``in_size`` to traced ``out_size``."""
    dst = jnp.arange(length, dtype=jnp.float32)
    scale = in_size.astype(jnp.float32) / out_size.astype(jnp.float32)
    src = jnp.maximum((dst + 0.5) * scale - 0.5, 0.0)
    i0 = jnp.minimum(jnp.floor(src).astype(jnp.int32), in_size - 1)
    i1 = jnp.minimum(i0 + 1, in_size - 1)
    return i0, i1, src - i0.astype(jnp.float32)


def resize_bilinear(
    x: Float[Array, "b h w c"], size: Sequence[int], *, align_corners: bool = False
) -> Float[Array, "b H W c"]:
    """NHWC ``x`` resized to ``size=(H, W)``: separable, two gathers and a lerp per axis, with
    index tables computed on the host."""
    out_h, out_w = int(size[0]), int(size[1])
    in_h, in_w = x.shape[1], x.shape[2]
    if (out_h, out_w) == (in_h, in_w):
        return x
    if in_h != out_h:
        i0, i1, w = source_index(out_h, in_h, align_corners)
        w = jnp.asarray(w, x.dtype)[None, :, None, None]
        x = jnp.take(x, i0, axis=1) * (1 - w) + jnp.take(x, i1, axis=1) * w
    if in_w != out_w:
        i0, i1, w = source_index(out_w, in_w, align_corners)
        w = jnp.asarray(w, x.dtype)[None, None, :, None]
        x = jnp.take(x, i0, axis=2) * (1 - w) + jnp.take(x, i1, axis=2) * w
    return x


def resize_nearest(x: Float[Array, "b h w c"], size: Sequence[int]) -> Float[Array, "b H W c"]:
    """NHWC ``x`` resized to ``size=(H, W)`` by PyTorch's ``mode="nearest"`` rule: output pixel
    ``d`` takes source pixel ``floor(d * in / out)`` (an integer factor: each pixel repeated)."""
    out_h, out_w = int(size[0]), int(size[1])
    in_h, in_w = x.shape[1], x.shape[2]
    if in_h != out_h:
        x = jnp.take(x, np.minimum((np.arange(out_h) * in_h) // out_h, in_h - 1), axis=1)
    if in_w != out_w:
        x = jnp.take(x, np.minimum((np.arange(out_w) * in_w) // out_w, in_w - 1), axis=2)
    return x


def resize_bilinear_np(x: np.ndarray, size: Sequence[int], *, align_corners: bool = False) -> np.ndarray:
    """``(H, W, ...)`` resized to ``size=(h, w)`` on the host, float32."""
    out_h, out_w = int(size[0]), int(size[1])
    x = np.asarray(x, dtype=np.float32)
    in_h, in_w = x.shape[:2]
    if in_h != out_h:
        i0, i1, w = source_index(out_h, in_h, align_corners)
        w = w.reshape((-1,) + (1,) * (x.ndim - 1))
        x = x[i0] * (1 - w) + x[i1] * w
    if in_w != out_w:
        i0, i1, w = source_index(out_w, in_w, align_corners)
        w = w.reshape((1, -1) + (1,) * (x.ndim - 2))
        x = x[:, i0] * (1 - w) + x[:, i1] * w
    return x


def resize_in_canvas(
    x: Float[Array, "h w c"], in_size: Int[Array, " 2"], canvas: tuple[int, int], out_size: Int[Array, " 2"]
) -> Float[Array, "H W c"]:
    """The valid ``in_size`` corner of ``x`` resized to ``out_size`` inside an output canvas of
    static shape ``canvas`` (sizes may be traced); canvas pixels beyond ``out_size`` hold edge
    values."""
    i0, i1, w = _traced_source_index(canvas[0], out_size[0], in_size[0])
    x = jnp.take(x, i0, axis=0) * (1 - w)[:, None, None] + jnp.take(x, i1, axis=0) * w[:, None, None]
    j0, j1, v = _traced_source_index(canvas[1], out_size[1], in_size[1])
    x = jnp.take(x, j0, axis=1) * (1 - v)[None, :, None] + jnp.take(x, j1, axis=1) * v[None, :, None]
    return x
