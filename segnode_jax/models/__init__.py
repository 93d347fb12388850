"""Models chosen by name (``cfg.model.name``): hrnetv2, baseline, segnode, and the paper's
comparisons unet, pspnet, deeplabv3, unode and nodes_unet.

Every model is a Flax module built from the model config and called as
``model.apply(variables, images, train)`` -> ``(logits, aux)``. Register your own with
:func:`register_model`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import flax.linen as nn

from segnode_jax.config import resolved_snapshot
from segnode_jax.errors import ConfigError
from segnode_jax.models.baseline import Baseline
from segnode_jax.models.deeplabv3 import DeepLabV3
from segnode_jax.models.hrnet import HRNetV2
from segnode_jax.models.nodes_unet import NODEsUNet
from segnode_jax.models.pspnet import PSPNet
from segnode_jax.models.segnode import SegNode
from segnode_jax.models.unet import UNet
from segnode_jax.models.unode import UNode


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """A registered model and what it can do (asked by the tools instead of its name).

    Attributes:
      cls: the Flax module class, built as ``cls(frozen_model_cfg)``.
      solves_ode: it solves ODEs with ``model.ode`` (so ``--solver`` applies, ``aux["ode"]``
        holds NFE, step counts and the result code, and a failed solve can be NaN).
      saves_along_solve: ``model.ode.saveat`` gives ``aux["ode"]["trajectory_logits"]``
        (predictions along the solve: ``evaluate.py --trajectory``).
    """

    cls: Callable[..., nn.Module]
    solves_ode: bool = False
    saves_along_solve: bool = False


_REGISTRY: dict[str, ModelEntry] = {
    "hrnetv2": ModelEntry(HRNetV2),
    "baseline": ModelEntry(Baseline),
    "segnode": ModelEntry(SegNode, solves_ode=True, saves_along_solve=True),
    "unet": ModelEntry(UNet),
    "unode": ModelEntry(UNode, solves_ode=True),
    "pspnet": ModelEntry(PSPNet),
    "deeplabv3": ModelEntry(DeepLabV3),
    "nodes_unet": ModelEntry(NODEsUNet, solves_ode=True),
}


def register_model(name: str, *, solves_ode: bool = False, saves_along_solve: bool = False):
    """Class decorator adding a model (a Flax module taking ``cfg``) to the registry, with what
    it can do (:class:`ModelEntry`)::

        @segnode_jax.register_model("my_ode_net", solves_ode=True)
        class MyODENet(nn.Module):
            cfg: Any
            ...
    """

    def wrap(cls):
        _REGISTRY[name] = ModelEntry(cls, solves_ode=solves_ode, saves_along_solve=saves_along_solve)
        return cls

    return wrap


def capabilities(model) -> ModelEntry:
    """The registry entry of ``model`` (a ``cfg.model`` or a model name).

    Raises:
      ConfigError: an unknown name (the message lists the registered ones).
    """
    name = model if isinstance(model, str) else model.name
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model.name={name!r}; choose one of {model_names()}")
    return _REGISTRY[name]


def has_ode(model_cfg) -> bool:
    """Whether the model solves ODEs (its ``aux["ode"]`` has NFE and step counts)."""
    return capabilities(model_cfg).solves_ode


def model_names() -> list[str]:
    return sorted(_REGISTRY)


def ode_model_names() -> list[str]:
    """The registered models that solve ODEs."""
    return sorted(n for n, e in _REGISTRY.items() if e.solves_ode)


def along_solve_names() -> list[str]:
    """The registered models that save their predictions along the solve."""
    return sorted(n for n, e in _REGISTRY.items() if e.saves_along_solve)


def build_model(model_cfg) -> nn.Module:
    """The Flax module for ``model_cfg.name`` (a snapshot of the config is frozen into the module)."""
    return capabilities(model_cfg).cls(resolved_snapshot(model_cfg))
