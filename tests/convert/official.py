"""The official HRNet (HRNet-Semantic-Segmentation ``seg_hrnet``) in NumPy, written from the
PyTorch code's structure: its state_dict (names and NCHW shapes) and its forward pass in eval
mode. Independent of segnode-jax's Flax modules, so that converted weights can be checked
against it.
"""

from __future__ import annotations

import collections

import numpy as np

EPS = 1e-5


# ---------------------------------------------------------------------------------------
# The state_dict.


class _Writer:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.sd = collections.OrderedDict()

    def conv(self, name, cin, cout, k, bias=False):
        fan_in = cin * k * k
        self.sd[f"{name}.weight"] = (self.rng.standard_normal((cout, cin, k, k)) / np.sqrt(fan_in)).astype(np.float32)
        if bias:
            self.sd[f"{name}.bias"] = (0.1 * self.rng.standard_normal(cout)).astype(np.float32)

    def bn(self, name, c):
        self.sd[f"{name}.weight"] = (1 + 0.2 * self.rng.standard_normal(c)).astype(np.float32)
        self.sd[f"{name}.bias"] = (0.2 * self.rng.standard_normal(c)).astype(np.float32)
        self.sd[f"{name}.running_mean"] = (0.2 * self.rng.standard_normal(c)).astype(np.float32)
        self.sd[f"{name}.running_var"] = (1 + 0.5 * self.rng.random(c)).astype(np.float32)
        self.sd[f"{name}.num_batches_tracked"] = np.array(1000, np.int64)


def state_dict(
    *, widths, stem_width, planes, layer1_blocks, stage_modules, stage_blocks, num_classes, seed=0, ocr=None, cls=None
):
    """An official-layout HRNetV2 state_dict with random values.

    Arguments mirror the official config: ``widths`` of the 4 branches, ``stem_width`` (64 in
    the official code), Bottleneck ``planes`` and ``layer1_blocks`` (64 and 4),
    ``stage_modules``/``stage_blocks`` of stages 2-4 (official W48: (1, 4, 3) and (4, 4, 4)).
    ``ocr``: ``(mid_channels, key_channels)`` for HRNet-OCR's head (``seg_hrnet_ocr``: 512,
    256) instead of HRNetV2's ``last_layer``. ``cls``: ``(head_channels, features)`` for
    HRNet-Image-Classification's head (``cls_hrnet``: (32, 64, 128, 256), 2048).
    """
    w = _Writer(seed)
    w.conv("conv1", 3, stem_width, 3)
    w.bn("bn1", stem_width)
    w.conv("conv2", stem_width, stem_width, 3)
    w.bn("bn2", stem_width)
    cin = stem_width
    for b in range(layer1_blocks):
        p = f"layer1.{b}"
        w.conv(f"{p}.conv1", cin, planes, 1)
        w.bn(f"{p}.bn1", planes)
        w.conv(f"{p}.conv2", planes, planes, 3)
        w.bn(f"{p}.bn2", planes)
        w.conv(f"{p}.conv3", planes, 4 * planes, 1)
        w.bn(f"{p}.bn3", 4 * planes)
        if cin != 4 * planes:
            w.conv(f"{p}.downsample.0", cin, 4 * planes, 1)
            w.bn(f"{p}.downsample.1", 4 * planes)
        cin = 4 * planes
    pre = [cin]
    for s, (modules, blocks) in enumerate(zip(stage_modules, stage_blocks)):
        cur = list(widths[: s + 2])
        t = f"transition{s + 1}"
        for i, c in enumerate(cur):
            if i < len(pre):
                if c != pre[i]:
                    w.conv(f"{t}.{i}.0", pre[i], c, 3)
                    w.bn(f"{t}.{i}.1", c)
            else:
                for j in range(i + 1 - len(pre)):
                    out = c if j == i - len(pre) else pre[-1]
                    w.conv(f"{t}.{i}.{j}.0", pre[-1], out, 3)
                    w.bn(f"{t}.{i}.{j}.1", out)
        for m in range(modules):
            module(w, f"stage{s + 2}.{m}", cur, blocks)
        pre = cur
    total = sum(widths)
    if cls is not None:
        cls_head(w, widths, num_classes, *cls)
        return w.sd
    if ocr is not None:
        ocr_head(w, total, num_classes, *ocr)
        return w.sd
    w.conv("last_layer.0", total, total, 1, bias=True)
    w.bn("last_layer.1", total)
    w.conv("last_layer.3", total, num_classes, 1, bias=True)
    return w.sd


def cls_head(w, widths, num_classes, head_channels, features):
    """HRNet-Image-Classification's head keys (``cls_hrnet._make_head`` and ``classifier``)."""
    for i, (c, h) in enumerate(zip(widths, head_channels)):
        p = f"incre_modules.{i}.0"
        w.conv(f"{p}.conv1", c, h, 1)
        w.bn(f"{p}.bn1", h)
        w.conv(f"{p}.conv2", h, h, 3)
        w.bn(f"{p}.bn2", h)
        w.conv(f"{p}.conv3", h, 4 * h, 1)
        w.bn(f"{p}.bn3", 4 * h)
        w.conv(f"{p}.downsample.0", c, 4 * h, 1)
        w.bn(f"{p}.downsample.1", 4 * h)
    for i in range(len(widths) - 1):
        w.conv(f"downsamp_modules.{i}.0", 4 * head_channels[i], 4 * head_channels[i + 1], 3, bias=True)
        w.bn(f"downsamp_modules.{i}.1", 4 * head_channels[i + 1])
    w.conv("final_layer.0", 4 * head_channels[-1], features, 1, bias=True)
    w.bn("final_layer.1", features)
    w.sd["classifier.weight"] = (w.rng.standard_normal((num_classes, features)) / np.sqrt(features)).astype(np.float32)
    w.sd["classifier.bias"] = (0.1 * w.rng.standard_normal(num_classes)).astype(np.float32)


def ocr_head(w, total, num_classes, mid, key):
    """HRNet-OCR's head keys (``BNReLU`` is a Sequential, hence ``.1.0`` for its BatchNorm)."""
    w.conv("conv3x3_ocr.0", total, mid, 3, bias=True)
    w.bn("conv3x3_ocr.1", mid)
    w.conv("aux_head.0", total, total, 1, bias=True)
    w.bn("aux_head.1", total)
    w.conv("aux_head.3", total, num_classes, 1, bias=True)
    p = "ocr_distri_head.object_context_block"
    for part in ("f_pixel", "f_object"):
        w.conv(f"{p}.{part}.0", mid, key, 1)
        w.bn(f"{p}.{part}.1.0", key)
        w.conv(f"{p}.{part}.2", key, key, 1)
        w.bn(f"{p}.{part}.3.0", key)
    w.conv(f"{p}.f_down.0", mid, key, 1)
    w.bn(f"{p}.f_down.1.0", key)
    w.conv(f"{p}.f_up.0", key, mid, 1)
    w.bn(f"{p}.f_up.1.0", mid)
    w.conv("ocr_distri_head.conv_bn_dropout.0", 2 * mid, mid, 1)
    w.bn("ocr_distri_head.conv_bn_dropout.1.0", mid)
    w.conv("cls_head", mid, num_classes, 1, bias=True)


def module(w, prefix, widths, blocks):
    n = len(widths)
    for i in range(n):
        for k in range(blocks):
            p = f"{prefix}.branches.{i}.{k}"
            w.conv(f"{p}.conv1", widths[i], widths[i], 3)
            w.bn(f"{p}.bn1", widths[i])
            w.conv(f"{p}.conv2", widths[i], widths[i], 3)
            w.bn(f"{p}.bn2", widths[i])
    for i in range(n):
        for j in range(n):
            p = f"{prefix}.fuse_layers.{i}.{j}"
            if j > i:
                w.conv(f"{p}.0", widths[j], widths[i], 1)
                w.bn(f"{p}.1", widths[i])
            elif j < i:
                for k in range(i - j):
                    out = widths[i] if k == i - j - 1 else widths[j]
                    w.conv(f"{p}.{k}.0", widths[j], out, 3)
                    w.bn(f"{p}.{k}.1", out)


# ---------------------------------------------------------------------------------------
# The forward pass (NCHW, eval mode).


def conv2d(x, weight, stride=1):
    """PyTorch ``nn.Conv2d(k, stride, padding=k // 2, bias=False)``: x (N, C, H, W)."""
    k = weight.shape[-1]
    pad = k // 2
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    n, c, h, wd = x.shape
    oh, ow = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    out = np.zeros((n, weight.shape[0], oh, ow), np.float64)
    for dy in range(k):
        for dx in range(k):
            patch = xp[:, :, dy : dy + stride * (oh - 1) + 1 : stride, dx : dx + stride * (ow - 1) + 1 : stride]
            out += np.einsum("nchw,oc->nohw", patch, weight[:, :, dy, dx].astype(np.float64))
    return out


def bn(x, sd, name):
    mean, var = sd[f"{name}.running_mean"], sd[f"{name}.running_var"]
    scale, bias = sd[f"{name}.weight"], sd[f"{name}.bias"]
    c = (None, slice(None), None, None)
    return (x - mean[c]) / np.sqrt(var[c] + EPS) * scale[c] + bias[c]


def relu(x):
    return np.maximum(x, 0)


def upsample_bilinear(x, size):
    """``F.interpolate(x, size, mode="bilinear", align_corners=False)``."""

    def axis_weights(out_len, in_len):
        scale = in_len / out_len
        src = np.maximum((np.arange(out_len) + 0.5) * scale - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(int), in_len - 1)
        i1 = np.minimum(i0 + 1, in_len - 1)
        return i0, i1, src - i0

    i0, i1, wy = axis_weights(size[0], x.shape[2])
    x = x[:, :, i0] * (1 - wy)[None, None, :, None] + x[:, :, i1] * wy[None, None, :, None]
    j0, j1, wx = axis_weights(size[1], x.shape[3])
    return x[:, :, :, j0] * (1 - wx) + x[:, :, :, j1] * wx


def basic_block(x, sd, p):
    y = relu(bn(conv2d(x, sd[f"{p}.conv1.weight"]), sd, f"{p}.bn1"))
    y = bn(conv2d(y, sd[f"{p}.conv2.weight"]), sd, f"{p}.bn2")
    return relu(y + x)


def fuse_path(x, sd, prefix, i, j, size):
    """The official ``fuse_layers[i][j]`` applied to branch j's output (upsampled if j > i)."""
    p = f"{prefix}.fuse_layers.{i}.{j}"
    if j > i:
        return upsample_bilinear(bn(conv2d(x, sd[f"{p}.0.weight"]), sd, f"{p}.1"), size)
    for k in range(i - j):
        x = bn(conv2d(x, sd[f"{p}.{k}.0.weight"], stride=2), sd, f"{p}.{k}.1")
        if k < i - j - 1:
            x = relu(x)
    return x


def fuse(xs, sd, prefix):
    """The official HighResolutionModule's fuse step (sum in the official order, then ReLU)."""
    outs = []
    for i in range(len(xs)):
        size = xs[i].shape[2:]
        y = xs[0] if i == 0 else fuse_path(xs[0], sd, prefix, i, 0, size)
        for j in range(1, len(xs)):
            y = y + (xs[j] if i == j else fuse_path(xs[j], sd, prefix, i, j, size))
        outs.append(relu(y))
    return outs


def hr_module(xs, sd, prefix, blocks):
    xs = list(xs)
    for i in range(len(xs)):
        for k in range(blocks):
            xs[i] = basic_block(xs[i], sd, f"{prefix}.branches.{i}.{k}")
    return fuse(xs, sd, prefix)
