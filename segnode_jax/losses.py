"""Segmentation losses: pixel cross-entropy with an ignore index, class weights and OHEM.

Both losses compare logits and labels at the *label* resolution: logits of another size are
resized bilinearly first (as HRNet does when the network's output is smaller than the crop).

* :func:`cross_entropy` -- PyTorch's ``CrossEntropyLoss(weight=w, ignore_index=255)``: the
  weighted mean ``sum_i w[y_i] l_i / sum_i w[y_i]`` over the non-ignored pixels of the batch.
* :func:`ohem_cross_entropy` -- HRNet's ``OhemCrossEntropy``: per image, the valid pixels
  whose predicted probability of the true class is below ``max(threshold, p_k)`` are kept,
  ``p_k`` being the valid probabilities sorted ascending at index ``min(min_kept, valid - 1)``
  (so about ``min_kept`` pixels are kept when nearly all are easy), and the loss is the plain
  mean of the kept (weighted) pixel losses over the batch. HRNet counts ``min_kept`` over the
  images of one GPU; here it is per image, so that the loss does not depend on how the global
  batch is split over devices.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from segnode_jax.labels import IGNORE_INDEX  # noqa: E402,F401 - re-exported
from segnode_jax.resize import resize_bilinear


def logits_at_label_size(logits: Float[Array, "n h w c"], labels: Int[Array, "n H W"]) -> Float[Array, "n H W c"]:
    """Bilinearly resizes logits to the labels' spatial size (PyTorch's ``align_corners=False``;
    a no-op when the sizes match)."""
    return resize_bilinear(logits, tuple(labels.shape[1:3]), align_corners=False)


def pixel_losses(
    logits: Float[Array, "n h w c"],
    labels: Int[Array, "n h w"],
    class_weights: Float[Array, " c"] | None = None,
    *,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[Float[Array, "n h w"], Float[Array, "n h w"], Float[Array, "n h w"]]:
    """Per-pixel cross-entropy at the labels' resolution.

    Arguments:
      logits: float ``(N, h, w, C)``; resized to the labels' size if different.
      labels: int ``(N, H, W)`` train ids, ``ignore_index`` = ignored.
      class_weights: optional ``(C,)`` weights of the classes.
      ignore_index: label value of ignored pixels.

    Returns:
      ``(weighted_loss, weight, prob)``, each ``(N, H, W)`` float32: ``w[y] * -log p(y)``
      (0 at ignored pixels), ``w[y]`` (0 at ignored pixels) and ``p(y)`` (1 at ignored pixels).
    """
    logits = logits_at_label_size(logits, labels).astype(jnp.float32)
    num_classes = logits.shape[-1]
    valid = labels != ignore_index
    target = jnp.where(valid, labels, 0).astype(jnp.int32)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(log_probs, target[..., None], axis=-1)[..., 0]
    if class_weights is None:
        weight = valid.astype(jnp.float32)
    else:
        cw = jnp.asarray(class_weights, jnp.float32)
        if cw.shape != (num_classes,):
            raise ValueError(f"class_weights has shape {cw.shape}, expected ({num_classes},)")
        weight = jnp.where(valid, cw[target], jnp.float32(0))
    prob = jnp.where(valid, jnp.exp(-nll), jnp.float32(1))
    return weight * nll, weight, prob


def cross_entropy(
    logits: Float[Array, "n h w c"],
    labels: Int[Array, "n h w"],
    class_weights: Float[Array, " c"] | None = None,
    *,
    ignore_index: int = IGNORE_INDEX,
) -> Float[Array, ""]:
    """Weighted mean pixel cross-entropy over the non-ignored pixels (0 if there are none)."""
    loss, weight, _ = pixel_losses(logits, labels, class_weights, ignore_index=ignore_index)
    return jnp.sum(loss) / jnp.maximum(jnp.sum(weight), jnp.float32(1e-12))


def ohem_cross_entropy(
    logits: Float[Array, "n h w c"],
    labels: Int[Array, "n h w"],
    class_weights: Float[Array, " c"] | None = None,
    *,
    threshold: float = 0.9,
    min_kept: int = 131072,
    ignore_index: int = IGNORE_INDEX,
) -> Float[Array, ""]:
    """HRNet's online hard example mining cross-entropy (see the module docstring).

    Arguments:
      logits, labels, class_weights, ignore_index: as :func:`cross_entropy`.
      threshold: pixels predicted with probability below this are "hard" and kept.
      min_kept: about this many of the hardest pixels are kept per image when nearly all
        pixels are easier than ``threshold``.

    Returns:
      The mean weighted loss over the kept pixels of the batch.
    """
    loss, _, prob = pixel_losses(logits, labels, class_weights, ignore_index=ignore_index)
    n = loss.shape[0]
    flat_prob = prob.reshape(n, -1)
    valid = (labels != ignore_index).reshape(n, -1)
    # Ignored pixels have p = 1 and sort last; HRNet takes the valid probabilities sorted
    # ascending, and their value at index min(min_kept, num_valid - 1).
    ascending = jnp.sort(flat_prob, axis=1)
    num_valid = jnp.sum(valid, axis=1).astype(jnp.int32)
    index = jnp.clip(jnp.minimum(jnp.int32(min_kept), num_valid - 1), 0, flat_prob.shape[1] - 1)
    kth = jnp.take_along_axis(ascending, index[:, None], axis=1)
    cutoff = jnp.maximum(kth, jnp.float32(threshold))
    keep = valid & (flat_prob < cutoff)
    kept_loss = jnp.where(keep, loss.reshape(n, -1), jnp.float32(0))
    return jnp.sum(kept_loss) / jnp.maximum(jnp.sum(keep).astype(jnp.float32), jnp.float32(1))


def segmentation_loss(logits, labels, class_weights, loss_cfg) -> Float[Array, ""]:
    """The loss selected by ``cfg.train.loss`` (cross-entropy, or OHEM with ``ohem=True``)."""
    if loss_cfg.get("ohem", False):
        return ohem_cross_entropy(
            logits,
            labels,
            class_weights,
            threshold=float(loss_cfg.ohem_threshold),
            min_kept=int(loss_cfg.ohem_min_kept),
        )
    return cross_entropy(logits, labels, class_weights)


def classification_loss(
    logits: Float[Array, "n c"], labels: Int[Array, " n"], label_smoothing: float = 0.0
) -> Float[Array, ""]:
    """Mean softmax cross-entropy of ``(N, C)`` logits and ``(N,)`` class indices (PyTorch's
    ``CrossEntropyLoss``, HRNet-Image-Classification's loss), optionally label-smoothed."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
    if label_smoothing:
        eps = jnp.float32(label_smoothing)
        nll = (1 - eps) * nll - eps * jnp.mean(logp, axis=-1)
    return jnp.mean(nll)
