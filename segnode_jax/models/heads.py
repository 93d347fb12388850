"""The heads of the HRNet family (HRNetV2, the Baseline, SegNode) and the one place that picks
one from a model config (``make_head``): HRNetV2's concat head, SegNode's per-branch classifiers,
HRNet-OCR's head (``model.head="ocr"``, in ``models.ocr``) or, for ImageNet pretraining
(``model.task="classification"``), HRNet-Image-Classification's head (``models.classification``).
Models with a head of their own (U-Net, U-Node, NODEs-UNet, PSPNet, DeepLabv3) refuse
``model.head`` through ``require_own_head``."""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from segnode_jax.errors import ConfigError
from segnode_jax.models.classification import classification_head, task_of
from segnode_jax.models.layers import Dtype, NormSpec, classifier_init, conv
from segnode_jax.models.ocr import OCRHead
from segnode_jax.resize import resize_bilinear

HEADS = ("default", "ocr")

# head(branches, train) -> (logits, aux_logits or None)
Head = Callable[[Sequence, bool], tuple]


class HRNetHead(nn.Module):
    """HRNetV2's head: upsample branches 1-3 to branch 0, concat (15w channels, 720 for W48),
    1x1 conv (bias), norm, ReLU, 1x1 conv (bias) to the classes.

    Returns float32 logits at branch-0 (1/4) resolution.
    """

    num_classes: int
    norm: NormSpec = NormSpec()
    align_corners: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, xs: Sequence, train: bool):
        size = xs[0].shape[1:3]
        feats = [xs[0]] + [resize_bilinear(x, size, align_corners=self.align_corners) for x in xs[1:]]
        x = jnp.concatenate([f.astype(self.dtype) for f in feats], axis=-1)
        x = conv(x.shape[-1], 1, bias=True, dtype=self.dtype, name="last_layer_0")(x)
        x = nn.relu(self.norm(x, train, "last_layer_1")).astype(self.dtype)
        x = conv(self.num_classes, 1, bias=True, dtype=self.dtype, name="last_layer_3", kernel_init=classifier_init)(x)
        return x.astype(jnp.float32)


class SegNodeHead(nn.Module):
    """SegNode's head (paper Fig. 1): per branch, a 1x1 conv (bias) to the classes, bilinear
    upsampling to the output size, and the sum over branches.

    The ODE state is pre-activation (the vector field's blocks are BN-ReLU-conv units), so each
    branch is normalised (BatchNorm) and rectified before its classifier, as pre-activation
    ResNets do before theirs; this adds 2 x 15w parameters. (Our choice: the paper shows only
    the 1x1 convolutions and the sum.)
    """

    num_classes: int
    norm: NormSpec = NormSpec()
    align_corners: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, xs: Sequence, size: Sequence[int], train: bool):
        total = None
        for i, x in enumerate(xs):
            z = nn.relu(self.norm(x, train, f"norm_{i}")).astype(self.dtype)
            z = conv(
                self.num_classes, 1, bias=True, dtype=self.dtype, name=f"classifier_{i}", kernel_init=classifier_init
            )(z)
            z = resize_bilinear(z.astype(jnp.float32), size, align_corners=self.align_corners)
            total = z if total is None else total + z
        return total


def check_head(model_cfg) -> str:
    """The config's ``model.head`` (``"default"`` | ``"ocr"``), validated."""
    head = str(model_cfg.get("head", "default"))
    if head not in HEADS:
        raise ConfigError(f"unknown model.head={head!r}; use one of {', '.join(HEADS)}")
    return head


def require_own_head(cfg, model: str, what: str = "head") -> None:
    """Refuses ``model.head`` other than ``default`` for a model with a ``what`` of its own."""
    if cfg.get("head", "default") != "default":
        raise ConfigError(
            f"model.head={cfg.head!r} is for the HRNet family; {model} has its own {what} (model.head=default)"
        )


def make_head(cfg, norm: NormSpec, dtype: Dtype, size: Sequence[int], *, per_branch: bool) -> Head:
    """The head of an HRNet-family model config as one function ``head(branches, train) ->
    (logits, aux_logits)``; its module is named ``head`` and made once, so calling ``head`` again
    (SegNode's trajectory) reuses its parameters.

    ``per_branch`` is SegNode: its branches are pre-activation (each is normalised and rectified
    before any head reads it) and its default head is the per-branch classifiers; otherwise the
    default is HRNetV2's concat head. Segmentation logits come at ``size``; ``aux_logits`` is the
    OCR head's soft-region logits at branch-0 resolution, else None. ``model.task=classification``
    gives ``(N, classes)`` logits. ``remat.head`` rematerialises the head."""
    if task_of(cfg) == "classification":
        classifier = classification_head(cfg, norm, dtype, preact=per_branch)
        return lambda xs, train: (classifier(xs, train), None)
    align = bool(cfg.align_corners)
    remat = bool(cfg.remat.head)
    if check_head(cfg) == "ocr":
        o = cfg.ocr
        cls = nn.remat(OCRHead, static_argnums=(2,)) if remat else OCRHead
        ocr = cls(
            int(cfg.num_classes),
            mid_channels=int(o.mid_channels),
            key_channels=int(o.key_channels),
            dropout=float(o.dropout),
            preact=per_branch,
            norm=norm,
            align_corners=align,
            dtype=dtype,
            name="head",
        )

        def ocr_head(xs, train):
            logits, aux_logits = ocr(xs, train)
            return resize_bilinear(logits, tuple(size), align_corners=align), aux_logits

        return ocr_head
    if per_branch:
        cls = nn.remat(SegNodeHead, static_argnums=(2, 3)) if remat else SegNodeHead
        own = cls(int(cfg.num_classes), norm=norm, align_corners=align, dtype=dtype, name="head")
        return lambda xs, train: (own(xs, tuple(size), train), None)
    cls = nn.remat(HRNetHead, static_argnums=(2,)) if remat else HRNetHead
    concat = cls(int(cfg.num_classes), norm=norm, align_corners=align, dtype=dtype, name="head")
    return lambda xs, train: (resize_bilinear(concat(xs, train), tuple(size), align_corners=align), None)
