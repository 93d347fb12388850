"""The dilated ResNet backbone of PSPNet and DeepLabv3 (the paper's Table 2 comparisons).

torchvision's ResNet (``torchvision.models.resnet``, the "v1.5" ResNet: stride in the 3x3
convolution of a Bottleneck), layer by layer, so that torchvision's public ImageNet checkpoints
(``resnet50-*.pth``, ``resnet101-*.pth``) and its DeepLabv3 checkpoints convert one to one
(``python -m segnode_jax.convert``; the module names mirror torchvision's keys):

* stem: 7x7 stride-2 convolution (``conv1``), BatchNorm (``bn1``), ReLU, 3x3 stride-2 max pooling;
* ``layer1``..``layer4``: Bottlenecks (1x1 -> 3x3 -> 1x1 convolutions with BatchNorm, the last
  to ``4 x planes``; planes ``w, 2w, 4w, 8w`` for ``stem_width`` w = 64), a projection
  (``downsample``: 1x1 convolution + BatchNorm) where the shape changes;
* ``output_stride`` 8 (PSPNet, DeepLabv3) replaces the strides of layer3 and layer4 by dilation
  2 and 4, 16 only layer4's, 32 none -- torchvision's ``replace_stride_with_dilation``, including
  its rule that a dilated layer's *first* block keeps the previous dilation.

BatchNorm: momentum and eps from the model config (PyTorch's 0.1 / 1e-5). Depths 50, 101, 152
(torchvision's Bottleneck ResNets; its BasicBlock ResNet-18/34 cannot be dilated).
``model.resnet.blocks`` overrides the blocks per layer (tests use tiny networks).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from segnode_jax.errors import ConfigError
from segnode_jax.models.heads import require_own_head
from segnode_jax.models.layers import Dtype, classifier_init, conv, conv_bn_relu, dtype_of, norm, state_dtype

BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
OUTPUT_STRIDES = {8: (False, True, True), 16: (False, False, True), 32: (False, False, False)}
EXPANSION = 4


def resnet_settings(model_cfg, default_depth: int) -> tuple[int, tuple[int, ...], tuple[bool, ...]]:
    """``(depth, blocks per layer, dilate per layer 2-4)`` from ``model.resnet``, checked."""
    r = model_cfg.resnet
    depth = default_depth if r.depth is None else int(r.depth)
    if depth not in BLOCKS:
        raise ConfigError(f"model.resnet.depth={depth} is not a Bottleneck ResNet; use one of {sorted(BLOCKS)}")
    blocks = tuple(int(b) for b in r.blocks) if r.blocks else BLOCKS[depth]
    if len(blocks) != 4 or min(blocks) < 1:
        raise ConfigError(
            f"model.resnet.blocks={tuple(r.blocks)}: give 4 positive block counts (or () for ResNet-{depth}'s)"
        )
    if int(r.output_stride) not in OUTPUT_STRIDES:
        raise ConfigError(f"model.resnet.output_stride={r.output_stride}; use one of {sorted(OUTPUT_STRIDES)}")
    return depth, blocks, OUTPUT_STRIDES[int(r.output_stride)]


class Bottleneck(nn.Module):
    """torchvision's Bottleneck: ``relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1 x))))))) + skip)``."""

    planes: int
    stride: int = 1
    dilation: int = 1
    project: bool = False
    momentum: float = 0.9
    epsilon: float = 1e-5
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        bn: dict[str, Any] = dict(kind="batch", momentum=self.momentum, epsilon=self.epsilon)
        y = nn.relu(norm(conv(self.planes, 1, dtype=self.dtype, name="conv1")(x), train, name="bn1", **bn))
        y = conv(self.planes, 3, stride=self.stride, dilation=self.dilation, dtype=self.dtype, name="conv2")(y)
        y = nn.relu(norm(y, train, name="bn2", **bn))
        y = norm(conv(self.planes * EXPANSION, 1, dtype=self.dtype, name="conv3")(y), train, name="bn3", **bn)
        if self.project:
            x = conv(self.planes * EXPANSION, 1, stride=self.stride, dtype=self.dtype, name="downsample_0")(x)
            x = norm(x, train, name="downsample_1", **bn)
        return nn.relu(y + x)


class ResNet(nn.Module):
    """Returns the outputs of layer3 and layer4 (``1/8`` of the input at output stride 8)."""

    blocks: tuple[int, ...]
    dilate: tuple[bool, ...]
    stem_width: int = 64
    momentum: float = 0.9
    epsilon: float = 1e-5
    remat: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        bn: dict[str, Any] = dict(momentum=self.momentum, epsilon=self.epsilon, dtype=self.dtype)
        block_cls = nn.remat(Bottleneck, static_argnums=(2,)) if self.remat else Bottleneck
        x = conv(self.stem_width, 7, stride=2, dtype=self.dtype, name="conv1")(x.astype(self.dtype))
        x = nn.relu(norm(x, train, kind="batch", name="bn1", momentum=self.momentum, epsilon=self.epsilon))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))  # pyright: ignore[reportArgumentType]  # flax's annotation says str; pairs are documented
        channels, dilation, outputs = self.stem_width, 1, []
        for layer, count in enumerate(self.blocks):
            planes = self.stem_width * 2**layer
            stride, previous = (1 if layer == 0 else 2), dilation
            if layer and self.dilate[layer - 1]:
                dilation, stride = dilation * stride, 1
            for i in range(count):
                first = i == 0
                x = block_cls(
                    planes,
                    stride=stride if first else 1,
                    dilation=previous if first else dilation,
                    project=first and (stride != 1 or channels != planes * EXPANSION),
                    name=f"layer{layer + 1}_{i}",
                    **bn,
                )(x, train)
                channels = planes * EXPANSION
            outputs.append(x)
        return outputs[2], outputs[3]


def backbone(cfg, default_depth: int, dtype) -> ResNet:
    """The config's ResNet, named ``backbone`` (torchvision's segmentation models' key prefix)."""
    _, blocks, dilate = resnet_settings(cfg, default_depth)
    return ResNet(
        blocks,
        dilate,
        stem_width=int(cfg.resnet.stem_width),
        momentum=float(cfg.bn_momentum),
        epsilon=float(cfg.bn_eps),
        remat=bool(cfg.remat.stem),
        dtype=dtype,
        name="backbone",
    )


def dropout(rate: float, train: bool, module: nn.Module, *, channels: bool):
    """Dropout active in training with a ``"dropout"`` RNG (deterministic without one);
    ``channels``: zero whole channels (PyTorch's Dropout2d) instead of elements."""
    deterministic = not (train and module.has_rng("dropout"))
    return nn.Dropout(rate, broadcast_dims=(1, 2) if channels else (), deterministic=deterministic)


def positive_ints(values, field: str, example: str) -> tuple[int, ...]:
    """``values`` as a non-empty tuple of positive ints, else a ValueError naming ``field``."""
    out = tuple(int(v) for v in values)
    if not out or min(out) < 1:
        raise ConfigError(f"model.{field}={tuple(values)}: give positive values, e.g. {example}")
    return out


def head_on_backbone(cfg, model: str, default_depth: int, images, train: bool):
    """What PSPNet and DeepLabv3 start with (call inside their compact ``__call__``): the head
    check, the compute dtype, their BatchNorm settings and the backbone's layer3 / layer4
    features: ``(dtype, bn, c3, c4)``."""
    require_own_head(cfg, model)
    dtype = dtype_of(cfg.dtype)
    bn: dict[str, Any] = dict(momentum=float(cfg.bn_momentum), epsilon=float(cfg.bn_eps), dtype=dtype)
    c3, c4 = backbone(cfg, default_depth, dtype)(images, train)
    return dtype, bn, c3, c4


def class_conv(cfg, dtype, name: str) -> nn.Module:
    """The final 1x1 convolution to the classes (with bias, small initialisation)."""
    return conv(int(cfg.num_classes), 1, bias=True, dtype=dtype, kernel_init=classifier_init, name=name)


def aux_fcn_head(
    module: nn.Module,
    c3,
    cfg,
    channels: int,
    names: tuple[str, str, str],
    rate: float,
    *,
    channel_dropout: bool,
    train: bool,
    bn: dict,
    dtype,
):
    """The auxiliary head on layer3 (3x3 conv-BN-ReLU, dropout, classes): its logits at layer3's
    resolution in the state dtype. ``names``: the conv, BN and classifier module names."""
    a = conv_bn_relu(c3, int(channels), 3, train, names[:2], **bn)
    a = dropout(rate, train, module, channels=channel_dropout)(a)
    return class_conv(cfg, dtype, names[2])(a).astype(state_dtype(dtype))
