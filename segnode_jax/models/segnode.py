"""SegNode (paper sec. 3.2, Fig. 1): the 4-branch module as the vector field of a neural ODE.

stem (two stride-2 convs + layer1) -> HRNet transition from layer1 straight to 4 branches of
widths (w, 2w, 4w, 8w) at 1/4 .. 1/32 resolution -> ODE block: dh/dt = f(t, h), f being
``segnode.modules_per_field`` 4-branch modules in series over the tuple of 4 maps, solved by
diffrax (``segnode_jax.ode``) -> per branch 1x1 conv to the classes, bilinear upsampling to the
input size, sum (or, with ``model.head="ocr"``, the OCR head over the final state: SegNode+OCR).

The vector field's modules use pre-activation BasicBlocks whose normalisation is GroupNorm
(``field.norm``), a pure function of the state: BatchNorm running statistics cannot be updated
inside a diffrax solve, and batch statistics would make f depend on the other images of the
batch (and on the batch size), so that the forward solve, the adjoint's backward solve and
evaluation would each integrate a different ODE. See docs/architecture.md.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from segnode_jax.errors import ConfigError
from segnode_jax.models.classification import task_of
from segnode_jax.models.heads import make_head
from segnode_jax.models.hrnet import HRModule, fuse_upsampling, make_stem, outer_norm, transition, widths_of
from segnode_jax.models.layers import Dtype, NormSpec, conv_grads_for_backend, dtype_of
from segnode_jax.models.odeblock import ODEBlock

TIME_DEPENDENCE = ("none", "concat")


class VectorField(nn.Module):
    """f(t, h): ``num_modules`` pre-activation 4-branch modules in series.

    ``time_dependent``: t enters every BasicBlock convolution as an extra constant channel
    (torchdiffeq's ConcatConv2d); otherwise the field is autonomous. The paper does not say
    whether or how t enters its field: autonomous (the default) is our choice.
    The state stays in its own dtype (float32); convolutions run in ``dtype``. ``act`` is the
    activation (``field.activation``): ReLU as in the paper, or a smooth one (silu, softplus,
    gelu), whose continuous Jacobian spares the adaptive backward (adjoint) solve the small
    steps it takes around every ReLU switching point. ``remat``: each BasicBlock and fuse step
    of the field is rematerialised separately when the field is differentiated. ``conv_grads``
    (``field.conv_grads``): how its convolutions are differentiated; on a CPU the field's
    gradients run inside the solver's loops, where only :func:`layers.canonical_conv`'s gradients
    reach XLA:CPU's fast convolution kernels.
    """

    widths: tuple[int, ...]
    num_modules: int
    num_blocks: int
    norm: NormSpec
    time_dependent: bool = False
    align_corners: bool = False
    dtype: Dtype = jnp.float32
    act: str = "relu"
    remat: bool = False
    upsampling: str = "bilinear"
    conv_grads: str = "xla"

    @nn.compact
    def __call__(self, t, y):
        xs = tuple(y)
        tt = t if self.time_dependent else None
        for m in range(self.num_modules):
            module = HRModule(
                self.widths,
                self.num_blocks,
                norm=self.norm,
                preact=True,
                align_corners=self.align_corners,
                dtype=self.dtype,
                act=self.act,
                remat=self.remat,
                upsampling=self.upsampling,
                conv_grads=self.conv_grads,
                name=f"module_{m}",
            )
            xs = module(xs, train=False, t=tt)
        return tuple(x.astype(v.dtype) for x, v in zip(xs, y))


def make_field(cfg) -> VectorField:
    """The (unbound) vector field of a SegNode model config."""
    f = cfg.field
    if f.time_dependence not in TIME_DEPENDENCE:
        raise ConfigError(f"invalid model.field.time_dependence={f.time_dependence!r}; use one of {TIME_DEPENDENCE}")
    if f.norm not in ("group", "none"):
        raise ConfigError(
            f"invalid model.field.norm={f.norm!r}: the vector field's normalisation must be a pure "
            "function of its input ('group' or 'none'); BatchNorm cannot update running "
            "statistics inside an ODE solve"
        )
    return VectorField(
        widths_of(cfg),
        int(cfg.segnode.modules_per_field),
        int(cfg.segnode.blocks_per_branch),
        NormSpec(f.norm, groups=int(f.groups), epsilon=float(cfg.bn_eps)),
        f.time_dependence == "concat",
        bool(cfg.align_corners),
        dtype_of(cfg.dtype),
        str(f.activation),
        bool(cfg.remat.field),
        fuse_upsampling(cfg),
        # "auto" resolved for this backend and adjoint; configs written before the field existed lack it.
        conv_grads_for_backend(str(f.get("conv_grads", "auto")), in_loops=cfg.ode.adjoint != "unrolled"),
        parent=None,
    )


class SegNode(nn.Module):
    """Returns ``(logits, aux)``: float32 logits at the input size; ``aux["ode"]`` holds the
    solver statistics (``num_steps``, ``num_accepted_steps``, ``num_rejected_steps``, ``nfe``)
    and, with ``model.ode.saveat`` set (evaluation only), ``ts`` and ``trajectory_logits``
    (T, N, H, W, classes) -- the prediction from the state at each time; ``aux["features"]``
    is the state at t1."""

    cfg: Any

    @nn.compact
    def __call__(self, images, train: bool = False):
        cfg = self.cfg
        dtype = dtype_of(cfg.dtype)
        x = make_stem(cfg, dtype)(images, train)
        xs = transition(
            [x], [x.shape[-1]], widths_of(cfg), prefix="transition1", norm=outer_norm(cfg), train=train, dtype=dtype
        )
        y0 = tuple(v.astype(jnp.float32) for v in xs)
        y1, info = ODEBlock(functools.partial(make_field, cfg), cfg.ode, bool(cfg.remat.field), name="ode")(y0)
        out = {"features": y1}
        # The state is pre-activation: every head normalises and rectifies each branch first.
        head = make_head(cfg, outer_norm(cfg), dtype, images.shape[1:3], per_branch=True)
        if task_of(cfg) == "classification":  # ImageNet pretraining over the final state
            return head(y1, train)[0], {**out, "ode": info}
        logits, aux_logits = head(y1, train)
        if aux_logits is not None:
            out["aux_logits"] = aux_logits
        stats = {k: v for k, v in info.items() if k != "ys"}
        if "ys" in info and not train:
            ys = info["ys"]
            stats["trajectory_logits"] = jnp.stack(
                [head(tuple(a[k] for a in ys), False)[0] for k in range(ys[0].shape[0])]
            )
        return logits, {"ode": stats, **out}
