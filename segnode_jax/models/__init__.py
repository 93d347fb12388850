"""Models chosen by name (``cfg.model.name``): hrnetv2, baseline, segnode, and the paper's
comparisons unet, pspnet, deeplabv3, unode and nodes_unet.

Every model is a Flax module built from the model config and called as
``model.apply(variables, images, train)`` -> ``(logits, aux)``. Register your own with
:func:`register_model`.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn

from segnode_jax.config import resolved_snapshot
from segnode_jax.models.baseline import Baseline
from segnode_jax.models.deeplabv3 import DeepLabV3
from segnode_jax.models.hrnet import HRNetV2
from segnode_jax.models.nodes_unet import NODEsUNet
from segnode_jax.models.pspnet import PSPNet
from segnode_jax.models.segnode import SegNode
from segnode_jax.models.unet import UNet
from segnode_jax.models.unode import UNode
from segnode_jax.errors import ConfigError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "hrnetv2": HRNetV2, "baseline": Baseline, "segnode": SegNode, "unet": UNet, "unode": UNode,
    "pspnet": PSPNet, "deeplabv3": DeepLabV3, "nodes_unet": NODEsUNet,
}


def register_model(name: str):
    """Class decorator adding a model (a Flax module taking ``cfg``) to the registry."""

    def wrap(cls):
        _REGISTRY[name] = cls
        return cls

    return wrap


# The models that solve ODEs (and report the solver's statistics in aux["ode"]).
ODE_MODELS = ("segnode", "unode", "nodes_unet")


def has_ode(model_cfg) -> bool:
    """Whether the model solves ODEs (its ``aux["ode"]`` has NFE and step counts)."""
    return model_cfg.name in ODE_MODELS


def model_names() -> list[str]:
    return sorted(_REGISTRY)


def build_model(model_cfg) -> nn.Module:
    """The Flax module for ``model_cfg.name`` (a snapshot of the config is frozen into the module)."""
    name = model_cfg.name
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model.name={name!r}; choose one of {model_names()}")
    return _REGISTRY[name](resolved_snapshot(model_cfg))
