"""The neural-ODE block every ODE model of the library shares (SegNode, U-Node, NODEs-UNet).

:class:`ODEBlock` owns a vector field's parameters (``params/<name>/field``) and solves
``dy/dt = f(t, y)`` over ``[t0, t1]`` with ``model.ode``'s settings through
:func:`segnode_jax.ode.solve`. The field is an *unbound* Flax module (built by ``field``, a
zero-argument factory) applied as a pure function ``f(t, y, params)``, so that its parameters
reach ``diffeqsolve`` through ``args`` -- the only place diffrax's backsolve adjoint
differentiates. The state ``y`` may be any pytree (SegNode: the 4 branches).
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from segnode_jax import ode
from segnode_jax.errors import ConfigError
from segnode_jax.models.heads import require_own_head

STATISTICS = ("num_steps", "num_accepted_steps", "num_rejected_steps", "nfe")


class ODEBlock(nn.Module):
    """Returns ``(y(t1), statistics)`` (``ode.solve``'s: steps, NFE, the diffrax result code).

    Attributes:
      field: a factory ``() -> nn.Module`` of the unbound field ``f(t, y)``.
      ode_cfg: ``model.ode``.
      remat: ``model.remat.field`` -- with the adjoints that store the solver's steps, keep only
        the state of each evaluation (the backsolve adjoint stores none, so checkpointing whole
        evaluations would only recompute them; fields may also rematerialise inside).
    """

    field: Callable[[], nn.Module]
    ode_cfg: Any
    remat: bool = False

    @nn.compact
    def __call__(self, y0):
        field = self.field()
        dtype = jax.tree_util.tree_leaves(y0)[0].dtype
        params = self.param("field", lambda rng: field.init(rng, jnp.zeros((), dtype), y0)["params"])
        settings = ode.ODESettings.from_config(self.ode_cfg)
        if self.is_initializing():  # shapes only: skip the solve (and its compilation)
            zero = jnp.zeros((), jnp.int32)
            return y0, {**{k: zero for k in STATISTICS}, "result": zero}

        def vector_field(t, y, p):
            return field.apply({"params": p}, t, y)

        whole = self.remat and settings.adjoint != "backsolve"
        return ode.solve(vector_field, y0, params, settings, remat=whole)


def sum_statistics(stats: list[dict]) -> dict:
    """The statistics of several solves as one: summed counts (``nfe``: every field evaluation)
    and the first failure's result code (a solve written out step by step cannot fail)."""
    out: dict[str, Any] = {k: sum(s[k] for s in stats) for k in STATISTICS}
    result = jnp.zeros((), jnp.int32)
    for s in stats:
        result = jnp.where(result == 0, jnp.asarray(s.get("result", 0), jnp.int32), result)
    out["result"] = result
    return out


def check_ode_unet(cfg, label: str, solves: str) -> None:
    """The settings an ODE U-Net (U-Node, NODEs-UNet) refuses: a segmentation head of the HRNet
    family (it has its own decoder) and ``ode.saveat`` (the trajectory analysis is SegNode's;
    ``solves`` says what the model solves instead)."""
    require_own_head(cfg, label, "decoder")
    if cfg.ode.get("saveat"):
        raise ConfigError(f"model.ode.saveat (trajectory analysis) is for SegNode; {label} solves {solves}")
