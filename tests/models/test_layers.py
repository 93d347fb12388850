"""The convolution with canonical-layout gradients (models/layers.py) and where SegNode uses it."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

import segnode_jax
from segnode_jax.errors import ConfigError
from segnode_jax.models import layers
from tests.models.test_models import tiny

DIMS = ("NHWC", "HWIO", "NHWC")


@pytest.mark.parametrize(
    "kernel, stride, dilation, padding, size",
    [
        (3, 1, 1, ((1, 1), (1, 1)), (9, 11)),
        (3, 2, 1, ((1, 1), (1, 1)), (9, 11)),  # odd sizes: the last row/column is read once
        (3, 2, 1, ((1, 1), (1, 1)), (8, 8)),  # even: the bottom padding row is never read
        (1, 1, 1, ((0, 0), (0, 0)), (7, 5)),
        (3, 1, 2, ((2, 2), (2, 2)), (10, 9)),  # dilated (DeepLab / PSPNet style)
        (3, 2, 1, ((0, 1), (1, 0)), (6, 7)),  # asymmetric padding
        (5, 3, 1, ((2, 2), (2, 2)), (11, 13)),
        (1, 1, 1, ((1, 2), (0, 1)), (5, 6)),  # padding beyond the kernel's extent: the cropped fallback
    ],
)
def test_canonical_conv_computes_jax_gradients(kernel, stride, dilation, padding, size):
    x = jax.random.normal(jax.random.key(0), (2, *size, 3), jnp.float32)
    w = jax.random.normal(jax.random.key(1), (kernel, kernel, 3, 4), jnp.float32)

    def reference(x, w):
        return lax.conv_general_dilated(
            x, w, (stride,) * 2, padding, rhs_dilation=(dilation,) * 2, dimension_numbers=DIMS
        )

    def ours(x, w):
        return layers.canonical_conv(x, w, (stride,) * 2, padding, (dilation,) * 2)

    np.testing.assert_array_equal(ours(x, w), reference(x, w))
    for f in (reference, ours):
        assert f(x, w).shape == reference(x, w).shape
    loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w)))  # noqa: E731 - a non-uniform output gradient
    want = jax.grad(loss(reference), (0, 1))(x, w)
    got = jax.jit(jax.grad(loss(ours), (0, 1)))(x, w)
    for a, b in zip(got, want):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
def test_canonical_gradients_need_no_more_memory_than_jaxs(stride):
    """XLA's memory analysis of the gradient of four 3x3 convolutions: the canonical-layout one
    within 1.25x of JAX's own (its kernel gradient takes the nine taps one at a time; written out
    as nine slices it needed about 4x, and SegNode-W48's training step 18.6 instead of 12.6 GiB)."""
    x = jnp.ones((4, 48, 64, 16))
    ws = jnp.full((4, 3, 3, 16, 16), 0.01)
    pad = ((1, 1), (1, 1))

    def temp_bytes(conv):
        def loss(x, ws):
            for k in range(ws.shape[0]):
                x = jnp.tanh(conv(x, ws[k], (stride, stride) if k == 0 else (1, 1)))
            return jnp.sum(x**2)

        return jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, ws).compile().memory_analysis().temp_size_in_bytes

    canonical = temp_bytes(lambda x, w, s: layers.canonical_conv(x, w, s, pad, (1, 1)))
    xla = temp_bytes(lambda x, w, s: lax.conv_general_dilated(x, w, s, pad, dimension_numbers=DIMS))
    activation = x.size * 4
    assert xla > activation  # the analysis sees the backward pass's buffers at all
    assert canonical <= 1.25 * xla, (canonical / activation, xla / activation)


def test_conv_layer_is_the_same_layer_whichever_gradients():
    x = jax.random.normal(jax.random.key(0), (2, 9, 8, 3), jnp.float32)
    made = {g: layers.conv(5, 3, stride=2, grads=g) for g in ("xla", "canonical")}
    params = made["xla"].init(jax.random.key(1), x)
    assert jax.tree_util.tree_structure(made["canonical"].init(jax.random.key(1), x)) == jax.tree_util.tree_structure(
        params
    )
    outs, grads = {}, {}
    for g, layer in made.items():
        outs[g], grads[g] = jax.value_and_grad(lambda p: jnp.sum(layer.apply(p, x) ** 2))(params)
    np.testing.assert_allclose(outs["canonical"], outs["xla"], rtol=1e-6)
    want = grads["xla"]["params"]["kernel"]
    np.testing.assert_allclose(grads["canonical"]["params"]["kernel"], want, rtol=1e-5, atol=1e-6 * np.abs(want).max())


def test_auto_is_canonical_only_for_a_field_differentiated_in_loops_on_a_cpu():
    assert jax.default_backend() == "cpu"
    assert layers.conv_grads_for_backend("auto", in_loops=True) == "canonical"
    assert layers.conv_grads_for_backend("auto", in_loops=False) == "xla"
    for choice in ("xla", "canonical"):
        assert layers.conv_grads_for_backend(choice, in_loops=True) == choice
    with pytest.raises(ConfigError, match="model.field.conv_grads"):
        layers.conv_grads_for_backend("fast", in_loops=True)


def _conv_dim_labels(hlo: str) -> list[str]:
    return re.findall(r"= \S+ convolution\([^\n]*dim_labels=(\S+?),", hlo)


def _segnode_gradient(conv_grads: str):
    """The compiled gradient of a tiny SegNode's loss, Euler x2 with the backsolve adjoint (the
    field's gradients in diffrax's backward loop), and its optimised HLO. Branches of 32x32 down
    to 4x4: XLA rewrites a 3x3 convolution of a smaller input into other layouts (forward too)."""
    cfg = tiny("segnode", solver="euler", num_steps=2, adjoint="backsolve")
    cfg.field.conv_grads = conv_grads
    shape = (1, 128, 128, 3)
    variables = segnode_jax.init(cfg, jax.random.key(0), shape)
    images = jax.random.normal(jax.random.key(1), shape)
    labels = jax.random.randint(jax.random.key(2), shape[:3], 0, 5)

    def loss(params):
        logits, _ = segnode_jax.apply({**variables, "params": params}, images, cfg, train=True)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    compiled = jax.jit(jax.value_and_grad(loss)).lower(variables["params"]).compile()
    return compiled(variables["params"]), compiled.as_text()


@pytest.mark.slow
def test_in_the_solver_loops_the_field_gradients_are_canonical_convolutions_and_equal_jaxs():
    """With ``field.conv_grads="xla"`` XLA:CPU leaves the field's gradient convolutions inside
    the backward solve's loop in transposed layouts (the slow generic kernel); "canonical" (what
    "auto" picks here) leaves only the canonical ``b01f_01io->b01f`` and the same gradients."""
    (value_x, grads_x), hlo_x = _segnode_gradient("xla")
    (value_c, grads_c), hlo_c = _segnode_gradient("auto")
    labels_x, labels_c = _conv_dim_labels(hlo_x), _conv_dim_labels(hlo_c)
    assert labels_x and labels_c
    assert set(labels_x) - {"b01f_01io->b01f"}, set(labels_x)  # the check can see the transposed ones
    assert set(labels_c) == {"b01f_01io->b01f"}, set(labels_c)
    np.testing.assert_allclose(value_c, value_x, rtol=1e-6)
    leaves_x, leaves_c = jax.tree_util.tree_leaves(grads_x), jax.tree_util.tree_leaves(grads_c)
    assert len(leaves_x) == len(leaves_c) > 10
    scale = max(float(jnp.max(jnp.abs(g))) for g in leaves_x)
    for a, b in zip(leaves_c, leaves_x):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * scale)
