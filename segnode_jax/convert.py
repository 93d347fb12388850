"""Converts official HRNet (and torchvision ResNet / DeepLabv3, milesial's U-Net, the U-Node
authors' ConvODEUNet) PyTorch checkpoints into segnode-jax variables.

    python -m segnode_jax.convert --torch hrnetv2_w48_imagenet_pretrained.pth \\
        --config configs/cityscapes.py --out pretrained/hrnetv2_w48_imagenet
    python train.py --config configs/cityscapes.py --workdir runs/cs --config.init_from=pretrained/hrnetv2_w48_imagenet
    python -m segnode_jax.convert --torch resnet101-63fe2227.pth --config configs/camvid.py \\
        --config.model.name=deeplabv3 --out pretrained/resnet101_imagenet   # torchvision's ImageNet ResNet

Reads the ``.pth`` without PyTorch (``segnode_jax.pth``), maps every official key (e.g.
``stage4.0.fuse_layers.0.1.0.weight``) to a variable of the config's model, and writes
``OUT/variables`` (an orbax checkpoint of the -- possibly partial -- ``{"params",
"batch_stats"}`` tree) and ``OUT/conversion.json`` (what was mapped, what stays freshly
initialised, what was ignored). ``--config.init_from=OUT`` starts training from it; the rest of
the model is initialised as usual. What maps where, per model: docs/pretrained.md.

Exit status: 0 done, 2 bad input (one ``error:`` line naming the fix).
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from segnode_jax import api, checkpoints, cli, data, pth
from segnode_jax.checkpoints import CONVERSION_INFO, CONVERTED_VARIABLES
from segnode_jax.errors import UserError
from segnode_jax.models import model_names
from segnode_jax.models.resnet import BLOCKS, resnet_settings
from segnode_jax.weights import flatten, unflatten

FORMAT = "segnode-jax-converted/1"
# The registered models (segnode_jax.models.model_names()) this HRNet mapping knows.
CONVERTIBLE = ("hrnetv2", "baseline", "segnode")
# Models on torchvision's ResNet: its ImageNet checkpoints (backbone) and DeepLabv3 checkpoints.
RESNET_MODELS = ("pspnet", "deeplabv3")
# Models whose modules mirror a reference PyTorch model's names: milesial/Pytorch-UNet's UNet
# and the U-Node authors' ConvODEUNet (DIAGNijmegen/neural-odes-segmentation).
REFERENCE_MODELS = {"unet": "milesial/Pytorch-UNet's UNet", "unode": "neural-odes-segmentation's ConvODEUNet"}
# Keys of HRNet-Image-Classification's ImageNet head: never part of a segmentation network.
CLASSIFICATION_PREFIXES = ("incre_modules", "downsamp_modules", "final_layer", "classifier")
# Wrappers used by the official training code (DataParallel, HRNet-Semantic-Segmentation's
# FullModel) in front of the network's own keys.
KEY_PREFIXES = ("module.", "model.")
STEM = ("conv1", "bn1", "conv2", "bn2", "layer1")
# Top-level modules of HRNet-OCR's head (seg_hrnet_ocr; segnode_jax.models.ocr).
OCR_PARTS = ("conv3x3_ocr", "aux_head", "ocr_distri_head", "cls_head")


class ConversionError(UserError):
    """The file or the config cannot be converted; the message names the fix."""


@dataclass
class Conversion:
    """The result of :func:`convert_state_dict`.

    Attributes:
      variables: ``{"params": ..., "batch_stats": ...}`` nested dicts of the mapped arrays.
      mapped: our variable path -> official key it came from.
      fresh: variable paths of the model left to their initialisation.
      ignored: official key -> why it is not used.
      unexpected: official keys with no place in the model.
      missing: variable paths the mapping should fill but the file lacks.
      mismatched: official key -> (its shape, the model's shape), incompatible.
      width: the HRNet width detected in the file.
    """

    variables: dict[str, Any]
    mapped: dict[str, str] = field(default_factory=dict)
    fresh: list[str] = field(default_factory=list)
    ignored: dict[str, str] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    mismatched: dict[str, tuple] = field(default_factory=dict)
    width: int | None = None


# ---------------------------------------------------------------------------------------
# Reading.


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """The state_dict in an official checkpoint, with wrapper prefixes removed.

    Accepts a bare state_dict, or a dict holding one under ``state_dict``/``model``/``net``
    (training checkpoints), with keys optionally prefixed by ``module.`` or ``model.``.

    Raises:
      ConversionError: the file is not a PyTorch checkpoint holding a state_dict.
    """
    try:
        obj = pth.load(path)
    except FileNotFoundError:
        raise ConversionError(f"--torch {path} does not exist; pass the path of the official .pth file") from None
    except pth.PthError as e:
        raise ConversionError(str(e)) from None
    for wrapper in ("state_dict", "model", "net"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    arrays = {k: v for k, v in obj.items() if isinstance(v, np.ndarray)} if isinstance(obj, Mapping) else {}
    if not arrays:
        kind = type(obj).__name__
        raise ConversionError(
            f"{path} holds a {kind} without tensors, not a state_dict; pass a file saved with "
            "torch.save(model.state_dict(), ...) such as the official HRNet .pth files"
        )
    out = {}
    for key, value in arrays.items():
        for prefix in KEY_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = value
    return out


# ---------------------------------------------------------------------------------------
# Official key -> our path.


def _group(parts: list[str]) -> list[str]:
    """``["stage4", "0", "branches", "0", "1", "conv1"]`` -> ``["stage4_0", "branches_0_1",
    "conv1"]``: sequential indices join their container's name, as our modules are named."""
    out: list[str] = []
    for p in parts:
        if p.isdigit() and out:
            out[-1] = f"{out[-1]}_{p}"
        else:
            out.append(p)
    return out


def official_path(key: str) -> tuple[list[str], str] | None:
    """Our module path (as in HRNetV2) and the official leaf name of an official key, e.g.
    ``stage4.0.fuse_layers.0.1.0.weight`` -> ``(["stage4_0", "fuse_layers_0_1_0"], "weight")``,
    ``layer1.0.conv1.weight`` -> ``(["stem", "layer1_0", "conv1"], "weight")``; None for keys
    that are no part of an HRNet segmentation network."""
    *parts, leaf = key.split(".")
    if not parts:
        return None
    path = _group(parts)
    head = path[0].split("_")[0]
    if path[0] in STEM or head == "layer1":
        path = ["stem"] + path
    elif head == "last" or path[0] in OCR_PARTS or path[0].rsplit("_", 1)[0] in OCR_PARTS:
        path = ["head"] + path  # last_layer_N (HRNetV2's head) or HRNet-OCR's head
    elif not re.fullmatch(r"(transition\d|stage\d)(_\d+)*", path[0]):
        return None
    return path, leaf


def _route(path: list[str], model_cfg, num_stage4: int, has_aux: bool = False) -> tuple[list[str] | None, str]:
    """Where an HRNetV2 module path goes in the config's model: ``(target path, note)``;
    target None means the key is not used (the note says why)."""
    name = model_cfg.name
    top = path[0]
    if top == "head":
        return _head_route(path, model_cfg, has_aux)
    if name == "hrnetv2" or top == "stem":
        return path, ""
    if name == "baseline":
        m = re.fullmatch(r"stage4_(\d+)", top)
        if top.startswith("transition4") or (top.startswith("stage4") and not m):
            return None, "not an HRNet module"
        if m:
            return _module_route(
                path, int(m.group(1)), num_stage4, int(model_cfg.baseline.num_modules), "repeat_{}", None
            )
        return path, ""
    # segnode
    if re.fullmatch(r"transition1_[01](_\d+)*", top):
        return path, ""
    m = re.fullmatch(r"stage4_(\d+)", top)
    if m:
        return _module_route(
            path, int(m.group(1)), num_stage4, int(model_cfg.segnode.modules_per_field), "module_{}", ["ode", "field"]
        )
    return None, "SegNode goes from layer1 straight to 4 branches: stages 2-3 and transitions 2-3 are not part of it"


def _head_route(path: list[str], model_cfg, has_aux: bool) -> tuple[list[str] | None, str]:
    """A head key (HRNetV2's ``last_layer`` or HRNet-OCR's) into the config's head. An OCR head
    takes the OCR keys in every model; without OCR keys, HRNetV2's ``last_layer`` (the same
    1x1 conv, BN, ReLU, 1x1 conv) initialises its auxiliary head, as HRNet-OCR's own code does
    when it starts from an HRNetV2 checkpoint."""
    ocr = model_cfg.get("head", "default") == "ocr"
    part = path[1]
    if model_cfg.get("task", "segmentation") == "classification":
        return None, "a segmentation head; the model is a classifier (model.task=classification)"
    if part.startswith("last_layer"):
        if ocr and has_aux:
            return None, "HRNetV2's head; the file's own OCR auxiliary head is used"
        if ocr:
            return ["head", part.replace("last_layer", "aux_head")], ""
        if model_cfg.name == "segnode":
            return None, "SegNode's head (per-branch classifiers) has no HRNet counterpart"
        return path, ""
    if not ocr:
        return None, "an OCR head's weight; the model's head is not OCR (set model.head=ocr to use it)"
    return path, ""


def _module_route(path, m: int, num_stage4: int, count: int, pattern: str, prefix: list[str] | None):
    """A stage-4 module of the file into one of the ``count`` pre-activation modules: the last
    ``count`` stage-4 modules fill them in order. In a BasicBlock the official ``bn1``
    (normalising conv1's output) is our ``norm2`` (the same position); the official ``bn2``
    (after conv2) has no counterpart (our ``norm1`` normalises the block input)."""
    r = m - (num_stage4 - count)
    if r < 0:
        return None, f"only the last {count} stage-4 module(s) are used"
    rest = list(path[1:])
    if rest and rest[0].startswith("branches_") and len(rest) > 1:
        if rest[1] == "bn1":
            rest[1] = "norm2"
        elif rest[1] == "bn2":
            return None, "a pre-activation block has no norm after conv2 (its norm1 stays fresh)"
    return (prefix or []) + [pattern.format(r)] + rest, ""


def _hrnet_route(key: str, model_cfg, num_stage4: int, has_aux: bool):
    """``(target path | None, leaf, why)`` of an official HRNet key; ``why`` None: unexpected."""
    found = official_path(key)
    if found is None or found[1] not in _LEAVES:
        return None, None, None
    path, leaf = found
    target, why = _route(path, model_cfg, num_stage4, has_aux)
    return target, leaf, why


def _resnet_route(key: str, model_cfg):
    """``(target path | None, leaf, why)`` of a torchvision key in pspnet / deeplabv3.

    ImageNet classification checkpoints (``conv1.weight``, ``layer3.5.bn2.running_var``,
    ``fc.*``) go into the backbone; torchvision's segmentation checkpoints already say
    ``backbone.``, and their ``classifier`` / ``aux_classifier`` (DeepLabv3's heads) map one to
    one into ours; hszhao/semseg's PSPNet head (``ppm``, ``cls``, ``aux``) likewise (its deep-stem
    ``layer0`` has no counterpart). The module names mirror the references', so the path is the
    key's.
    """
    *parts, leaf = key.split(".")
    if not parts or leaf not in _LEAVES:
        return None, None, None
    top = parts[0]
    if top == "fc":
        return None, leaf, "ImageNet classifier"
    if top in ("conv1", "bn1") or re.fullmatch(r"layer[1-4]", top):
        parts = ["backbone"] + parts
    elif top in ("ppm", "cls", "aux"):  # hszhao/semseg's PSPNet head
        if model_cfg.name != "pspnet":
            return None, leaf, "PSPNet's head; this model is DeepLabv3 (its head stays fresh)"
        if top == "aux" and not model_cfg.pspnet.aux_head:
            return None, leaf, "PSPNet's auxiliary head; set model.pspnet.aux_head=True to use it"
    elif top == "layer0":
        return (
            None,
            leaf,
            "hszhao/semseg's deep stem (three 3x3 convolutions); this ResNet has torchvision's 7x7 stem, which stays fresh",
        )
    elif top in ("classifier", "aux_classifier"):
        if model_cfg.name != "deeplabv3":
            return None, leaf, "DeepLabv3's head; this model is PSPNet (its head stays fresh)"
        if top == "aux_classifier" and not model_cfg.deeplabv3.aux_head:
            return None, leaf, "torchvision's auxiliary classifier; set model.deeplabv3.aux_head=True to use it"
    elif top != "backbone":
        return None, None, None
    return _group(parts), leaf, ""


# A Sequential DoubleConv of milesial's U-Net: conv, BatchNorm, ReLU, conv, BatchNorm, ReLU.
_DOUBLE_CONV = {"0": "conv1", "1": "bn1", "3": "conv2", "4": "bn2"}


def _reference_route(key: str, model_cfg):
    """``(target path | None, leaf, why)`` of a U-Net (milesial) or U-Node (ConvODEUNet) key.

    U-Net: ``inc.double_conv.3.weight`` -> ``inc/conv2``, ``down2.maxpool_conv.1.double_conv.0``
    -> ``down2/conv1``, ``up1.up`` (the transposed convolution) -> ``up1/up``,
    ``up1.conv.double_conv.4`` -> ``up1/conv/bn2``, ``outc.conv`` -> ``outc``. U-Node:
    ``odeblock_down1.odefunc.conv1`` -> ``odeblock_down1/field/conv1`` (the ODE block's field),
    the 1x1 convolutions and the classifier by their own names (its InstanceNorms have no
    weights)."""
    *parts, leaf = key.split(".")
    if not parts or leaf not in _LEAVES:
        return None, None, None
    top, rest = parts[0], parts[1:]
    if model_cfg.name == "unode":
        if re.fullmatch(r"odeblock_(down\d+|embedding|up\d+)", top) and rest[:1] == ["odefunc"] and len(rest) == 2:
            return [top, "field", rest[1]], leaf, ""
        if not rest and re.fullmatch(r"input_1x1|conv_(down\d+_(\d+|embed)|up_embed_1|up\d+_\d+)|classifier", top):
            return [top], leaf, ""
        return None, None, None
    if top == "outc" and rest == ["conv"]:
        return ["outc"], leaf, ""
    if not re.fullmatch(r"inc|down\d+|up\d+", top):
        return None, None, None
    if rest[:2] == ["maxpool_conv", "1"]:
        rest = rest[2:]
    if top.startswith("up") and rest == ["up"]:
        return [top, "up"], leaf, ""
    inner = [rest.pop(0)] if top.startswith("up") and rest[:1] == ["conv"] else []
    if len(rest) == 2 and rest[0] == "double_conv" and rest[1] in _DOUBLE_CONV:
        return [top, *inner, _DOUBLE_CONV[rest[1]]], leaf, ""
    return None, None, None


def _check_reference(state_dict, model_cfg, strict: bool) -> int:
    """Refuses a U-Net / U-Node file of another width, depth or variant than the config's
    (the message names the setting); strict, also a U-Node config whose fields would not
    compute what the file's network computes. Returns the first level's width."""
    name = model_cfg.name
    if name == "unet":
        section, first, count_pattern = model_cfg.unet, "inc.double_conv.0.weight", r"down(\d+)\."
        width_field, depth_field, depth = "base_width", "depth", int(model_cfg.unet.depth)
    else:
        section, first, count_pattern = model_cfg.unode, "input_1x1.weight", r"odeblock_down(\d+)\."
        width_field, depth_field, depth = "num_filters", "levels", int(model_cfg.unode.levels)
    if first not in state_dict or np.ndim(state_dict[first]) != 4:
        raise ConversionError(
            f"the checkpoint has no {first}: it is not {REFERENCE_MODELS[name]} (model.name={name}); "
            "pass that model's state_dict, or another --config.model.name"
        )
    width = int(np.shape(state_dict[first])[0])
    if width != int(section[width_field]):
        raise ConversionError(
            f"the checkpoint's first level has {width} channels but the config has model.{name}.{width_field}="
            f"{int(section[width_field])}: pass --config.model.{name}.{width_field}={width}"
        )
    found = {int(m.group(1)) for k in state_dict if (m := re.match(count_pattern, k))}
    if found and max(found) != depth:
        raise ConversionError(
            f"the checkpoint has {max(found)} down levels but the config has model.{name}.{depth_field}={depth}: "
            f"pass --config.model.{name}.{depth_field}={max(found)}"
        )
    if name == "unet":
        transposed = any(re.match(r"up\d+\.up\.weight$", k) for k in state_dict)
        if transposed != (model_cfg.unet.upsampling == "transposed"):
            variant = "transposed" if transposed else "bilinear"
            raise ConversionError(
                f"the checkpoint is the {variant} U-Net (bilinear={not transposed} in milesial's code) but the config has "
                f"model.unet.upsampling={model_cfg.unet.upsampling!r}: pass --config.model.unet.upsampling={variant}"
            )
    else:
        conv1 = state_dict.get("odeblock_down1.odefunc.conv1.weight")
        if conv1 is not None and (int(np.shape(conv1)[1]) == width + 1) != bool(model_cfg.unode.time_dependent):
            td = int(np.shape(conv1)[1]) == width + 1
            raise ConversionError(
                f"the checkpoint's ODE fields are {'' if td else 'not '}time-dependent but the config has "
                f"model.unode.time_dependent={bool(model_cfg.unode.time_dependent)}: pass --config.model.unode.time_dependent={td}"
            )
        if (
            strict
            and conv1 is not None
            and bool(model_cfg.unode.time_dependent)
            and model_cfg.unode.get("norm_input", True)
        ):
            raise ConversionError(
                "ConvODEUNet's time-dependent fields convolve the un-normalised state (its first InstanceNorm is unused) "
                "but the config has model.unode.norm_input=True: pass --config.model.unode.norm_input=False to compute "
                "what the file's network computes (--nostrict converts anyway)"
            )
    return width


def _check_hrnet_width(state_dict, model_cfg) -> int | None:
    width = detect_width(state_dict)
    if width is not None and width != int(model_cfg.width):
        raise ConversionError(
            f"the checkpoint is HRNet-W{width} (branch widths {width}, {2 * width}, {4 * width}, {8 * width}) but the "
            f"config has model.width={int(model_cfg.width)}: pass --config.model.width={width} or a W{int(model_cfg.width)} checkpoint"
        )
    return width


def _check_resnet(state_dict, model_cfg) -> int | None:
    """Refuses a torchvision file of another stem width or depth than the config's ResNet
    (the message names the setting); returns the stem width."""

    keys = [k[len("backbone.") :] if k.startswith("backbone.") else k for k in state_dict]
    stem = next((state_dict[k] for k in ("conv1.weight", "backbone.conv1.weight") if k in state_dict), None)
    width = int(np.shape(stem)[0]) if stem is not None and np.ndim(stem) == 4 else None
    if width is not None and width != int(model_cfg.resnet.stem_width):
        raise ConversionError(
            f"the checkpoint's ResNet stem has {width} channels but the config has model.resnet.stem_width="
            f"{int(model_cfg.resnet.stem_width)}: pass --config.model.resnet.stem_width={width}"
        )
    c1, c2, c3, c4 = (len({m.group(1) for k in keys if (m := re.match(rf"layer{i}\.(\d+)\.", k))}) for i in range(1, 5))
    counts = (c1, c2, c3, c4)
    default = 50 if model_cfg.name == "pspnet" else 101
    depth, blocks, _ = resnet_settings(model_cfg, default)
    if all(counts) and counts != blocks:
        named = {v: k for k, v in BLOCKS.items()}
        found = f"ResNet-{named[counts]}" if counts in named else f"a ResNet with {counts} blocks per layer"
        fix = (
            f"--config.model.resnet.depth={named[counts]}"
            if counts in named
            else f"--config.model.resnet.blocks='{counts}'"
        )
        raise ConversionError(
            f"the checkpoint is {found} but the config's {model_cfg.name} has blocks {blocks} (ResNet-{depth}): pass {fix}"
        )
    return width


_LEAVES = {
    "weight": ("params", None),  # kernel (conv) or scale (norm), by rank
    "bias": ("params", "bias"),
    "running_mean": ("batch_stats", "mean"),
    "running_var": ("batch_stats", "var"),
}


def detect_width(state_dict: Mapping[str, np.ndarray]) -> int | None:
    """The HRNet width (channels of the highest-resolution branch) of an official state_dict."""
    for key in ("stage2.0.branches.0.0.conv1.weight", "transition1.0.0.weight"):
        if key in state_dict and np.ndim(state_dict[key]) == 4:
            return int(np.shape(state_dict[key])[0])
    return None


def _num_stage4(state_dict) -> int:
    found = {int(m.group(1)) for k in state_dict if (m := re.match(r"stage4\.(\d+)\.", k))}
    return max(found) + 1 if found else 0


def convert_state_dict(state_dict: Mapping[str, np.ndarray], model_cfg, *, strict: bool = True) -> Conversion:
    """Maps an official state_dict onto the variables of ``model_cfg``'s model.

    Arguments:
      state_dict: official key -> array (NCHW conv weights, BatchNorm weight/bias/
        running_mean/running_var), e.g. from :func:`read_state_dict`.
      model_cfg: ``cfg.model``: ``name`` hrnetv2 | baseline | segnode (HRNet files), pspnet |
        deeplabv3 (torchvision ResNet / DeepLabv3, semseg's PSPNet head), unet (milesial's
        U-Net), unode (ConvODEUNet); with the width and depth settings of the file's network.
      strict: refuse unexpected keys, missing keys and any shape mismatch. Off: those are
        listed in the result, and mismatched entries (e.g. a classifier for another class
        count) stay freshly initialised.

    Returns:
      A :class:`Conversion`.

    Raises:
      ConversionError: another width, or (strict) unexpected/missing keys or shape mismatches.
    """
    import jax

    if model_cfg.name not in model_names():
        raise ConversionError(f"unknown model.name={model_cfg.name!r}; choose one of {', '.join(model_names())}")
    if model_cfg.name not in CONVERTIBLE + RESNET_MODELS + tuple(REFERENCE_MODELS):
        raise ConversionError(
            f"official HRNet weights map into {', '.join(CONVERTIBLE)}, torchvision ResNet/DeepLabv3 weights into "
            f"{', '.join(RESNET_MODELS)}, milesial's U-Net into unet and ConvODEUNet into unode; not into "
            f"model.name={model_cfg.name!r}"
        )
    resnet = model_cfg.name in RESNET_MODELS
    reference = model_cfg.name in REFERENCE_MODELS
    if reference:
        width = _check_reference(state_dict, model_cfg, strict)
    else:
        width = _check_resnet(state_dict, model_cfg) if resnet else _check_hrnet_width(state_dict, model_cfg)
    shapes = jax.eval_shape(lambda: api.init(model_cfg, jax.random.key(0), (1, 64, 64, 3)))
    want = {p: tuple(v.shape) for p, v in flatten({k: shapes.get(k, {}) for k in ("params", "batch_stats")}).items()}
    result = Conversion(variables={}, width=width)
    flat: dict[str, np.ndarray] = {}
    num_stage4 = _num_stage4(state_dict)
    has_aux = any(k.startswith("aux_head.") for k in state_dict)
    for key in sorted(state_dict):
        target, leaf, why = _route_key(key, model_cfg, resnet, num_stage4, has_aux)
        if target is None:
            if why is None:
                result.unexpected.append(key)
            else:
                result.ignored[key] = why
            continue
        assert leaf is not None  # a routed key always names its leaf
        value = np.asarray(state_dict[key])
        if reference and target[-1] == "up" and value.ndim == 4:
            # ConvTranspose2d (in, out, kh, kw) computes with the flipped kernel of flax's
            # ConvTranspose: flip, and as (out, in, kh, kw) it transposes like a convolution.
            value = np.transpose(np.flip(value, (2, 3)), (1, 0, 2, 3))
        _place(key, value, target, leaf, want, flat, result)
    if reference:
        result.missing = sorted(p for p in want if p not in flat)
    elif resnet:  # the backbone always; the head too when the file has one (torchvision's segmentation models)
        has_head = any(p.split("/")[1] != "backbone" for p in flat)
        expected_parts = [p for p in want if has_head or p.split("/")[1] == "backbone"]
        result.missing = sorted(p for p in expected_parts if p not in flat and not (has_head and "/aux" in p))
    else:
        expected_parts = _expected_parts(model_cfg, want)
        result.missing = sorted(p for p in expected_parts if p not in flat and not p.split("/")[1] == "head")
    result.fresh = sorted(p for p in want if p not in flat)
    _check_fit(result, strict)
    if not flat:
        kind = REFERENCE_MODELS.get(model_cfg.name) or ("a torchvision ResNet" if resnet else "an HRNet")
        raise ConversionError(
            f"nothing in the checkpoint maps onto the {model_cfg.name} model; is it {kind} checkpoint?"
        )
    result.variables = unflatten(flat)
    return result


def _route_key(key: str, model_cfg, resnet: bool, num_stage4: int, has_aux: bool):
    """``(target path, leaf, why)`` of one official key: ``target`` None means the key is
    ignored (``why`` says why) or, with ``why`` None too, unexpected."""
    if key.endswith("num_batches_tracked"):
        return None, None, "BatchNorm step counter (unused)"
    if key.startswith("loss."):
        return None, None, "training loss state"
    if resnet:
        return _resnet_route(key, model_cfg)
    if model_cfg.name in REFERENCE_MODELS:
        return _reference_route(key, model_cfg)
    if key.split(".")[0] in CLASSIFICATION_PREFIXES:
        if model_cfg.get("task", "segmentation") != "classification":
            return None, None, "ImageNet classification head (set model.task=classification to use it)"
        *parts, leaf = key.split(".")  # HRNet-Image-Classification's head -> the classifier's head
        return ["head"] + _group(parts), leaf, ""
    return _hrnet_route(key, model_cfg, num_stage4, has_aux)


def _place(key: str, value: np.ndarray, target, leaf: str, want, flat: dict, result: Conversion) -> None:
    """Puts one official array (PyTorch layout) at its flax path in ``flat``, or records in
    ``result`` why it does not fit."""
    collection, name = _LEAVES[leaf]
    if leaf == "weight":
        name = "kernel" if value.ndim in (2, 4) else "scale"
    if value.ndim == 4:
        value = np.transpose(value, (2, 3, 1, 0))  # OIHW -> HWIO
    elif value.ndim == 2:
        value = np.transpose(value)  # Linear (out, in) -> Dense (in, out)
    dest = "/".join([collection, *target, name])
    if dest not in want:
        if collection == "batch_stats" and f"params/{'/'.join(target)}/scale" in want:
            result.ignored[key] = "running statistics of a BatchNorm that is a GroupNorm here"
        else:
            result.unexpected.append(key)
        return
    if tuple(value.shape) != want[dest]:
        result.mismatched[key] = (tuple(value.shape), want[dest])
        return
    flat[dest] = value.astype(np.float32)
    result.mapped[dest] = key


def _check_fit(result: Conversion, strict: bool) -> None:
    """Strict: refuses unexpected keys, missing variables and shape mismatches in one message."""
    problems = []
    if result.unexpected:
        problems.append(f"unexpected keys: {_listing(result.unexpected)}")
    if result.missing:
        problems.append(f"missing keys (variables the file should provide): {_listing(result.missing)}")
    if result.mismatched:
        items = [f"{k} {a} vs model {b}" for k, (a, b) in sorted(result.mismatched.items())]
        problems.append(f"shape mismatches: {_listing(items)}")
    if strict and problems:
        raise ConversionError(
            "the checkpoint does not fit the config's model (" + "; ".join(problems) + "). Check --config "
            "(model.name, width, number of modules); --nostrict converts what fits and leaves the rest freshly "
            "initialised (e.g. a classifier for another class count), listing it in conversion.json"
        )


def _expected_parts(model_cfg, want: Mapping[str, tuple]) -> list[str]:
    """Variable paths the mapping fills from a complete official segmentation checkpoint."""
    name = model_cfg.name
    out = []
    for p in want:
        parts = p.split("/")
        top = parts[1]
        if name == "hrnetv2":
            out.append(p)
        elif name == "baseline":
            if not (len(parts) > 3 and parts[3] == "norm1"):
                out.append(p)
        elif top == "stem" or re.fullmatch(r"transition1_[01](_\d+)*", top):
            out.append(p)
        elif top == "ode" and parts[-1] in ("kernel", "scale", "bias") and not (len(parts) > 5 and parts[5] == "norm1"):
            out.append(p)
    return out


def _listing(items, limit: int = 8) -> str:
    items = list(items)
    more = f" (and {len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


# ---------------------------------------------------------------------------------------
# Writing.


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def convert(torch_file: str, cfg, out_dir: str, *, strict: bool = True, overwrite: bool = False) -> Conversion:
    """Converts an official HRNet ``.pth`` for ``cfg.model`` and writes ``out_dir``.

    Arguments:
      torch_file: the official checkpoint (zip or legacy ``.pth``).
      cfg: a run config (``configs/*.py``) or its ``model`` section.
      out_dir: output folder: ``variables/`` (orbax) and ``conversion.json``.
      strict: see :func:`convert_state_dict`.
      overwrite: replace an existing ``out_dir`` (only after the new one is complete).

    Returns:
      The :class:`Conversion`.

    Raises:
      ConversionError: bad file, config or output folder (nothing is written then).
    """
    import orbax.checkpoint as ocp

    model_cfg = cfg.model if "model" in cfg else cfg
    out_dir = os.path.abspath(os.path.expanduser(out_dir))
    if os.path.exists(out_dir) and not overwrite:
        raise ConversionError(
            f"--out {out_dir} already exists; pass --overwrite to replace it, or choose another folder"
        )
    state_dict = read_state_dict(torch_file)
    result = convert_state_dict(state_dict, model_cfg, strict=strict)
    with checkpoints.folder_written_whole(out_dir) as tmp:
        ckpt = ocp.StandardCheckpointer()
        ckpt.save(os.path.join(tmp, CONVERTED_VARIABLES), result.variables)
        ckpt.wait_until_finished()
        info = {
            "format": FORMAT,
            "source": os.path.abspath(torch_file),
            "source_sha256": _sha256(torch_file),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "model": copy.deepcopy(model_cfg).to_dict(),
            "strict": bool(strict),
            "width": result.width,
            "mapped": result.mapped,
            "fresh": result.fresh,
            "ignored": result.ignored,
            "unexpected": result.unexpected,
            "missing": result.missing,
            "mismatched": {k: [list(a), list(b)] for k, (a, b) in result.mismatched.items()},
        }
        with open(os.path.join(tmp, CONVERSION_INFO), "w") as f:
            json.dump(info, f, indent=2, default=str)
            f.write("\n")
    return result


def summary(result: Conversion, model_name: str) -> str:
    n = len(result.mapped) + len(result.fresh)
    if model_name in REFERENCE_MODELS:
        source = f"{REFERENCE_MODELS[model_name]} (first level width {result.width})"
    elif model_name in RESNET_MODELS:
        source = f"a ResNet (stem width {result.width})"
    else:
        source = f"HRNet-W{result.width}"
    lines = [
        f"{model_name}: {len(result.mapped)} of {n} variables converted from {source}; "
        f"{len(result.fresh)} stay freshly initialised, {len(result.ignored)} file entries ignored"
    ]
    for what, items in (
        ("unexpected", result.unexpected),
        ("missing", result.missing),
        ("mismatched", list(result.mismatched)),
    ):
        if items:
            lines.append(f"  {what}: {_listing(items)}")
    return "\n".join(lines)


def main(argv=None) -> int:
    from absl import flags
    from ml_collections import config_flags

    flags_ = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config", None, "Config file, e.g. configs/cityscapes.py.", flag_values=flags_, lock_config=True
    )
    flags.DEFINE_string("torch", None, "Official HRNet .pth file.", flag_values=flags_)
    flags.DEFINE_string("out", None, "Output folder (variables/ and conversion.json).", flag_values=flags_)
    flags.DEFINE_bool(
        "strict",
        True,
        "Refuse unexpected/missing keys and shape mismatches (--nostrict: convert what fits).",
        flag_values=flags_,
    )
    flags.DEFINE_bool("overwrite", False, "Replace an existing --out folder.", flag_values=flags_)

    argv = list(sys.argv if argv is None else argv)
    argv = argv[:1] + cli.split_none_overrides(argv[1:])
    try:
        rest = flags_(argv)
    except flags.Error as e:
        print(
            f"error: {e}. Usage: python -m segnode_jax.convert --torch FILE.pth --config configs/<x>.py --out DIR",
            file=sys.stderr,
        )
        return 2
    cli.quiet_logs()

    def body():
        if len(rest) > 1:
            raise ConversionError(f"unexpected arguments: {' '.join(rest[1:])}")
        for name in ("torch", "config", "out"):
            if flags_[name].value is None:
                raise ConversionError(
                    f"--{name} is required: python -m segnode_jax.convert --torch FILE.pth --config configs/<x>.py --out DIR"
                )
        cfg = cli.read_config(flags_)
        assert cfg is not None, "--config was checked above"
        if cfg.model.get("num_classes") is None:  # configs/imagenet.py, folder.py: the dataset's count
            data.resolve_num_classes(cfg)
        result = convert(flags_.torch, cfg, flags_.out, strict=flags_.strict, overwrite=flags_.overwrite)
        print(summary(result, cfg.model.name))
        print(f"written: {os.path.abspath(flags_.out)} (use --config.init_from={flags_.out})")
        return 0

    return cli.guarded(body)


if __name__ == "__main__":
    sys.exit(main())
