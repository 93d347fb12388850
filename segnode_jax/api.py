"""The public functional API: ``init``, ``apply``, ``count_params``.

    import jax, segnode_jax
    cfg = segnode_jax.load_config("configs/camvid.py")
    cfg.model.name = "segnode"                                   # hrnetv2 | baseline | segnode
    variables = segnode_jax.init(cfg.model, jax.random.key(0), (1, 360, 480, 3))
    logits, aux = segnode_jax.apply(variables, images, cfg.model)  # (N, H, W, classes)
    n = segnode_jax.count_params(cfg.model)

``variables`` is a dict ``{"params": ..., "batch_stats": ...}`` (``batch_stats`` holds the
running statistics of the BatchNorms outside the ODE). ``apply(..., train=True)`` normalises
with batch statistics and returns the updated running statistics in ``aux["batch_stats"]``;
the caller stores them: ``variables = {**variables, "batch_stats": aux["batch_stats"]}``.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from jax.core import Tracer
from jaxtyping import Array, Float
from ml_collections import config_dict

from segnode_jax import ode
from segnode_jax.config import optional_section, resolved_snapshot
from segnode_jax.models import build_model

Variables = dict[str, Any]


def freeze(model_cfg) -> config_dict.FrozenConfigDict:
    """A hashable snapshot of a model config as it is now (the key under which compiled
    functions are cached; see :func:`segnode_jax.config.snapshot`), ``model.size`` applied."""
    return resolved_snapshot(model_cfg)


@functools.lru_cache(maxsize=64)
def _model(frozen_cfg):
    return build_model(frozen_cfg)


def _check_images(images, model_cfg):
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(
            f"images must be NHWC with 3 channels, got shape {tuple(images.shape)}; "
            "add a batch axis with images[None] for a single image"
        )


@functools.partial(jax.jit, static_argnums=(0, 2))
def _init(frozen_cfg, rng, shape):
    model = _model(frozen_cfg)
    # Parameters are drawn with an RBG key derived from `rng`: deterministic given `rng`, and
    # several times faster to compile than threefry for hundreds of parameter arrays.
    bits = jax.random.bits(rng, (4,), jnp.uint32)
    return model.init(jax.random.wrap_key_data(bits, impl="rbg"), jnp.zeros(shape, jnp.float32), False)


def init(model_cfg, rng: jax.Array, input_shape: Sequence[int]) -> Variables:
    """Initialises a model's variables.

    Arguments:
      model_cfg: ``cfg.model`` (name, width, classes, solver, ...).
      rng: a JAX PRNG key.
      input_shape: (N, H, W, 3) of the images the model will see (only the trailing
        dimensions matter: parameters do not depend on the image size).

    Returns:
      ``{"params": ..., "batch_stats": ...}``.
    """
    frozen = freeze(model_cfg)
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"input_shape must be (N, H, W, 3), got {shape}")
    return _init(frozen, rng, shape)


def _apply_impl(frozen_cfg, variables, images, train, rng=None) -> tuple[jax.Array, dict[str, Any]]:
    model = _model(frozen_cfg)
    rngs = None if rng is None else {"dropout": rng}
    if train:
        (logits, aux), updates = model.apply(variables, images, True, mutable=["batch_stats"], rngs=rngs)
        aux = dict(aux, batch_stats=updates.get("batch_stats", {}))  # {}: a model without BatchNorm
    else:
        logits, aux = model.apply(variables, images, False)
    return logits, dict(aux)


_apply_jit = jax.jit(_apply_impl, static_argnums=(0, 3))


def apply(
    variables: Variables,
    images: Float[Array, "n h w 3"],
    model_cfg,
    *,
    train: bool = False,
    rng: jax.Array | None = None,
) -> tuple[Float[Array, "n h w classes"], dict[str, Any]]:
    """Runs a model.

    Arguments:
      variables: from :func:`init` (or a checkpoint).
      images: float (N, H, W, 3), normalised as in training.
      model_cfg: the same ``cfg.model`` the variables were made for.
      train: use batch statistics in BatchNorm and return the updated running statistics.
      rng: with ``train``, the key of the models' dropout (the OCR head's); without one the
        model is deterministic.

    Returns:
      ``(logits, aux)``: float32 logits (N, H, W, classes) at the input size; ``aux`` has
      ``"features"`` (the 4 branch outputs), for SegNode ``"ode"`` (solver statistics:
      ``num_steps``, ``num_accepted_steps``, ``num_rejected_steps``, ``nfe``, ``result`` (diffrax's
      result code, 0 = success); with
      ``model.ode.saveat``: ``ts`` and ``trajectory_logits``), with ``model.head="ocr"``
      ``"aux_logits"`` (the OCR head's soft object regions, at 1/4 of the input size), and
      with ``train=True`` ``"batch_stats"`` (the updated running statistics).

    Called outside ``jax.jit`` it compiles once per (config, shape, train) and raises
    :class:`segnode_jax.ode.ODESolveError` if the ODE solve fails. Inside a jitted function it
    is traced inline; wrap the call that runs it in ``segnode_jax.ode.solver_errors(...)`` to
    get the same error type.
    """
    _check_images(images, model_cfg)
    frozen = freeze(model_cfg)
    if isinstance(images, Tracer) or any(isinstance(x, Tracer) for x in jax.tree_util.tree_leaves(variables)):
        return _apply_impl(frozen, variables, images, train, rng)
    with ode.solver_errors(optional_section(frozen, "ode")):
        out = _apply_jit(frozen, variables, images, train, rng)
        jax.block_until_ready(out)
    return out


def count_params(model_cfg, input_shape: Sequence[int] = (1, 64, 64, 3)) -> int:
    """Exact number of trainable parameters, from shapes alone (``jax.eval_shape``)."""
    model = _model(freeze(model_cfg))
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(tuple(input_shape), jnp.float32), False))
    return int(sum(x.size for x in jax.tree_util.tree_leaves(shapes["params"])))
