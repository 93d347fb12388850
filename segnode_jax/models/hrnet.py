"""HRNet building blocks and HRNetV2 (Wang et al.), structured like the official PyTorch code.

Every parameter path mirrors the official state_dict key with sequential indices joined to
their container name, e.g. ``stage4.0.branches.0.1.conv1.weight`` ->
``stage4_0/branches_0_1/conv1/kernel`` and ``fuse_layers.2.0.1.0.weight`` ->
``fuse_layers_2_0_1_0/kernel``; the stem (``conv1 .. layer1``) lives under ``stem/`` and the
segmentation head (``last_layer``) under ``head/``. See ``docs/architecture.md``.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp
from jaxtyping import Array, Float

from segnode_jax.models.blocks import BasicBlock, Bottleneck, activation
from segnode_jax.models.heads import make_head
from segnode_jax.models.layers import Dtype, NormSpec, conv, dtype_of
from segnode_jax.resize import resize_bilinear, resize_nearest

Features = tuple[Float[Array, "b h w c"], ...]


class HRModule(nn.Module):
    """HRNet's HighResolutionModule over ``len(widths)`` parallel branches.

    Each branch applies ``num_blocks`` BasicBlocks; then output ``i`` sums, over inputs ``j``:
    the identity (j == i); 1x1 conv + norm, upsampled (j > i: bilinearly as in seg_hrnet, or
    ``upsampling="nearest"`` as in HRNet-Image-Classification's cls_hrnet); a chain of (i - j)
    3x3 stride-2 convs + norm, ReLU between them (j < i). The official module applies ReLU to
    the sum; the pre-activation form (``preact=True``) does not, and uses ``act`` (default
    ReLU) as its activation. ``remat``: every BasicBlock and the fuse step are rematerialised
    separately in the backward pass (it then holds one of them's activations at a time).
    ``conv_grads``: how every convolution's gradients are computed (``layers.CONV_GRADS``).
    """

    widths: tuple[int, ...]
    num_blocks: int
    norm: NormSpec = NormSpec()
    preact: bool = False
    align_corners: bool = False
    dtype: Dtype = jnp.float32
    act: str = "relu"
    remat: bool = False
    upsampling: str = "bilinear"
    conv_grads: str = "xla"

    @nn.compact
    def __call__(self, xs: Sequence, train: bool, t=None) -> Features:
        n = len(self.widths)
        xs = list(xs)
        block_cls = nn.remat(BasicBlock, static_argnums=(2,)) if self.remat else BasicBlock
        for i in range(n):
            for k in range(self.num_blocks):
                block = block_cls(
                    self.widths[i],
                    self.norm,
                    self.preact,
                    self.dtype,
                    self.act,
                    self.conv_grads,
                    name=f"branches_{i}_{k}",
                )
                xs[i] = block(xs[i], train, t)
        fuse = nn.remat(_fuse, static_argnums=(2,)) if self.remat else _fuse
        return fuse(self, tuple(xs), train)


def _fuse(module: HRModule, xs: Features, train: bool) -> Features:
    """The fuse step of ``module`` (its layers attach to ``module``, named as in the official code)."""
    n = len(module.widths)
    outs = []
    for i in range(n):
        y = None
        for j in range(n):
            if j == i:
                z = xs[j]
            elif j > i:
                z = conv(
                    module.widths[i], 1, dtype=module.dtype, name=f"fuse_layers_{i}_{j}_0", grads=module.conv_grads
                )(xs[j])
                z = module.norm(z, train, f"fuse_layers_{i}_{j}_1")
                if module.upsampling == "nearest":
                    z = resize_nearest(z, xs[i].shape[1:3])
                else:
                    z = resize_bilinear(z, xs[i].shape[1:3], align_corners=module.align_corners)
            else:
                z = xs[j]
                for k in range(i - j):
                    last = k == i - j - 1
                    width = module.widths[i] if last else module.widths[j]
                    z = conv(
                        width,
                        3,
                        stride=2,
                        dtype=module.dtype,
                        name=f"fuse_layers_{i}_{j}_{k}_0",
                        grads=module.conv_grads,
                    )(z)
                    z = module.norm(z, train, f"fuse_layers_{i}_{j}_{k}_1")
                    if not last:
                        z = activation(module.act)(z)
            y = z.astype(xs[i].dtype) if y is None else y + z.astype(y.dtype)
        assert y is not None, "every output branch sums at least one input"
        outs.append(y if module.preact else nn.relu(y))
    return tuple(outs)


def transition(
    xs: Sequence,
    widths_pre: Sequence[int],
    widths_cur: Sequence[int],
    *,
    prefix: str,
    norm: NormSpec,
    train: bool,
    dtype: Dtype,
) -> list:
    """HRNet's transition layer; call it inside a module's compact method (the layers attach
    to that module).

    An existing branch whose width changes gets 3x3 conv + norm + ReLU; a new branch is a chain
    of 3x3 stride-2 conv + norm + ReLU from the last existing branch, keeping that branch's width
    until the last conv.
    """
    out = []
    for i, c in enumerate(widths_cur):
        if i < len(widths_pre):
            z = xs[i]
            if c != widths_pre[i]:
                z = conv(c, 3, dtype=dtype, name=f"{prefix}_{i}_0")(z)
                z = nn.relu(norm(z, train, f"{prefix}_{i}_1"))
        else:
            z = xs[-1]
            steps = i + 1 - len(widths_pre)
            for j in range(steps):
                width = c if j == steps - 1 else widths_pre[-1]
                z = conv(width, 3, stride=2, dtype=dtype, name=f"{prefix}_{i}_{j}_0")(z)
                z = nn.relu(norm(z, train, f"{prefix}_{i}_{j}_1"))
        out.append(z)
    return out


class Stem(nn.Module):
    """Two 3x3 stride-2 convs (to 1/4 resolution) and layer1 (Bottlenecks).

    ``remat``: the two convs and each Bottleneck are rematerialised separately in the backward
    pass, which then holds one unit's activations at a time (rematerialising the stem as one
    block would recompute all of them at once, at the same peak).
    """

    width: int = 64
    planes: int = 64
    num_blocks: int = 4
    norm: NormSpec = NormSpec()
    dtype: Dtype = jnp.float32
    remat: bool = False

    @nn.compact
    def __call__(self, x, train: bool):
        convs = nn.remat(_stem_convs, static_argnums=(2,)) if self.remat else _stem_convs
        x = convs(self, x.astype(self.dtype), train)
        block_cls = nn.remat(Bottleneck, static_argnums=(2,)) if self.remat else Bottleneck
        for k in range(self.num_blocks):
            x = block_cls(self.planes, self.norm, self.dtype, name=f"layer1_{k}")(x, train)
        return x


def _stem_convs(stem: Stem, x, train: bool):
    """The stem's two stride-2 conv-norm-ReLU units (their layers attach to ``stem``)."""
    x = nn.relu(stem.norm(conv(stem.width, 3, stride=2, dtype=stem.dtype, name="conv1")(x), train, "bn1"))
    return nn.relu(stem.norm(conv(stem.width, 3, stride=2, dtype=stem.dtype, name="conv2")(x), train, "bn2"))


def widths_of(cfg) -> tuple[int, int, int, int]:
    """Branch widths (w, 2w, 4w, 8w) of a model config."""
    w = int(cfg.width)
    return (w, 2 * w, 4 * w, 8 * w)


def fuse_upsampling(cfg) -> str:
    """How the 4-branch modules upsample in their fusions: as HRNet-Image-Classification's
    cls_hrnet (``nearest``) in a classifier (``model.task=classification``), so that HRNet-W48-C's
    ImageNet weights compute what they computed there; as seg_hrnet (``bilinear``) otherwise."""
    return "nearest" if cfg.get("task", "segmentation") == "classification" else "bilinear"


def outer_norm(cfg) -> NormSpec:
    """BatchNorm with running statistics, used everywhere outside an ODE vector field."""
    return NormSpec("batch", momentum=float(cfg.bn_momentum), epsilon=float(cfg.bn_eps))


def make_stem(cfg, dtype: Dtype) -> nn.Module:
    """The stem module (``name='stem'``), rematerialised unit by unit if ``cfg.remat.stem``."""
    return Stem(
        int(cfg.stem_width),
        int(cfg.layer1_planes),
        int(cfg.layer1_blocks),
        outer_norm(cfg),
        dtype,
        bool(cfg.remat.stem),
        name="stem",
    )


def hrnet_stages(
    x,
    cfg,
    *,
    stage_modules: Sequence[int],
    stage_blocks: Sequence[int],
    train: bool,
    dtype: Dtype,
) -> list:
    """Transitions and HighResolutionModules of stages 2, 3, ... (call inside a compact method).

    Stage ``s`` (2-based) has ``s`` branches; names follow the official code
    (``transition{s-1}_*``, ``stage{s}_{m}``).
    """
    widths = widths_of(cfg)
    norm = outer_norm(cfg)
    xs, widths_pre = [x], [x.shape[-1]]
    for k, (num_modules, num_blocks) in enumerate(zip(stage_modules, stage_blocks)):
        cur = widths[: k + 2]
        xs = transition(xs, widths_pre, cur, prefix=f"transition{k + 1}", norm=norm, train=train, dtype=dtype)
        for m in range(num_modules):
            module = HRModule(
                cur,
                int(num_blocks),
                norm=norm,
                preact=False,
                align_corners=bool(cfg.align_corners),
                dtype=dtype,
                upsampling=fuse_upsampling(cfg),
                name=f"stage{k + 2}_{m}",
            )
            xs = list(module(xs, train))
        widths_pre = cur
    return xs


class HRNetV2(nn.Module):
    """HRNetV2 for segmentation (official HRNet-Semantic-Segmentation ``seg_hrnet``).

    Returns ``(logits, aux)``: float32 logits (N, H, W, classes) bilinearly resized to the input
    size, and ``aux = {"features": the 4 branch outputs}``.
    """

    cfg: Any  # the model config, frozen (hashable)

    @nn.compact
    def __call__(self, images, train: bool = False):
        cfg = self.cfg
        dtype = dtype_of(cfg.dtype)
        x = make_stem(cfg, dtype)(images, train)
        xs = hrnet_stages(
            x, cfg, stage_modules=cfg.hrnet.stage_modules, stage_blocks=cfg.hrnet.stage_blocks, train=train, dtype=dtype
        )
        return hrnet_head_outputs(cfg, tuple(xs), images.shape[1:3], train, dtype)


def hrnet_head_outputs(cfg, xs, size, train: bool, dtype: Dtype):
    """``(logits, aux)`` of HRNetV2 or the Baseline over the branches ``xs``: the head of
    ``models.heads.make_head`` (concat, OCR or classification); ``aux["features"]`` is ``xs``
    and, with the OCR head, ``aux["aux_logits"]`` its soft-region logits."""
    logits, aux_logits = make_head(cfg, outer_norm(cfg), dtype, size, per_branch=False)(xs, train)
    aux = {"features": xs}
    if aux_logits is not None:
        aux["aux_logits"] = aux_logits
    return logits, aux
