"""The optimiser recipes: which recipe a model takes (its own, HRNet-OCR's) and the head's
learning-rate factor (HRNet-OCR's NONBACKBONE_MULT)."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import segnode_jax
from segnode_jax import training
from tests.conftest import REPO


def _resolved(name: str, head: str, **train):
    cfg = segnode_jax.load_config(os.path.join(REPO, "configs", "pascal_context.py"))
    cfg.model.name, cfg.model.head = name, head
    for k, v in train.items():
        cfg.train[k] = v
    return training.resolve_config(cfg).train


def test_ocr_models_take_hrnet_ocrs_recipe_where_a_dataset_has_one():
    t = _resolved("hrnetv2", "ocr")
    assert (t.optimizer, t.learning_rate, t.weight_decay, t.head_lr_mult) == ("sgd", 0.001, 1e-4, 10.0)
    t = _resolved("hrnetv2", "default")
    assert (t.learning_rate, t.head_lr_mult) == (0.001, 1.0)
    # No segnode_ocr recipe: SegNode+OCR keeps SegNode's (the paper's) recipe.
    t = _resolved("segnode", "ocr")
    assert (t.learning_rate, t.head_lr_mult) == (0.1, 1.0)
    # An explicit value wins over the recipe.
    assert _resolved("hrnetv2", "ocr", head_lr_mult=3.0).head_lr_mult == 3.0
    with pytest.raises(training.ConfigError, match="head_lr_mult"):
        _resolved("hrnetv2", "ocr", head_lr_mult=0.0)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_head_lr_mult_scales_only_the_heads_updates(optimizer):
    """Same gradients everywhere: one update of the head is exactly ``mult`` times the update
    with mult 1 (momentum / Adam moments and weight decay included), the rest unchanged."""
    # optax's Adam bias correction raises a Python float to the int32 step count, which the
    # suite's strict promotion refuses outside jit (the training step is unaffected).
    with jax.numpy_dtype_promotion("standard"):
        _check_head_lr_mult(optimizer)


def _check_head_lr_mult(optimizer):
    params = {"stem": {"w": jnp.ones((3,))}, "head": {"cls": {"kernel": jnp.full((2, 2), 2.0)}}}
    grads = jax.tree_util.tree_map(
        lambda p: jnp.float32(0.1) * jnp.arange(p.size, dtype=jnp.float32).reshape(p.shape) + jnp.float32(0.3), params
    )

    def moved(mult):
        t = _resolved(
            "hrnetv2", "default", optimizer=optimizer, learning_rate=0.01, weight_decay=0.05, head_lr_mult=mult
        )
        tx, _ = training.make_optimizer(t, 100)
        p, state = params, tx.init(params)
        for _ in range(3):
            updates, state = tx.update(grads, state, p)
            p = jax.tree_util.tree_map(lambda a, u: a + u, p, updates)
        return p

    one, ten = moved(1.0), moved(10.0)
    np.testing.assert_array_equal(ten["stem"]["w"], one["stem"]["w"])
    d1 = np.asarray(one["head"]["cls"]["kernel"]) - 2.0
    d10 = np.asarray(ten["head"]["cls"]["kernel"]) - 2.0
    assert np.abs(d1).min() > 1e-4
    # Not exactly 10x after the first step (weight decay sees the moved parameters): compare
    # one step instead, where it is exact.
    t = _resolved("hrnetv2", "default", optimizer=optimizer, learning_rate=0.01, weight_decay=0.05, head_lr_mult=10.0)
    tx, _ = training.make_optimizer(t, 100)
    u10, _ = tx.update(grads, tx.init(params), params)
    t1 = _resolved("hrnetv2", "default", optimizer=optimizer, learning_rate=0.01, weight_decay=0.05, head_lr_mult=1.0)
    tx1, _ = training.make_optimizer(t1, 100)
    u1, _ = tx1.update(grads, tx1.init(params), params)
    np.testing.assert_allclose(u10["head"]["cls"]["kernel"], 10 * np.asarray(u1["head"]["cls"]["kernel"]), rtol=1e-6)
    np.testing.assert_array_equal(u10["stem"]["w"], u1["stem"]["w"])
    assert np.all(np.abs(d10) > 5 * np.abs(d1))


def test_the_compiled_step_is_keyed_by_every_train_field_but_the_loops():
    """The step is built from ``step_settings(cfg.train)`` alone (so the optimiser and the loss
    cannot read a loop field), and every other field keys its cache: a field added to
    ``cfg.train`` later gets a step of its own instead of a stale one."""
    from segnode_jax import parallel
    from segnode_jax.training import step

    cfg = training.resolve_config(segnode_jax.load_config(os.path.join(REPO, "configs", "tiny.py")))
    mesh = parallel.make_mesh()
    first = training.make_train_step(cfg, 10, mesh)
    assert set(step.step_settings(cfg.train)) == set(cfg.train) - step.LOOP_FIELDS
    for field, value in (("log_every_steps", 7), ("eval_every_steps", 3), ("progress_bar", False), ("max_to_keep", 9)):
        cfg.train[field] = value
        assert training.make_train_step(cfg, 10, mesh) is first, field
    momentum = cfg.train.momentum
    cfg.train.momentum = 0.5
    assert training.make_train_step(cfg, 10, mesh) is not first
    cfg.train.momentum = momentum
    assert training.make_train_step(cfg, 10, mesh) is first
    with cfg.train.unlocked():
        cfg.train.a_field_added_later = 1
    assert training.make_train_step(cfg, 10, mesh) is not first
