"""Writes the .pth fixtures of tests/convert with real PyTorch (run once; the files are
committed, the tests do not need torch):

    python3.11 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch==2.13.0 numpy
    /tmp/torchvenv/bin/python -m tests.convert.make_fixtures   # from the repository root

hrnet_tiny_{zip,legacy}.pth: official-layout HRNet state_dict (tests/convert/official.py,
``TINY``) saved in PyTorch's zip format and in its legacy format, as ``torch.save`` of
``model.state_dict()`` writes them (OrderedDict with ``_metadata``).
hrnet_ocr_tiny.pth: the same backbone with HRNet-OCR's head (``TINY_OCR``).
hrnet_cls_tiny.pth: the same backbone with HRNet-Image-Classification's head (``TINY_CLS``,
the ``cls_hrnet`` forward: incre/downsamp modules, final layer, average pooling, classifier).
{hrnet,hrnet_ocr}_tiny_forward.npz: an input image and the whole network's output computed by
PyTorch in eval mode (``torch_forward`` below: the official ``seg_hrnet`` /
``seg_hrnet_ocr`` forward pass, written as functional torch over the state_dict, and the
official test-time upsampling of the logits to the image size), for both ``align_corners``.
"""

import collections
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

if not __package__:  # run by path: the imports below need the repository root, which `python -m` puts on the path
    print("error: run it as a module from the repository root: python -m tests.convert.make_fixtures", file=sys.stderr)
    sys.exit(2)

from tests.convert.official import state_dict  # noqa: E402
from tests.convert.spec import TINY, TINY_CLS, TINY_OCR  # noqa: E402

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
BN_EPS = 1e-5


# ---------------------------------------------------------------------------------------
# The official forward pass in torch (eval mode), walking the official module structure.


class Net:
    def __init__(self, sd, align_corners):
        self.sd = {k: torch.from_numpy(v.copy()) for k, v in sd.items()}
        self.ac = align_corners

    def has(self, name):
        return f"{name}.weight" in self.sd

    def conv(self, x, name, stride=1):
        w = self.sd[f"{name}.weight"]
        return F.conv2d(x, w, self.sd.get(f"{name}.bias"), stride=stride, padding=w.shape[-1] // 2)

    def bn(self, x, name):
        sd = self.sd
        return F.batch_norm(
            x,
            sd[f"{name}.running_mean"],
            sd[f"{name}.running_var"],
            sd[f"{name}.weight"],
            sd[f"{name}.bias"],
            training=False,
            eps=BN_EPS,
        )

    def up(self, x, size):
        return F.interpolate(x, size=size, mode="bilinear", align_corners=self.ac)

    def bottleneck(self, x, p):
        y = F.relu(self.bn(self.conv(x, f"{p}.conv1"), f"{p}.bn1"))
        y = F.relu(self.bn(self.conv(y, f"{p}.conv2"), f"{p}.bn2"))
        y = self.bn(self.conv(y, f"{p}.conv3"), f"{p}.bn3")
        res = self.bn(self.conv(x, f"{p}.downsample.0"), f"{p}.downsample.1") if self.has(f"{p}.downsample.0") else x
        return F.relu(y + res)

    def basic(self, x, p):
        y = F.relu(self.bn(self.conv(x, f"{p}.conv1"), f"{p}.bn1"))
        y = self.bn(self.conv(y, f"{p}.conv2"), f"{p}.bn2")
        return F.relu(y + x)

    def fuse_path(self, x, p, i, j):
        if j > i:
            return self.bn(self.conv(x, f"{p}.0"), f"{p}.1")
        for k in range(i - j):
            x = self.bn(self.conv(x, f"{p}.{k}.0", stride=2), f"{p}.{k}.1")
            if k < i - j - 1:
                x = F.relu(x)
        return x

    def hr_module(self, xs, p, blocks):
        xs = list(xs)
        n = len(xs)
        for i in range(n):
            for k in range(blocks):
                xs[i] = self.basic(xs[i], f"{p}.branches.{i}.{k}")
        out = []
        for i in range(n):
            f = f"{p}.fuse_layers.{i}"
            y = xs[0] if i == 0 else self.fuse_path(xs[0], f"{f}.0", i, 0)
            for j in range(1, n):
                if i == j:
                    y = y + xs[j]
                elif j > i:
                    y = y + self.up(self.fuse_path(xs[j], f"{f}.{j}", i, j), xs[i].shape[2:])
                else:
                    y = y + self.fuse_path(xs[j], f"{f}.{j}", i, j)
            out.append(F.relu(y))
        return out

    def transition(self, ys, t, n):
        xs = []
        for i in range(n):
            if i < len(ys):
                xs.append(
                    F.relu(self.bn(self.conv(ys[i], f"{t}.{i}.0"), f"{t}.{i}.1")) if self.has(f"{t}.{i}.0") else ys[i]
                )
            else:
                x, j = ys[-1], 0
                while self.has(f"{t}.{i}.{j}.0"):
                    x = F.relu(self.bn(self.conv(x, f"{t}.{i}.{j}.0", stride=2), f"{t}.{i}.{j}.1"))
                    j += 1
                xs.append(x)
        return xs

    def branches(self, x, spec):
        x = F.relu(self.bn(self.conv(x, "conv1", stride=2), "bn1"))
        x = F.relu(self.bn(self.conv(x, "conv2", stride=2), "bn2"))
        for b in range(spec["layer1_blocks"]):
            x = self.bottleneck(x, f"layer1.{b}")
        ys = [x]
        for s, (modules, blocks) in enumerate(zip(spec["stage_modules"], spec["stage_blocks"])):
            ys = self.transition(ys, f"transition{s + 1}", s + 2)
            for m in range(modules):
                ys = self.hr_module(ys, f"stage{s + 2}.{m}", blocks)
        return ys

    def backbone(self, x, spec):
        ys = self.branches(x, spec)
        size = ys[0].shape[2:]
        return torch.cat([ys[0]] + [self.up(y, size) for y in ys[1:]], 1)

    def units(self, x, p, n):
        for k in range(n):
            x = F.relu(self.bn(self.conv(x, f"{p}.{2 * k}"), f"{p}.{2 * k + 1}.0"))
        return x

    def ocr(self, feats):
        aux = F.relu(self.bn(self.conv(feats, "aux_head.0"), "aux_head.1"))
        aux = self.conv(aux, "aux_head.3")
        x = F.relu(self.bn(self.conv(feats, "conv3x3_ocr.0"), "conv3x3_ocr.1"))
        n, c, h, w = x.shape
        # Spatial gather: softmax over pixels per class, then the weighted pixel features.
        probs = F.softmax(aux.reshape(n, aux.shape[1], -1), dim=2)
        objects = torch.matmul(probs, x.reshape(n, c, -1).permute(0, 2, 1)).permute(0, 2, 1).unsqueeze(3)
        p = "ocr_distri_head.object_context_block"
        query = self.units(x, f"{p}.f_pixel", 2)
        key_ch = query.shape[1]
        query = query.reshape(n, key_ch, -1).permute(0, 2, 1)
        key = self.units(objects, f"{p}.f_object", 2).reshape(n, key_ch, -1)
        value = self.units(objects, f"{p}.f_down", 1).reshape(n, key_ch, -1).permute(0, 2, 1)
        sim = F.softmax(torch.matmul(query, key) * key_ch**-0.5, dim=-1)
        ctx = torch.matmul(sim, value).permute(0, 2, 1).reshape(n, key_ch, h, w)
        ctx = self.units(ctx, f"{p}.f_up", 1)
        x = self.units(torch.cat([ctx, x], 1), "ocr_distri_head.conv_bn_dropout", 1)  # Dropout2d: identity in eval
        return self.conv(x, "cls_head"), aux

    def classify(self, image, spec):
        """cls_hrnet's forward after stage 4 (its backbone is seg_hrnet's without the concat)."""
        ys = self.branches(image, spec)
        y = self.bottleneck(ys[0], "incre_modules.0.0")
        for i in range(len(ys) - 1):
            down = F.relu(self.bn(self.conv(y, f"downsamp_modules.{i}.0", stride=2), f"downsamp_modules.{i}.1"))
            y = self.bottleneck(ys[i + 1], f"incre_modules.{i + 1}.0") + down
        y = F.relu(self.bn(self.conv(y, "final_layer.0"), "final_layer.1"))
        y = F.avg_pool2d(y, kernel_size=y.size()[2:]).flatten(1)
        return {"logits": F.linear(y, self.sd["classifier.weight"], self.sd["classifier.bias"])}

    def forward(self, image, spec):
        if self.has("classifier"):
            return self.classify(image, spec)
        feats = self.backbone(image, spec)
        size = image.shape[2:]
        if self.has("cls_head"):
            out, aux = self.ocr(feats)
            return {"logits": self.up(out, size), "aux_logits": aux}
        y = F.relu(self.bn(self.conv(feats, "last_layer.0"), "last_layer.1"))
        return {"logits": self.up(self.conv(y, "last_layer.3"), size)}


def write_forward(sd, spec, name):
    image = np.random.default_rng(7).standard_normal((2, 3, 37, 29)).astype(np.float32)
    arrays = {"image": image}
    sd64 = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in sd.items()}  # float64 reference
    with torch.no_grad():
        for ac in (False, True):
            out = Net(sd64, ac).forward(torch.from_numpy(image.astype(np.float64)), spec)
            for k, v in out.items():
                arrays[f"{k}_align_corners_{int(ac)}"] = v.numpy().astype(np.float32)
    np.savez_compressed(os.path.join(HERE, name), **arrays)


def main():
    os.makedirs(HERE, exist_ok=True)
    sd = collections.OrderedDict((k, torch.from_numpy(v.copy())) for k, v in state_dict(**TINY).items())
    sd._metadata = collections.OrderedDict([("", {"version": 1})])
    torch.save(sd, os.path.join(HERE, "hrnet_tiny_zip.pth"))
    torch.save(sd, os.path.join(HERE, "hrnet_tiny_legacy.pth"), _use_new_zipfile_serialization=False)
    # A training checkpoint as HRNet-Semantic-Segmentation writes it (FullModel: "model."
    # prefixes, wrapped with the epoch and optimizer state).
    wrapped = {"epoch": 3, "state_dict": collections.OrderedDict((f"model.{k}", v) for k, v in sd.items())}
    torch.save(wrapped, os.path.join(HERE, "hrnet_tiny_training_ckpt.pth"))
    ocr_sd = state_dict(**TINY_OCR)
    sd_ocr = collections.OrderedDict((k, torch.from_numpy(v.copy())) for k, v in ocr_sd.items())
    sd_ocr._metadata = collections.OrderedDict([("", {"version": 1})])
    torch.save(sd_ocr, os.path.join(HERE, "hrnet_ocr_tiny.pth"))
    write_forward(state_dict(**TINY), TINY, "hrnet_tiny_forward.npz")
    write_forward(ocr_sd, TINY_OCR, "hrnet_ocr_tiny_forward.npz")
    cls_sd = state_dict(**TINY_CLS)
    sd_cls = collections.OrderedDict((k, torch.from_numpy(v.copy())) for k, v in cls_sd.items())
    torch.save(sd_cls, os.path.join(HERE, "hrnet_cls_tiny.pth"))
    write_forward(cls_sd, TINY_CLS, "hrnet_cls_tiny_forward.npz")
    for name in sorted(os.listdir(HERE)):
        print(name, os.path.getsize(os.path.join(HERE, name)))


if __name__ == "__main__":
    main()
