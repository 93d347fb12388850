"""Writes tests/convert/fixtures/official/*.npz with the official model code, run by PyTorch
(run once; the files are committed, the tests need neither torch nor the official code):

    python3.11 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch numpy yacs
    /tmp/torchenv/bin/pip install torchdiffeq   # the U-Node authors' code solves with it
    /tmp/torchenv/bin/python -m tests.convert.make_official_fixtures \\
        --hrnet_seg <HRNet/HRNet-Semantic-Segmentation> --hrnet_cls <HRNet/HRNet-Image-Classification> \\
        --unet <milesial/Pytorch-UNet> --unode <DIAGNijmegen/neural-odes-segmentation> \\
        --semseg <hszhao/semseg>

Each path is a checkout or a git directory of that repository (a bare one is extracted to a
temporary folder); the commit is recorded in the fixture, the code is not copied. The
networks are built by the repositories' own factories from their own default configs
(``get_seg_model`` of ``seg_hrnet`` / ``seg_hrnet_ocr``, ``get_cls_net`` of ``cls_hrnet``)
with ``MODEL.EXTRA`` of ``tests.convert.spec.OFFICIAL``, and by milesial's ``UNet`` (both
upsampling variants), the U-Node authors' ``ConvODEUNet`` and semseg's ``PSPNet`` (its head),
filled with
``tests.convert.seeded.values`` through ``load_state_dict(strict=True)``, and run in eval
mode in float64. Segmentation logits are upsampled to the image as the official test code
does (``F.interpolate``, bilinear, ``MODEL.ALIGN_CORNERS``), once per ``ALIGN_CORNERS``.

Each file: ``image`` (NCHW), the outputs, ``layout`` (the state_dict's keys, shapes, dtypes)
and ``source`` (repository, commit, factory, config, seed, torch version).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

if not __package__:  # run by path: the imports below need the repository root
    print(
        "error: run it as a module from the repository root: python -m tests.convert.make_official_fixtures",
        file=sys.stderr,
    )
    sys.exit(2)

from tests.convert import seeded  # noqa: E402
from tests.convert.spec import OFFICIAL, OFFICIAL_CLS, OFFICIAL_OCR, PSPNET_CLASSES, UNET_CLASSES, UNODE, official_extra  # noqa: E402

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "official")
# Top-level packages of the official repositories' lib/ folders (cleared between repositories).
LIB_PACKAGES = ("models", "config", "utils", "core", "datasets")
SHIMS = []


def _git(path: str, *args: str) -> str:
    return subprocess.run(["git", "-C", path, *args], check=True, capture_output=True, text=True).stdout.strip()


def snapshot(path: str, tmp: str, name: str) -> tuple[str, str]:
    """``(source tree, commit)`` of a checkout or a git directory of the repository ``name``
    (the shims recorded from here on are that repository's)."""
    SHIMS.clear()
    commit = _git(path, "rev-parse", "HEAD")
    if _git(path, "rev-parse", "--is-bare-repository") == "true":
        tree = os.path.join(tmp, name.replace("/", "+"))
        os.makedirs(tree)
        archive = subprocess.run(["git", "-C", path, "archive", "HEAD"], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tree], input=archive, check=True)
        return tree, commit
    if _git(path, "status", "--porcelain", "--untracked-files=no"):
        sys.exit(f"error: {path} has local changes; give a clean checkout of {name}")
    return path, commit


def official_modules(tree: str, *names: str):
    """Imports ``names`` from ``tree/lib`` as the official scripts do (lib/ on the path)."""
    if not hasattr(np, "int"):  # NumPy >= 1.24 dropped the alias the HRNet code uses for a channel sum
        np.int = int  # type: ignore[attr-defined]
        SHIMS.append("numpy.int = int (NumPy >= 1.24 removed the alias; used by the official code for a channel sum)")
    for mod in [m for m in sys.modules if m.split(".")[0] in LIB_PACKAGES]:
        del sys.modules[mod]
    lib = os.path.join(tree, "lib")
    sys.path.insert(0, lib)
    try:
        return [importlib.import_module(n) for n in names]
    finally:
        sys.path.remove(lib)


def _layout(model) -> list:
    return [(k, list(v.shape), str(v.numpy().dtype)) for k, v in model.state_dict().items()]


def _fill(model, seed: int) -> list:
    layout = _layout(model)
    sd = {k: torch.from_numpy(v) for k, v in seeded.values(layout, seed).items()}
    model.load_state_dict(sd, strict=True)
    return layout


def _run(model, seed: int, x: np.ndarray, call=None):
    """Seeded weights loaded strictly, eval mode, float64: ``(layout, output of call(x))``
    (``call``: the model itself by default)."""
    layout = _fill(model, seed)
    model.double().eval()
    with torch.no_grad():
        return layout, (call or model)(torch.from_numpy(x.astype(np.float64)))


def _image(seed: int, size=(37, 29)) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((2, 3, *size)).astype(np.float32)


def _save(name: str, arrays: dict, layout: list, source: dict) -> None:
    source = dict(source, torch=torch.__version__, numpy=np.__version__, shims=sorted(set(SHIMS)))
    path = os.path.join(HERE, f"{name}.npz")
    np.savez_compressed(path, layout=np.array(json.dumps(layout)), source=np.array(json.dumps(source)), **arrays)
    print(f"{path}: {os.path.getsize(path)} bytes, {sum(int(np.prod(s)) for _, s, _ in layout)} values")


def hrnet_segmentation(tree: str, commit: str, *, ocr: bool, seed: int) -> None:
    config_mod, seg_module = official_modules(tree, "config", "models.seg_hrnet_ocr" if ocr else "models.seg_hrnet")
    from yacs.config import CfgNode

    image = _image(7)
    arrays, layout, settings = {"image": image}, None, None
    for align_corners in (False, True):
        cfg = config_mod.config.clone()
        cfg.defrost()
        settings = {
            "MODEL": {
                "NAME": seg_module.__name__.split(".")[-1],
                "EXTRA": official_extra(OFFICIAL),
                "ALIGN_CORNERS": align_corners,
            },
            "DATASET": {"NUM_CLASSES": OFFICIAL["num_classes"]},
        }
        if ocr:
            settings["MODEL"]["OCR"] = {"MID_CHANNELS": OFFICIAL_OCR[0], "KEY_CHANNELS": OFFICIAL_OCR[1]}
        cfg.merge_from_other_cfg(CfgNode(settings))
        model = seg_module.get_seg_model(cfg)
        layout = _fill(model, seed)
        model = model.double().eval()
        with torch.no_grad():
            out = model(torch.from_numpy(image.astype(np.float64)))
        outputs = {"aux_logits": out[0], "logits": out[1]} if ocr else {"logits": out}
        # The official test-time resize of the logits to the image (base_dataset.inference).
        outputs["logits"] = F.interpolate(
            outputs["logits"], size=image.shape[2:], mode="bilinear", align_corners=align_corners
        )
        for k, v in outputs.items():
            arrays[f"{k}_align_corners_{int(align_corners)}"] = v.numpy().astype(np.float32)
    assert settings is not None
    settings["MODEL"].pop("ALIGN_CORNERS")
    source = {
        "repository": "HRNet/HRNet-Semantic-Segmentation",
        "commit": commit,
        "file": f"lib/models/{seg_module.__name__.split('.')[-1]}.py",
        "factory": "get_seg_model(config)",
        "config": settings,
        "seed": seed,
        "forward": "eval mode, float64; logits upsampled to the image with F.interpolate(bilinear, MODEL.ALIGN_CORNERS)",
    }
    _save("hrnetv2_ocr" if ocr else "hrnetv2", arrays, layout, source)


def hrnet_classification(tree: str, commit: str, *, seed: int) -> None:
    config_mod, cls_module = official_modules(tree, "config", "models.cls_hrnet")
    from yacs.config import CfgNode

    cfg = config_mod.config.clone()
    cfg.defrost()
    settings = {
        "MODEL": {"NAME": "cls_hrnet", "EXTRA": official_extra(OFFICIAL), "NUM_CLASSES": OFFICIAL_CLS["num_classes"]}
    }
    cfg.merge_from_other_cfg(CfgNode(settings))
    image = _image(8, (64, 96))  # cls_hrnet upsamples by scale factors: sizes divisible by 32
    layout, logits = _run(cls_module.get_cls_net(cfg), seed, image)
    source = {
        "repository": "HRNet/HRNet-Image-Classification",
        "commit": commit,
        "file": "lib/models/cls_hrnet.py",
        "factory": "get_cls_net(config)",
        "config": settings,
        "seed": seed,
        "forward": "eval mode, float64",
    }
    _save("hrnet_cls", {"image": image, "logits": logits.numpy().astype(np.float32)}, layout, source)


def _import_from(tree: str, module: str, clear: tuple[str, ...]):
    """``module`` imported from the root of ``tree`` (the repository's own scripts run there)."""
    for mod in [m for m in sys.modules if m.split(".")[0] in clear]:
        del sys.modules[mod]
    sys.path.insert(0, tree)
    try:
        return importlib.import_module(module)
    finally:
        sys.path.remove(tree)


def unet(tree: str, commit: str, *, bilinear: bool, seed: int) -> None:
    """milesial's ``UNet(n_channels=3, n_classes, bilinear)`` (its widths are fixed: 64-1024)."""
    model = _import_from(tree, "unet", ("unet",)).UNet(n_channels=3, n_classes=UNET_CLASSES, bilinear=bilinear)
    image = _image(9)  # odd sizes: the decoder pads each upsampled map to its skip
    layout, logits = _run(model, seed, image)
    source = {
        "repository": "milesial/Pytorch-UNet",
        "commit": commit,
        "file": "unet/unet_model.py",
        "factory": f"UNet(n_channels=3, n_classes={UNET_CLASSES}, bilinear={bilinear})",
        "seed": seed,
        "forward": "eval mode, float64",
    }
    _save(
        f"unet_{'bilinear' if bilinear else 'transposed'}",
        {"image": image, "logits": logits.numpy().astype(np.float32)},
        layout,
        source,
    )


def unode(tree: str, commit: str, *, seed: int) -> None:
    """The U-Node authors' ``ConvODEUNet`` in their training setting (time-dependent fields,
    leaky ReLU), 4 filters, its Dopri5 solves at a tolerance far below the comparison's."""
    models = _import_from(tree, "models", ("models", "model_utils"))
    model = models.ConvODEUNet(
        num_filters=UNODE["num_filters"],
        output_dim=UNODE["classes"],
        time_dependent=True,
        non_linearity="lrelu",
        tol=UNODE["tol"],
        adjoint=False,
    )
    image = _image(10, (32, 48))  # its bilinear resizes by scale_factor need sizes divisible by 16
    layout, logits = _run(model, seed, image)
    factory = (
        f"ConvODEUNet(num_filters={UNODE['num_filters']}, output_dim={UNODE['classes']}, time_dependent=True, "
        f"non_linearity='lrelu', tol={UNODE['tol']}, adjoint=False)"
    )
    source = {
        "repository": "DIAGNijmegen/neural-odes-segmentation",
        "commit": commit,
        "file": "models.py",
        "factory": factory,
        "seed": seed,
        "forward": "eval mode, float64 (torchdiffeq dopri5, rtol = atol = tol)",
    }
    _save("unode", {"image": image, "logits": logits.numpy().astype(np.float32)}, layout, source)


def pspnet_head(tree: str, commit: str, *, seed: int) -> None:
    """hszhao/semseg's ``PSPNet`` (ResNet-50, its deep stem: ``layer0``), its head -- ``ppm``
    then ``cls``, as its eval forward runs them -- on random layer4 features (the stem has no
    counterpart in our torchvision ResNet, so the comparison is the head's)."""
    pspnet = _import_from(tree, "model.pspnet", ("model",))
    model = pspnet.PSPNet(
        layers=50, bins=(1, 2, 3, 6), dropout=0.1, classes=PSPNET_CLASSES, zoom_factor=8, pretrained=False
    )
    # One 7x7 map (uneven adaptive-pooling bins for 3 and 6), stored as float16 to keep the file small.
    features = np.abs(np.random.default_rng(11).standard_normal((1, 2048, 7, 7))).astype(np.float16)
    layout, logits = _run(model, seed, features, lambda x: model.cls(model.ppm(x)))
    source = {
        "repository": "hszhao/semseg",
        "commit": commit,
        "file": "model/pspnet.py",
        "factory": f"PSPNet(layers=50, bins=(1, 2, 3, 6), dropout=0.1, classes={PSPNET_CLASSES}, zoom_factor=8, pretrained=False)",
        "seed": seed,
        "forward": "eval mode, float64: model.cls(model.ppm(features)), the head of PSPNet.forward",
    }
    _save("pspnet_head", {"features": features, "logits": logits.numpy().astype(np.float32)}, layout, source)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--hrnet_seg", required=True, help="HRNet/HRNet-Semantic-Segmentation: a checkout or git directory"
    )
    parser.add_argument(
        "--hrnet_cls", required=True, help="HRNet/HRNet-Image-Classification: a checkout or git directory"
    )
    parser.add_argument("--unet", required=True, help="milesial/Pytorch-UNet: a checkout or git directory")
    parser.add_argument(
        "--unode", required=True, help="DIAGNijmegen/neural-odes-segmentation: a checkout or git directory"
    )
    parser.add_argument("--semseg", required=True, help="hszhao/semseg: a checkout or git directory")
    parser.add_argument("--only", nargs="*", help="write only these fixtures (hrnet, unet, unode, pspnet)")
    args = parser.parse_args(argv)
    os.makedirs(HERE, exist_ok=True)
    torch.set_num_threads(2)
    only = set(args.only or ("hrnet", "unet", "unode", "pspnet"))
    with tempfile.TemporaryDirectory() as tmp:
        if "hrnet" in only:
            tree, commit = snapshot(args.hrnet_seg, tmp, "HRNet/HRNet-Semantic-Segmentation")
            hrnet_segmentation(tree, commit, ocr=False, seed=10)
            hrnet_segmentation(tree, commit, ocr=True, seed=11)
            tree, commit = snapshot(args.hrnet_cls, tmp, "HRNet/HRNet-Image-Classification")
            hrnet_classification(tree, commit, seed=12)
        if "unet" in only:
            tree, commit = snapshot(args.unet, tmp, "milesial/Pytorch-UNet")
            unet(tree, commit, bilinear=False, seed=13)
            unet(tree, commit, bilinear=True, seed=14)
        if "unode" in only:
            tree, commit = snapshot(args.unode, tmp, "DIAGNijmegen/neural-odes-segmentation")
            unode(tree, commit, seed=15)
        if "pspnet" in only:
            tree, commit = snapshot(args.semseg, tmp, "hszhao/semseg")
            pspnet_head(tree, commit, seed=16)
    return 0


if __name__ == "__main__":
    sys.exit(main())
