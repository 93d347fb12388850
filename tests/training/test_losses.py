"""Losses against hand-computed values: ignore index, class weights, OHEM, label resolution."""

import jax.numpy as jnp
import numpy as np
import pytest

from segnode_jax import losses


def _logits_for(probs):
    """Logits whose softmax is ``probs`` (rows sum to 1)."""
    return jnp.log(jnp.asarray(probs, jnp.float32))


# One image, 1x4 pixels, 2 classes: p(class 1) = 0.9, 0.6, 0.2, 0.5.
P1 = np.array([0.9, 0.6, 0.2, 0.5])
LOGITS = _logits_for(np.stack([1 - P1, P1], -1)[None, None])  # (1, 1, 4, 2)


def test_cross_entropy_ignores_255_and_averages_the_rest():
    labels = jnp.asarray([[[1, 1, 0, 255]]], jnp.int32)
    expected = -(np.log(0.9) + np.log(0.6) + np.log(0.8)) / 3
    assert float(losses.cross_entropy(LOGITS, labels)) == pytest.approx(expected, rel=1e-6)
    all_ignored = jnp.full((1, 1, 4), 255, jnp.int32)
    assert float(losses.cross_entropy(LOGITS, all_ignored)) == 0.0


def test_class_weights_give_a_weighted_mean():
    labels = jnp.asarray([[[1, 1, 0, 255]]], jnp.int32)
    w = jnp.asarray([3.0, 0.5], jnp.float32)
    expected = -(0.5 * np.log(0.9) + 0.5 * np.log(0.6) + 3.0 * np.log(0.8)) / (0.5 + 0.5 + 3.0)
    assert float(losses.cross_entropy(LOGITS, labels, w)) == pytest.approx(expected, rel=1e-6)


def test_ohem_keeps_pixels_below_the_threshold_or_the_hardest_min_kept():
    labels = jnp.asarray([[[1, 1, 1, 1]]], jnp.int32)  # p(target) = 0.9, 0.6, 0.2, 0.5
    # threshold 0.7: the three pixels with p < 0.7 are kept (min_kept 1 does not add any).
    got = losses.ohem_cross_entropy(LOGITS, labels, threshold=0.7, min_kept=1)
    assert float(got) == pytest.approx(-(np.log(0.6) + np.log(0.2) + np.log(0.5)) / 3, rel=1e-6)
    # threshold 0.3 keeps only p=0.2; min_kept=2 raises the cut-off to the 3rd smallest
    # probability (HRNet: the value at index min_kept of the ascending order), keeping 0.2 and 0.5.
    got = losses.ohem_cross_entropy(LOGITS, labels, threshold=0.3, min_kept=2)
    assert float(got) == pytest.approx(-(np.log(0.2) + np.log(0.5)) / 2, rel=1e-6)


def test_logits_are_compared_at_label_resolution():
    logits = jnp.zeros((1, 2, 2, 3), jnp.float32).at[..., 2].set(5.0)
    labels = jnp.full((1, 8, 8), 2, jnp.int32)
    expected = -np.log(np.exp(5.0) / (np.exp(5.0) + 2))
    assert float(losses.cross_entropy(logits, labels)) == pytest.approx(expected, rel=1e-6)
