"""milesial's U-Net and the U-Node authors' ConvODEUNet: their state_dicts convert strictly and
the converted models compute what the authors' own code computes; semseg's PSPNet head likewise
(its forward run by PyTorch: tests/convert/make_official_fixtures.py, weights drawn again from
the fixture's seed)."""

from __future__ import annotations

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import segnode_jax
from segnode_jax import api, convert
from segnode_jax.models import pspnet
from tests.conftest import REPO
from tests.convert import seeded
from tests.convert.spec import PSPNET_CLASSES, UNET_CLASSES, UNODE

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "official")
RTOL = 1e-4


def _fixture(name: str):
    arrays, layout, source = seeded.load(os.path.join(FIXTURES, f"{name}.npz"))
    return arrays, seeded.values(layout, source["seed"]), source


def _close(ours, reference):
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    scale = np.abs(reference).max()
    assert scale > 0
    np.testing.assert_allclose(ours, reference, rtol=RTOL, atol=RTOL * scale)


def _nhwc(image):
    return np.transpose(image, (0, 2, 3, 1))


def _config(name: str):
    cfg = segnode_jax.load_config(os.path.join(REPO, "configs", "tiny.py"))
    m = cfg.model
    m.name = name
    m.unet.base_width, m.unet.depth = 64, 4  # milesial's UNet: fixed widths 64-1024
    m.num_classes = UNET_CLASSES
    m.unode.num_filters, m.unode.levels = UNODE["num_filters"], 4
    m.unode.time_dependent, m.unode.activation, m.unode.norm_input = True, "lrelu", False
    m.ode.solver, m.ode.rtol, m.ode.atol, m.ode.max_steps = "dopri5", 1e-6, 1e-6, 4096
    return cfg


@pytest.mark.slow
@pytest.mark.parametrize("upsampling", ["transposed", "bilinear"])
def test_milesials_unet_converts_and_computes_what_its_code_computes(upsampling):
    """Every variable from the file (the transposed convolutions' kernels flipped), logits equal
    milesial's UNet forward to 1e-4 on an image of odd size (the decoder's padding)."""
    arrays, sd, source = _fixture(f"unet_{upsampling}")
    assert source["repository"] == "milesial/Pytorch-UNet" and len(source["commit"]) == 40
    cfg = _config("unet")
    cfg.model.unet.upsampling = upsampling
    conv = convert.convert_state_dict(sd, cfg.model)
    assert not conv.fresh and not conv.unexpected and not conv.missing
    assert conv.mapped["params/down2/conv2/kernel"] == "down2.maxpool_conv.1.double_conv.3.weight"
    assert conv.mapped["batch_stats/up4/conv/bn2/var"] == "up4.conv.double_conv.4.running_var"
    logits, _ = api.apply(conv.variables, _nhwc(arrays["image"]), cfg.model)
    _close(np.transpose(np.asarray(logits), (0, 3, 1, 2)), arrays["logits"])


def test_unet_files_of_another_variant_width_or_depth_name_the_setting():
    _, sd, _ = _fixture("unet_transposed")
    cfg = _config("unet")
    cfg.model.unet.upsampling = "bilinear"
    with pytest.raises(convert.ConversionError, match="--config.model.unet.upsampling=transposed"):
        convert.convert_state_dict(sd, cfg.model)
    cfg = _config("unet")
    cfg.model.unet.base_width = 32
    with pytest.raises(convert.ConversionError, match="--config.model.unet.base_width=64"):
        convert.convert_state_dict(sd, cfg.model)
    cfg = _config("unet")
    cfg.model.unet.depth = 3
    with pytest.raises(convert.ConversionError, match="--config.model.unet.depth=4"):
        convert.convert_state_dict(sd, cfg.model)
    with pytest.raises(convert.ConversionError, match="not milesial/Pytorch-UNet's UNet"):
        convert.convert_state_dict({"conv1.weight": np.zeros((4, 3, 3, 3), np.float32)}, _config("unet").model)


@pytest.mark.slow
def test_convodeunet_converts_and_computes_what_its_code_computes():
    """The authors' ConvODEUNet (time-dependent fields, leaky ReLU; torchdiffeq's Dopri5 at
    rtol = atol = 1e-8, float64) against ours with norm_input=False (diffrax's Dopri5 at the
    same tolerance, float64): logits to 1e-4. The comparison needs the tight tolerance: with
    these random weights the solves are sensitive (measured: at 1e-6 our float32 and float64
    logits both differ from it by 2.4e-3 of their largest value, at 1e-7 by 1.4e-4, at 1e-8 by
    3.9e-5). Their fields convolve the un-normalised state; the config's default (normalised)
    does not convert strictly, and computes something else."""
    arrays, sd, source = _fixture("unode")
    assert source["repository"] == "DIAGNijmegen/neural-odes-segmentation"
    assert "tol=1e-08" in source["factory"]
    cfg = _config("unode")
    conv = convert.convert_state_dict(sd, cfg.model)
    assert not conv.fresh and not conv.unexpected and not conv.missing
    assert conv.mapped["params/odeblock_up2/field/conv1/kernel"] == "odeblock_up2.odefunc.conv1.weight"
    image = _nhwc(arrays["image"])
    with jax.enable_x64(True), jax.numpy_dtype_promotion("standard"):
        cfg64 = _config("unode")
        cfg64.model.dtype = "float64"
        cfg64.model.ode.rtol = cfg64.model.ode.atol = UNODE["tol"]
        cfg64.model.ode.max_steps = 8192
        variables = jax.tree.map(lambda a: np.asarray(a, np.float64), conv.variables)
        logits, aux = api.apply(variables, image.astype(np.float64), cfg64.model)
        assert int(aux["ode"]["result"]) == 0
    _close(np.transpose(np.asarray(logits), (0, 3, 1, 2)), arrays["logits"])

    cfg.model.unode.norm_input = True
    with pytest.raises(convert.ConversionError, match="--config.model.unode.norm_input=False"):
        convert.convert_state_dict(sd, cfg.model)
    normed, _ = api.apply(conv.variables, image, cfg.model)
    gap = np.abs(np.transpose(np.asarray(normed), (0, 3, 1, 2)) - arrays["logits"]).max()
    assert gap > 1e-1 * np.abs(arrays["logits"]).max()


def test_convodeunet_files_of_another_width_depth_or_time_dependence_name_the_setting():
    _, sd, _ = _fixture("unode")
    for field, value, fix in (
        ("num_filters", 8, "num_filters=4"),
        ("levels", 3, "levels=4"),
        ("time_dependent", False, "time_dependent=True"),
    ):
        cfg = _config("unode")
        cfg.model.unode[field] = value
        with pytest.raises(convert.ConversionError, match=f"--config.model.unode.{fix}"):
            convert.convert_state_dict(sd, cfg.model)


def test_semseg_pspnet_head_converts_and_computes_what_its_code_computes():
    """hszhao/semseg's PSPNet: its head (``ppm``, ``cls``) converts into ours (its deep-stem
    ``layer0`` is ignored, saying why: our ResNet has torchvision's stem) and, on the same
    layer4 features, gives the logits of ``model.cls(model.ppm(features))`` to 1e-4."""
    arrays, sd, source = _fixture("pspnet_head")
    assert source["repository"] == "hszhao/semseg"
    cfg = segnode_jax.load_config(os.path.join(REPO, "configs", "tiny.py"))
    m = cfg.model
    m.name, m.num_classes = "pspnet", PSPNET_CLASSES
    m.resnet.depth, m.resnet.blocks, m.resnet.stem_width = 50, (), 64
    m.pspnet.channels, m.pspnet.aux_head = 512, False
    conv = convert.convert_state_dict(sd, m, strict=False)
    head = {k: v for k, v in sd.items() if k.split(".")[0] in ("ppm", "cls") and "num_batches" not in k}
    assert set(head) <= set(conv.mapped.values())
    assert "deep stem" in conv.ignored["layer0.0.weight"]
    variables = {
        c: {k: v for k, v in conv.variables[c].items() if k.startswith(("ppm", "cls_"))}
        for c in ("params", "batch_stats")
    }

    class Head(nn.Module):
        @nn.compact
        def __call__(self, c4):
            return pspnet.pyramid_head(self, c4, m, False, dict(momentum=0.9, epsilon=float(m.bn_eps)), jnp.float32)

    features = np.transpose(arrays["features"].astype(np.float32), (0, 2, 3, 1))
    logits = Head().apply(variables, features)
    _close(np.transpose(np.asarray(logits), (0, 3, 1, 2)), arrays["logits"])
