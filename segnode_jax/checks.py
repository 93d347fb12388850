"""Every enumerated config field checked before any work starts (train, evaluate, predict, export).

Each field's choices come from the module that acts on it (the model registry, ``ode.SOLVERS``,
``evaluation.metrics.MIOU_OVER``, ...), so that this table cannot drift from what the code
accepts. A value outside them is one :class:`~segnode_jax.errors.ConfigError` naming the field
and its choices, before data is read or a function compiled: ``--config.eval.mode=slid`` no
longer trains until the first validation and then fails there.
"""

from __future__ import annotations

from typing import Any

from ml_collections import config_dict

from segnode_jax import config as config_lib
from segnode_jax import models, ode, parallel
from segnode_jax.errors import ConfigError
from segnode_jax.evaluation import inference, metrics
from segnode_jax.models import blocks, classification, heads, layers, resnet, segnode, unet, unode

_MISSING = object()


def choices() -> dict[str, tuple[Any, ...]]:
    """``{"section.field": allowed values}`` of every enumerated field."""
    return {
        "model.name": tuple(models.model_names()),
        "model.task": tuple(classification.TASKS),
        "model.dtype": tuple(layers.DTYPES),
        "model.head": tuple(heads.HEADS),
        "model.size": (None, *config_lib.MODEL_SIZES),
        "model.field.norm": ("group", "none"),
        "model.field.activation": tuple(blocks.ACTIVATIONS),
        "model.field.time_dependence": tuple(segnode.TIME_DEPENDENCE),
        "model.field.conv_grads": tuple(layers.CONV_GRADS),
        "model.ode.solver": tuple(ode.SOLVERS),
        "model.ode.adjoint": tuple(ode.ADJOINTS),
        "model.ode.error_norm": tuple(ode.ERROR_NORMS),
        "model.unet.upsampling": tuple(unet.UPSAMPLING),
        "model.nodes_unet.upsampling": tuple(unet.UPSAMPLING),
        "model.unode.activation": tuple(unode.ACTIVATIONS),
        "model.resnet.depth": (None, *sorted(resnet.BLOCKS)),
        "model.resnet.output_stride": tuple(sorted(resnet.OUTPUT_STRIDES)),
        "eval.mode": tuple(config_lib.EVAL_MODES),
        "eval.multiscale_base": ("whole", "slide"),
        "eval.miou_over": tuple(metrics.MIOU_OVER),
        "data.hrnet_test_rule": tuple(inference.HRNET_RULES),
        "train.optimizer": ("auto", *config_lib.OPTIMIZERS),
        "train.lr_schedule": tuple(config_lib.LR_SCHEDULES),
        "parallel.param_sharding": tuple(parallel.PARAM_SHARDINGS),
        "parallel.distributed": ("auto", "on", "off"),
    }


# Fields that must be positive integers when set (None allowed where the field is optional).
POSITIVE = (
    "eval.batch_size",
    "eval.num_images",
    "train.batch_size",
    "model.ode.max_steps",
    "model.ode.num_steps",
    "model.ode.checkpoints",
)


def _get(cfg, path: str):
    node = cfg
    for part in path.split("."):
        if not isinstance(node, (config_dict.ConfigDict, config_dict.FrozenConfigDict, dict)) or part not in node:
            return _MISSING
        node = node[part]
    return node


def check_config(cfg) -> None:
    """Raises :class:`ConfigError` for the first enumerated field of ``cfg`` outside its choices
    (or a count that is not positive); sections the config lacks are skipped.

    Arguments:
      cfg: a run config (``configs/*.py``, a run's ``config.json``), or any part with the same
        top-level sections.
    """
    for path, allowed in choices().items():
        value = _get(cfg, path)
        if value is _MISSING or value in allowed:
            continue
        names = ", ".join("None" if a is None else str(a) for a in allowed)
        raise ConfigError(f"invalid {path}={value!r}; choose one of {names}")
    for path in POSITIVE:
        value = _get(cfg, path)
        if value is _MISSING or value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"invalid {path}={value!r}; give a positive integer")
    data = _get(cfg, "data")
    if isinstance(data, config_dict.ConfigDict):  # typed data fields, read the way the pipeline reads them
        config_lib.optional_size(data, "eval_size", section="data")
        config_lib.optional_int(data, "num_classes", section="data")
