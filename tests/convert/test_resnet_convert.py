"""Converting torchvision checkpoints into PSPNet and DeepLabv3 (the paper's Table 2
comparisons): the public checkpoints' layouts (read from torchvision) convert strictly at full
size, and tiny networks assembled from torchvision's own classes (DeepLabv3) and from
hszhao/semseg's PSPNet head give our logits to 1e-4 after conversion.

Fixtures written by real torch/torchvision: tests/convert/make_torchvision_fixtures.py."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

import segnode_jax
from segnode_jax import api, convert
from segnode_jax.config import base_config
from segnode_jax.resize import resize_bilinear

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def _layout(name):
    with open(os.path.join(FIXTURES, "torchvision_layouts.json")) as f:
        shapes = json.load(f)["layouts"][name]
    # Zeros of the right shapes (read-only views: no memory for 40M numbers).
    return {k: np.broadcast_to(np.float32(0), tuple(s)) for k, s in shapes.items()}


def _full(name, num_classes, **changes):
    cfg = base_config().model
    cfg.name, cfg.num_classes = name, num_classes
    segnode_jax.config.apply_overrides(cfg, changes)
    return cfg


def _tiny(name):
    """The networks of make_torchvision_fixtures.TINY."""
    cfg = base_config().model
    cfg.name, cfg.num_classes = name, 3
    cfg.resnet.update(stem_width=4, blocks=(1, 1, 2, 1))
    cfg.deeplabv3.update(channels=8, atrous_rates=(2, 3, 4), aux_head=True, aux_channels=16)
    cfg.pspnet.update(channels=8, aux_channels=6)
    return cfg


def test_imagenet_resnets_fill_the_backbones_exactly():
    """torchvision's resnet50 -> PSPNet (ResNet-50) and resnet101 -> DeepLabv3 (ResNet-101),
    strictly: every backbone variable from the file, fc ignored, only the heads fresh."""
    for layout, name in (("resnet50", "pspnet"), ("resnet101", "deeplabv3")):
        conv = convert.convert_state_dict(_layout(layout), _full(name, 19))
        assert not conv.unexpected and not conv.missing and not conv.mismatched
        assert conv.width == 64
        assert {p.split("/")[1] for p in conv.mapped} == {"backbone"}
        assert {p.split("/")[1] for p in conv.fresh} == (
            {"ppm", "cls_0", "cls_1", "cls_4", "aux_0", "aux_1", "aux_4"}
            if name == "pspnet"
            else {"classifier_0", "classifier_1", "classifier_2", "classifier_4"}
        )
        assert set(conv.ignored) == {
            k for k in _layout(layout) if k.startswith("fc.") or k.endswith("num_batches_tracked")
        }
        assert conv.mapped["params/backbone/layer3_1/conv2/kernel"] == "layer3.1.conv2.weight"
        assert conv.mapped["batch_stats/backbone/layer4_0/downsample_1/var"] == "layer4.0.downsample.1.running_var"


def test_torchvision_deeplabv3_converts_whole():
    """torchvision's deeplabv3_resnet101 (COCO-VOC, 21 classes, with its auxiliary classifier):
    every variable of our DeepLabv3 (aux head on) comes from the file."""
    sd = _layout("deeplabv3_resnet101")
    conv = convert.convert_state_dict(sd, _full("deeplabv3", 21, **{"deeplabv3.aux_head": True}))
    assert not conv.fresh and not conv.unexpected and not conv.missing
    assert conv.mapped["params/classifier_0/convs_4_1/kernel"] == "classifier.0.convs.4.1.weight"
    # Without the aux head (the paper's 58.6M), the aux classifier is ignored saying how to use it.
    conv = convert.convert_state_dict(sd, _full("deeplabv3", 21))
    assert not conv.fresh and "aux_head=True" in conv.ignored["aux_classifier.0.weight"]
    # Another class count: strict refuses naming the classifier, --nostrict leaves it fresh.
    with pytest.raises(convert.ConversionError, match="classifier.4.weight"):
        convert.convert_state_dict(sd, _full("deeplabv3", 19))
    conv = convert.convert_state_dict(sd, _full("deeplabv3", 19), strict=False)
    assert conv.fresh == ["params/classifier_4/bias", "params/classifier_4/kernel"]


@pytest.mark.parametrize(
    "layout,name,fix",
    [
        ("resnet101", "pspnet", "--config.model.resnet.depth=101"),
        ("resnet50", "deeplabv3", "--config.model.resnet.depth=50"),
    ],
)
def test_another_depth_is_refused_naming_the_setting(layout, name, fix):
    with pytest.raises(convert.ConversionError, match=fix):
        convert.convert_state_dict(_layout(layout), _full(name, 19))
    conv = convert.convert_state_dict(_layout(layout), _full(name, 19, **{"resnet.depth": int(fix[-3:].lstrip("="))}))
    assert not conv.missing


def _close(ours, reference):
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    scale = np.abs(reference).max()
    assert scale > 0
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("name", ["deeplabv3", "pspnet"])
def test_converted_tiny_networks_match_torch(name):
    """Backbone (dilation rule, projections, max pooling), head (ASPP with image pooling /
    pyramid pooling with PyTorch's adaptive bins) and the final resize: to 1e-4. A single
    changed BatchNorm statistic moves the logits: the comparison can fail."""
    cfg = _tiny(name)
    conv = convert.convert_state_dict(convert.read_state_dict(os.path.join(FIXTURES, f"{name}_tiny.pth")), cfg)
    assert not conv.fresh and not conv.unexpected and not conv.missing
    ref = np.load(os.path.join(FIXTURES, f"{name}_tiny_forward.npz"))
    image = ref["image"].astype(np.float32)
    logits, aux = api.apply(conv.variables, image, cfg)
    assert logits.shape == ref["out"].shape
    _close(logits, ref["out"])
    if name == "deeplabv3":  # torchvision resizes its aux logits to the image
        _close(resize_bilinear(aux["aux_logits"], image.shape[1:3], align_corners=False), ref["aux"])
    bad = {"params": conv.variables["params"], "batch_stats": _perturbed(conv.variables["batch_stats"])}
    other, _ = api.apply(bad, image, cfg)
    assert np.abs(np.asarray(other) - ref["out"]).max() > 1e-3 * np.abs(ref["out"]).max()


def _perturbed(stats):
    out = jax.tree_util.tree_map(np.array, stats)
    out["backbone"]["layer2_0"]["bn2"]["var"] = out["backbone"]["layer2_0"]["bn2"]["var"] * 4
    return out
