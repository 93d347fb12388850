"""The optimiser: each model's recipe (``train.recipes``), the learning-rate schedule and the
optax transformation.

SegNode and the Baseline follow the paper (sec. 4.1), HRNetV2 HRNet's own recipe; a value given
explicitly in ``cfg.train`` wins over the recipe.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

from segnode_jax import errors
from segnode_jax.config import OPTIMIZERS

OPTIMIZER_FIELDS = ("optimizer", "learning_rate", "momentum", "weight_decay")


ConfigError = errors.ConfigError  # the package's one config error (segnode_jax.errors)


def recipe_name(model_cfg) -> str:
    """The ``train.recipes`` key of a model config: ``"{name}_ocr"`` for a model with the OCR
    head when such a recipe exists (HRNet-OCR's own, e.g. PASCAL-Context's head lr x10), else
    the model's name."""
    name = str(model_cfg.name)
    return f"{name}_ocr" if model_cfg.get("head", "default") == "ocr" else name


def resolve_optimizer(train_cfg, model_name: str) -> dict[str, Any]:
    """The optimiser settings in effect: explicit ``train.*`` values, else the recipe of
    ``model_name`` in ``train.recipes`` (a ``"{name}_ocr"`` key without a recipe falls back to
    ``name``'s). ``head_lr_mult`` (the head's learning-rate factor, HRNet-OCR's
    ``NONBACKBONE_MULT``) is optional in a recipe (default 1)."""
    recipes = train_cfg.get("recipes") or {}
    if model_name not in recipes and model_name.endswith("_ocr"):
        model_name = model_name[: -len("_ocr")]
    recipe = recipes.get(model_name)
    out = {}
    for field in OPTIMIZER_FIELDS:
        value = train_cfg.get(field)
        if value is None or value == "auto":
            if recipe is None or recipe.get(field) is None:
                raise ConfigError(
                    f"train.{field} is {value!r} (from the recipe) but train.recipes has no recipe for "
                    f"model.name={model_name!r} with that field; set --config.train.{field} explicitly "
                    f"(recipes exist for: {', '.join(sorted(recipes)) or 'none'})."
                )
            value = recipe.get(field)
        out[field] = value
    mult = train_cfg.get("head_lr_mult")
    if mult is None:
        mult = (recipe or {}).get("head_lr_mult", 1.0)
    out["head_lr_mult"] = float(mult)
    if not out["head_lr_mult"] > 0:
        raise ConfigError(f"train.head_lr_mult must be positive, got {out['head_lr_mult']}")
    if out["optimizer"] not in OPTIMIZERS:
        raise ConfigError(f"invalid train.optimizer={out['optimizer']!r}; use one of {', '.join(OPTIMIZERS)} (or auto)")
    if not out["learning_rate"] > 0:
        raise ConfigError(f"train.learning_rate must be positive, got {out['learning_rate']}")
    return out


def learning_rate_schedule(train_cfg, num_steps: int):
    """``step -> learning rate`` (float32): poly (HRNet), cosine, constant or multistep (decays
    by ``lr_decay_factor`` at the ``lr_decay_at`` fractions of the run), with an optional
    linear warm-up. ``step`` counts the updates applied so far."""
    base = float(train_cfg.learning_rate)
    end = float(train_cfg.get("end_learning_rate", 0.0) or 0.0)
    power = float(train_cfg.get("poly_power", 0.9))
    warmup = int(train_cfg.get("warmup_steps", 0) or 0)
    kind = train_cfg.lr_schedule
    total = float(max(int(num_steps), 1))

    def schedule(count):
        step = jnp.asarray(count).astype(jnp.float32)
        frac = jnp.clip(step / jnp.float32(total), 0.0, 1.0)
        if kind == "poly":
            lr = jnp.float32(base - end) * (1.0 - frac) ** jnp.float32(power) + jnp.float32(end)
        elif kind == "multistep":
            passed = sum((frac >= jnp.float32(b)).astype(jnp.float32) for b in train_cfg.get("lr_decay_at", ()))
            lr = jnp.float32(base) * jnp.float32(train_cfg.get("lr_decay_factor", 0.1)) ** passed
        elif kind == "cosine":
            lr = jnp.float32(end) + jnp.float32(base - end) * 0.5 * (1.0 + jnp.cos(jnp.float32(math.pi) * frac))
        else:
            lr = jnp.full_like(step, base)
        if warmup > 0:
            lr = lr * jnp.minimum(1.0, (step + 1.0) / jnp.float32(warmup))
        return lr

    return schedule


def make_optimizer(train_cfg, num_steps: int) -> tuple[optax.GradientTransformation, Any]:
    """The optax optimiser of a resolved ``cfg.train`` and its learning-rate schedule.

    SGD adds ``weight_decay * params`` to the gradient before momentum (PyTorch's SGD, as the
    paper and HRNet use it); AdamW decays decoupled, scaled by the learning rate (PyTorch's
    AdamW). Weight decay applies to every parameter, as PyTorch's default. ``head_lr_mult``
    multiplies the head's updates (HRNet-OCR's ``NONBACKBONE_MULT``, PASCAL-Context: 10; PSPNet:
    10, everything after the backbone).
    """
    schedule = learning_rate_schedule(train_cfg, num_steps)
    parts = []
    if train_cfg.get("grad_clip_norm"):
        parts.append(optax.clip_by_global_norm(float(train_cfg.grad_clip_norm)))
    wd = float(train_cfg.weight_decay or 0.0)
    if train_cfg.optimizer == "sgd":
        if wd:
            parts.append(optax.add_decayed_weights(wd))
        momentum = float(train_cfg.momentum or 0.0)
        parts.append(optax.sgd(schedule, momentum=momentum or None, nesterov=bool(train_cfg.get("nesterov", False))))
    elif train_cfg.optimizer == "adamw":
        parts.append(
            optax.adamw(
                schedule,
                b1=float(train_cfg.adam_b1),
                b2=float(train_cfg.adam_b2),
                eps=float(train_cfg.adam_eps),
                weight_decay=wd,
            )
        )
    else:
        raise ConfigError(f"invalid train.optimizer={train_cfg.optimizer!r}; use one of {', '.join(OPTIMIZERS)}")
    mult = float(train_cfg.get("head_lr_mult") or 1.0)
    if mult != 1.0:
        # The head's updates scaled: the same as its own learning rate x mult in PyTorch's SGD
        # (momentum buffer in gradient units) and AdamW (decoupled decay scaled by the lr).
        parts.append(optax.masked(optax.scale(mult), _head_mask))
    return optax.chain(*parts), schedule


def _head_mask(params):
    """True for the parameters of the model's head: ``params["head"]`` (the HRNet family), or
    everything but ``params["backbone"]`` in a model built on a backbone (PSPNet, DeepLabv3:
    hszhao/semseg's and torchvision's "new modules" at 10x the backbone's rate)."""
    on_backbone = "backbone" in params
    return {
        k: jax.tree_util.tree_map(lambda _, head=(k == "head" or (on_backbone and k != "backbone")): head, v)
        for k, v in params.items()
    }
