"""The train state and the pure, jitted training step.

``train_step(state, batch) -> (state, metrics)`` is jitted once per config and mesh (state
donated, laid out as ``cfg.parallel`` says): batches are sharded over the mesh's ``data`` axis,
BatchNorm statistics are computed over the global batch, and a non-finite loss or update is
never applied (``metrics["finite"] == 0``). A failed ODE solve is not raised inside the step:
it makes the loss NaN (so the update is not applied) and ``metrics["ode_result"]`` non-zero, and
the training loop raises it.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from segnode_jax import api, losses, memory, ode, parallel
from segnode_jax.training.optim import make_optimizer


class TrainState(struct.PyTreeNode):
    """What a training step updates (and a checkpoint holds).

    Attributes:
      step: int32 scalar, the number of updates applied so far.
      params: model parameters.
      batch_stats: BatchNorm running statistics.
      opt_state: the optax optimiser state.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any

    @property
    def variables(self) -> dict[str, Any]:
        return {"params": self.params, "batch_stats": self.batch_stats}


def create_train_state(model_cfg, tx: optax.GradientTransformation, rng: jax.Array, input_shape) -> TrainState:
    """A freshly initialised train state (host/default-device arrays)."""
    variables = api.init(model_cfg, rng, input_shape)
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
    )


def train_step(state: TrainState, batch, *, model_cfg, tx, schedule, loss_cfg, class_weights, seed=0):
    """One optimisation step (pure; jit it with :func:`make_train_step`).

    Arguments:
      state: the train state.
      batch: ``{"image": (B, H, W, 3) float32, "label": (B, H, W) int32}`` (a classifier,
        ``model.task="classification"``: ``"label"`` ``(B,)`` class indices).
      model_cfg, tx, schedule, loss_cfg, class_weights: static settings.
      seed: the run's seed; dropout (the OCR head's) draws from ``fold_in(key(seed), step)``,
        so that a resumed run draws what the uninterrupted one would.

    Returns:
      ``(new_state, metrics)``. When the loss or the gradient norm is not finite the state is
      returned unchanged (``metrics["finite"] == 0``): a bad update is never applied.
    """
    images, labels = batch["image"], batch["label"]

    rng = jax.random.fold_in(jax.random.key(seed), state.step)
    # A failed ODE solve gives NaN and its result code (raised by the host from the metrics,
    # never from inside the sharded step: raised on one device, the error would leave the others
    # waiting in the step's all-reduce until XLA aborts the process).
    model_cfg = ode.with_settings(model_cfg, on_failure="nan")

    classify = model_cfg.get("task", "segmentation") == "classification"

    def loss_fn(params):
        variables = {"params": params, "batch_stats": state.batch_stats}
        logits, aux = api.apply(variables, images, model_cfg, train=True, rng=rng)
        if classify:  # ImageNet pretraining: (N, classes) logits, (N,) class indices
            return losses.classification_loss(logits, labels, float(loss_cfg.get("label_smoothing", 0.0))), (
                logits,
                aux,
            )
        loss = losses.segmentation_loss(logits, labels, class_weights, loss_cfg)
        if "aux_logits" in aux:  # HRNet-OCR: 1.0 x main (OHEM if set) + aux_weight x plain CE
            loss = loss + float(loss_cfg.get("aux_weight", 0.4)) * losses.cross_entropy(
                aux["aux_logits"], labels, class_weights
            )
        return loss, (logits, aux)

    (loss, (logits, aux)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(
        step=state.step + 1, params=params, batch_stats=aux.get("batch_stats", state.batch_stats), opt_state=opt_state
    )
    grad_norm = optax.tree.norm(grads)
    # The update itself must be finite too (e.g. a NaN learning rate, an overflowing step).
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(optax.tree.norm(params))
    new_state = jax.tree_util.tree_map(lambda new, old: jnp.where(finite, new, old), new_state, state)
    metrics = {
        "loss": loss,
        "grad_norm": grad_norm,
        "param_norm": optax.tree.norm(new_state.params),
        "learning_rate": schedule(state.step),
        "finite": finite.astype(jnp.int32),
    }
    if classify:
        metrics["accuracy"] = jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))
    else:
        valid = labels != losses.IGNORE_INDEX
        pred = jnp.argmax(losses.logits_at_label_size(logits, labels), axis=-1)
        correct = jnp.sum((pred == labels) & valid).astype(jnp.float32)
        metrics["pixel_accuracy"] = correct / jnp.maximum(jnp.sum(valid).astype(jnp.float32), 1.0)
    if isinstance(aux.get("ode"), Mapping):
        for k in ("nfe", "num_steps", "num_accepted_steps", "num_rejected_steps", "result"):
            if k in aux["ode"]:
                metrics[f"ode_{k}"] = jnp.asarray(aux["ode"][k], jnp.int32)
    return new_state, metrics


def _freeze(c):
    return api.freeze(c) if c is not None else None


def abstract_train_state(model_cfg, tx: optax.GradientTransformation, seed: int = 0):
    """Shapes and dtypes of the train state (nothing computed). Parameter shapes do not depend
    on the image size, so a small input stands in for the crop."""
    return jax.eval_shape(lambda: create_train_state(model_cfg, tx, jax.random.key(seed), (1, 64, 64, 3)))


def train_state_shardings(model_cfg, tx, mesh, parallel_cfg=None):
    """The sharding of every leaf of the train state (see ``parallel.state_shardings``)."""
    return parallel.state_shardings(abstract_train_state(model_cfg, tx), mesh, parallel_cfg)


@functools.lru_cache(maxsize=16)
def _train_step_jit(
    model_cfg, train_cfg, parallel_cfg, num_steps: int, class_weights: tuple | None, mesh, seed: int = 0
):
    tx, schedule = make_optimizer(train_cfg, num_steps)
    weights = None if class_weights is None else np.asarray(class_weights, np.float32)
    fn = functools.partial(
        train_step,
        model_cfg=model_cfg,
        tx=tx,
        schedule=schedule,
        loss_cfg=train_cfg.loss,
        class_weights=weights,
        seed=seed,
    )
    state_sharding = train_state_shardings(model_cfg, tx, mesh, parallel_cfg)
    rep = parallel.replicated(mesh)
    # With remat on, a CPU compile must keep jax.checkpoint's barriers to save memory at all.
    remat = any(bool(v) for v in model_cfg.get("remat", {}).values())
    return jax.jit(
        fn,
        donate_argnums=0,
        in_shardings=(state_sharding, parallel.batch_sharding(mesh)),
        out_shardings=(state_sharding, rep),
        compiler_options=memory.compiler_options(mesh.devices.flat[0].platform) if remat else None,
    )


def make_train_step(cfg, num_steps: int, mesh, class_weights=None):
    """The jitted ``train_step(state, batch) -> (state, metrics)`` for ``mesh`` (state donated,
    laid out as ``cfg.parallel`` says; cached per config, so several runs in one process
    compile once). The same function serves every device and host count."""
    cw = None if class_weights is None else tuple(float(v) for v in np.asarray(class_weights).ravel())
    # Every train field but the loop's own keys the cache (runs that differ in how often they
    # log, save or validate share one compiled step; a field added to cfg.train keys it too).
    step_fields = step_settings(cfg.train)
    # The seed keys the dropout draws only where there is dropout (runs of other seeds share
    # one compiled step otherwise).
    seed = int(cfg.get("seed", 0)) if cfg.model.get("head", "default") == "ocr" else 0
    return _train_step_jit(
        _freeze(cfg.model), _freeze(step_fields), _freeze(cfg.get("parallel")), int(num_steps), cw, mesh, seed
    )


# The cfg.train fields that only the training loop reads (how long to train, how often to log,
# save and validate, how many to keep); tests/training/test_optim.py checks that the optimiser and
# the loss build without them.
LOOP_FIELDS = frozenset(
    {
        "batch_size",
        "num_epochs",
        "num_steps",
        "log_every_steps",
        "checkpoint_every_steps",
        "max_to_keep",
        "eval_every_steps",
        "eval_num_images",
        "progress_bar",
    }
)


def step_settings(train_cfg) -> dict[str, Any]:
    """The ``cfg.train`` fields a training step depends on: all but :data:`LOOP_FIELDS`."""
    return {k: v for k, v in train_cfg.items() if k not in LOOP_FIELDS}
