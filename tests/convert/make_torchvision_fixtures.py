"""Writes the torchvision fixtures of tests/convert/test_resnet_convert.py (committed; the
tests do not need torch):

    /tmp/torchvenv/bin/pip install torch==2.13.0 torchvision==0.28.0 pillow numpy
    PYTHONPATH=. /tmp/torchvenv/bin/python tests/convert/make_torchvision_fixtures.py

* ``torchvision_layouts.json``: the state_dict keys and shapes of torchvision's ``resnet50``,
  ``resnet101`` (ImageNet classification) and ``deeplabv3_resnet101(aux_loss=True)`` at full size
  -- the layouts of the public checkpoints, read from torchvision itself.
* ``deeplabv3_tiny.pth`` + ``deeplabv3_tiny_forward.npz``: a tiny DeepLabv3 assembled from
  torchvision's own classes (its ``ResNet._make_layer`` and ``Bottleneck`` with output stride 8,
  its ``ASPP``, ``FCNHead`` and ``DeepLabV3``; only the widths are small), random weights and
  BatchNorm statistics, and its eval-mode output (``out`` and ``aux``) for a random image.
* ``pspnet_tiny.pth`` + ``pspnet_tiny_forward.npz``: the same backbone under PSPNet's head as
  hszhao/semseg's ``model/pspnet.py`` writes it (``ppm.features.i``, ``cls``, ``aux``; its
  ``align_corners=True`` resizes), and its eval-mode output (main logits only: the authors'
  auxiliary head runs in training only).

Computed in float64 (the converted networks are compared at 1e-4).
"""

from __future__ import annotations

import json
import os
import sys
import types

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

try:
    import torchvision  # noqa: F401
except RuntimeError:
    # The registry's torchvision wheel is the CUDA build: its compiled ops (nms, ...) do not
    # load next to a CPU torch, and registering their fake kernels fails on import. Only the
    # pure-Python models are used here, so skip those registrations.
    sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
    for name in [m for m in sys.modules if m.startswith("torchvision")]:
        if name != "torchvision._meta_registrations":
            del sys.modules[name]
    import torchvision  # noqa: F401

from torchvision.models import resnet50, resnet101  # noqa: E402
from torchvision.models._utils import IntermediateLayerGetter  # noqa: E402
from torchvision.models.resnet import Bottleneck, ResNet  # noqa: E402
from torchvision.models.segmentation import deeplabv3_resnet101  # noqa: E402
from torchvision.models.segmentation.deeplabv3 import ASPP, DeepLabV3  # noqa: E402
from torchvision.models.segmentation.fcn import FCNHead  # noqa: E402

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
# The tiny networks (tests/convert/test_resnet_convert.py builds the same in segnode-jax).
TINY = dict(
    stem_width=4,
    blocks=(1, 1, 2, 1),
    num_classes=3,
    aspp_channels=8,
    rates=(2, 3, 4),
    bins=(1, 2, 3, 6),
    psp_channels=8,
    psp_aux_channels=6,
    image=(2, 3, 41, 53),
)


class TinyResNet(ResNet):
    """torchvision's ResNet with a small stem width: its own ``_make_layer`` (the dilation rule)
    and Bottleneck, output stride 8 (``replace_stride_with_dilation=[False, True, True]``)."""

    def __init__(self, width, blocks):
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes, self.dilation, self.groups, self.base_width = width, 1, 1, 64
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(Bottleneck, width, blocks[0])
        self.layer2 = self._make_layer(Bottleneck, 2 * width, blocks[1], stride=2, dilate=False)
        self.layer3 = self._make_layer(Bottleneck, 4 * width, blocks[2], stride=2, dilate=True)
        self.layer4 = self._make_layer(Bottleneck, 8 * width, blocks[3], stride=2, dilate=True)


class PPM(nn.Module):
    """hszhao/semseg's pyramid pooling module."""

    def __init__(self, in_dim, reduction_dim, bins):
        super().__init__()
        self.features = nn.ModuleList(
            nn.Sequential(
                nn.AdaptiveAvgPool2d(b),
                nn.Conv2d(in_dim, reduction_dim, 1, bias=False),
                nn.BatchNorm2d(reduction_dim),
                nn.ReLU(inplace=True),
            )
            for b in bins
        )

    def forward(self, x):
        return torch.cat(
            [x] + [F.interpolate(f(x), x.shape[2:], mode="bilinear", align_corners=True) for f in self.features], 1
        )


class TinyPSPNet(nn.Module):
    """hszhao/semseg's PSPNet head (ppm, cls, aux) on torchvision's ResNet (``backbone``)."""

    def __init__(self, t):
        super().__init__()
        w, classes = t["stem_width"], t["num_classes"]
        self.backbone = TinyResNet(w, t["blocks"])
        c4 = 32 * w
        self.ppm = PPM(c4, c4 // len(t["bins"]), t["bins"])
        head = lambda cin, mid: nn.Sequential(  # noqa: E731
            nn.Conv2d(cin, mid, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Dropout2d(p=0.1),
            nn.Conv2d(mid, classes, 1),
        )
        self.cls = head(2 * c4, t["psp_channels"])
        self.aux = head(16 * w, t["psp_aux_channels"])

    def forward(self, x):
        size = x.shape[2:]
        b = self.backbone
        y = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        y = b.layer4(b.layer3(b.layer2(b.layer1(y))))
        y = self.cls(self.ppm(y))
        return F.interpolate(y, size, mode="bilinear", align_corners=True)


def tiny_deeplabv3(t):
    w, classes = t["stem_width"], t["num_classes"]
    backbone = IntermediateLayerGetter(TinyResNet(w, t["blocks"]), return_layers={"layer4": "out", "layer3": "aux"})
    c = t["aspp_channels"]
    classifier = nn.Sequential(
        ASPP(32 * w, list(t["rates"]), out_channels=c),
        nn.Conv2d(c, c, 3, padding=1, bias=False),
        nn.BatchNorm2d(c),
        nn.ReLU(),
        nn.Conv2d(c, classes, 1),
    )
    return DeepLabV3(backbone, classifier, FCNHead(16 * w, classes))


def randomise(model, seed):
    """Random weights and BatchNorm statistics (so that a mapping mistake shows)."""
    rng = np.random.default_rng(seed)
    sd = model.state_dict()
    for k, v in sd.items():
        if k.endswith("num_batches_tracked"):
            continue
        if k.endswith("running_var"):
            a = 1 + 0.5 * rng.random(v.shape)
        elif k.endswith("running_mean") or k.endswith("bias"):
            a = 0.2 * rng.standard_normal(v.shape)
        elif v.ndim == 1:  # BatchNorm scale
            a = 1 + 0.2 * rng.standard_normal(v.shape)
        else:
            a = rng.standard_normal(v.shape) / np.sqrt(np.prod(v.shape[1:]))
        sd[k] = torch.from_numpy(a.astype(np.float32))
    model.load_state_dict(sd, strict=True)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def main():
    os.makedirs(HERE, exist_ok=True)
    layouts = {}
    for name, make in (
        ("resnet50", resnet50),
        ("resnet101", resnet101),
        (
            "deeplabv3_resnet101",
            lambda: deeplabv3_resnet101(weights=None, weights_backbone=None, aux_loss=True, num_classes=21),
        ),
    ):
        layouts[name] = {k: list(v.shape) for k, v in make().state_dict().items()}
    with open(os.path.join(HERE, "torchvision_layouts.json"), "w") as f:
        json.dump({"torchvision": torchvision.__version__, "layouts": layouts}, f, indent=0)
        f.write("\n")

    t = TINY
    image = np.random.default_rng(7).standard_normal(t["image"])
    for name, model, seed in (("deeplabv3", tiny_deeplabv3(t), 1), ("pspnet", TinyPSPNet(t), 2)):
        sd = randomise(model, seed)
        torch.save(sd, os.path.join(HERE, f"{name}_tiny.pth"))
        model = model.double().eval()
        with torch.no_grad():
            out = model(torch.from_numpy(image))
        arrays = {"image": image.transpose(0, 2, 3, 1)}
        if isinstance(out, dict):
            arrays.update({k: v.numpy().transpose(0, 2, 3, 1) for k, v in out.items()})
        else:
            arrays["out"] = out.numpy().transpose(0, 2, 3, 1)
        np.savez_compressed(os.path.join(HERE, f"{name}_tiny_forward.npz"), **arrays)
        print(name, {k: v.shape for k, v in arrays.items()}, sum(v.numel() for v in sd.values()), "numbers")


if __name__ == "__main__":
    main()
