"""Converting official HRNet checkpoints: the torch-free .pth reader, the key mapping checked
against a NumPy reimplementation of the official forward pass (blocks, modules) and whole
converted networks (HRNetV2, HRNetV2+OCR) against the official forward pass run by PyTorch,
the CLI, and the errors.

The .pth fixtures were written by real PyTorch (tests/convert/make_fixtures.py); the
whole-network references by the official model code run by PyTorch
(tests/convert/make_official_fixtures.py)."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import zipfile

import jax
import numpy as np
import pytest

from segnode_jax import api, checkpoints, convert, pth, weights
from segnode_jax.models.blocks import BasicBlock
from segnode_jax.models.hrnet import HRModule, outer_norm
from tests.conftest import REPO, xla_flags
from tests.convert import official, seeded
from tests.convert.spec import (
    OFFICIAL,
    OFFICIAL_CLS,
    OFFICIAL_OCR,
    TINY,
    TINY_OCR,
    official_model_config,
    tiny_model_config,
)

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
ZIP = os.path.join(FIXTURES, "hrnet_tiny_zip.pth")
LEGACY = os.path.join(FIXTURES, "hrnet_tiny_legacy.pth")
TRAINING = os.path.join(FIXTURES, "hrnet_tiny_training_ckpt.pth")
OCR = os.path.join(FIXTURES, "hrnet_ocr_tiny.pth")
OFFICIAL_FIXTURES = os.path.join(FIXTURES, "official")
RTOL = 1e-4


@pytest.fixture(scope="module")
def expected_sd():
    return official.state_dict(**TINY)


@pytest.fixture(scope="module")
def hrnet_conversion():
    cfg = tiny_model_config("hrnetv2")
    return cfg, convert.convert_state_dict(convert.read_state_dict(ZIP), cfg.model)


# ---------------------------------------------------------------------------------------
# Reading .pth without torch.


@pytest.mark.parametrize("path", [ZIP, LEGACY])
def test_both_pth_formats_read_exactly_what_torch_saved(path, expected_sd):
    got = pth.load(path)
    assert list(got) == list(expected_sd)
    for key, value in expected_sd.items():
        assert got[key].dtype == value.dtype, key
        np.testing.assert_array_equal(got[key], value, err_msg=key)
    assert "torch" not in sys.modules


def test_training_checkpoint_wrapper_and_prefixes_are_removed(expected_sd):
    got = convert.read_state_dict(TRAINING)
    assert sorted(got) == sorted(expected_sd)
    np.testing.assert_array_equal(
        got["stage4.1.fuse_layers.0.3.0.weight"], expected_sd["stage4.1.fuse_layers.0.3.0.weight"]
    )


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    # The payload really runs under a plain unpickler (so the test proves something) ...
    payload = pickle.dumps({"a": Evil()}, protocol=2)
    pickle.loads(payload)
    assert marker.exists()
    marker.unlink()
    # ... and not under ours: refused, naming the callable, and no code ran.
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", payload)
    with pytest.raises(pth.PthError, match="system"):
        pth.load(path)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------
# The mapping against the official forward pass.


def _nchw(x):
    return np.transpose(np.asarray(x, np.float64), (0, 3, 1, 2))


def _branch_inputs(seed=1, n=2, size=16):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((n, size >> i, size >> i, c)).astype(np.float32) for i, c in enumerate(TINY["widths"])]


def _close(ours, reference):
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    scale = np.abs(reference).max()
    assert scale > 0
    np.testing.assert_allclose(ours, reference, rtol=RTOL, atol=RTOL * scale)


def test_basic_block_matches_the_official_forward(hrnet_conversion, expected_sd):
    cfg, conv = hrnet_conversion
    v = conv.variables
    x = _branch_inputs()[1]
    block = BasicBlock(TINY["widths"][1], outer_norm(cfg.model))
    sub = lambda c: c["stage4_1"]["branches_1_0"]  # noqa: E731
    ours = block.apply({"params": sub(v["params"]), "batch_stats": sub(v["batch_stats"])}, x, False)
    _close(_nchw(ours), official.basic_block(_nchw(x), expected_sd, "stage4.1.branches.1.0"))


@pytest.mark.slow
@pytest.mark.parametrize(
    "stage,blocks,seed",
    [
        # A module without blocks is its fuse step alone: every fuse path (upsampling 1x1
        # convs, chains of stride-2 convs) and the sums.
        (0, 0, 2),
        # The full module: BasicBlocks on every branch, then the fuse step.
        (1, 1, 3),
    ],
    ids=["fuse_layers", "full_module"],
)
def test_module_matches_the_official_forward(hrnet_conversion, expected_sd, stage, blocks, seed):
    cfg, conv = hrnet_conversion
    v = conv.variables
    xs = _branch_inputs(seed=seed)
    module = HRModule(TINY["widths"], blocks, outer_norm(cfg.model))
    name = f"stage4_{stage}"
    ours = module.apply({"params": v["params"][name], "batch_stats": v["batch_stats"][name]}, xs, False)
    reference = official.hr_module([_nchw(x) for x in xs], expected_sd, f"stage4.{stage}", blocks)
    for o, r in zip(ours, reference, strict=True):
        _close(_nchw(o), r)


def test_hrnetv2_conversion_is_complete(hrnet_conversion):
    cfg, conv = hrnet_conversion
    assert conv.width == TINY["widths"][0]
    assert not conv.fresh and not conv.unexpected and not conv.missing and not conv.mismatched
    assert set(conv.ignored) == {k for k in official.state_dict(**TINY) if k.endswith("num_batches_tracked")}
    assert conv.mapped["params/stem/layer1_0/downsample_0/kernel"] == "layer1.0.downsample.0.weight"
    assert conv.mapped["batch_stats/head/last_layer_1/var"] == "last_layer.1.running_var"
    # The whole network runs with the converted variables.
    logits, _ = api.apply(conv.variables, np.zeros((1, 32, 32, 3), np.float32), cfg.model)
    assert logits.shape == (1, 32, 32, TINY["num_classes"]) and np.isfinite(np.asarray(logits)).all()


@pytest.mark.parametrize("name", ["baseline", "segnode"])
def test_baseline_and_segnode_take_the_documented_parts(name, expected_sd):
    cfg = tiny_model_config(name)
    conv = convert.convert_state_dict(expected_sd, cfg.model)
    mapped, fresh = conv.mapped, set(conv.fresh)
    assert mapped["params/stem/conv1/kernel"] == "conv1.weight"
    np.testing.assert_array_equal(
        conv.variables["params"]["stem"]["conv1"]["kernel"], np.transpose(expected_sd["conv1.weight"], (2, 3, 1, 0))
    )
    if name == "baseline":
        # The last 2 stage-4 modules become the 2 repeated modules; official bn1 -> norm2.
        assert mapped["params/repeat_0/branches_2_0/norm2/scale"] == "stage4.0.branches.2.0.bn1.weight"
        assert mapped["batch_stats/repeat_1/fuse_layers_3_0_2_1/mean"] == "stage4.1.fuse_layers.3.0.2.1.running_mean"
        assert mapped["params/head/last_layer_3/kernel"] == "last_layer.3.weight"
        assert "params/repeat_0/branches_0_0/norm1/scale" in fresh
        assert fresh == {p for p in fresh if "/norm1/" in p}
    else:
        # SegNode: stem, transition to branches 0-1, the last stage-4 module as the vector
        # field (BatchNorm affine -> GroupNorm affine); the head and new transitions fresh.
        assert mapped["params/ode/field/module_0/fuse_layers_0_1_0/kernel"] == "stage4.1.fuse_layers.0.1.0.weight"
        assert mapped["params/ode/field/module_0/branches_3_0/norm2/bias"] == "stage4.1.branches.3.0.bn1.bias"
        assert mapped["params/transition1_1_0_0/kernel"] == "transition1.1.0.0.weight"
        assert "params/transition1_2_0_0/kernel" in fresh and "params/head/classifier_0/kernel" in fresh
        assert conv.ignored["stage2.0.branches.0.0.conv1.weight"].startswith("SegNode goes from layer1")
    assert not conv.unexpected and not conv.missing and not conv.mismatched


# ---------------------------------------------------------------------------------------
# Errors.


def test_width_mismatch_names_both_widths(expected_sd):
    cfg = tiny_model_config("hrnetv2")
    cfg.model.width = 4
    with pytest.raises(convert.ConversionError, match=r"HRNet-W2 .* model.width=4.*--config.model.width=2"):
        convert.convert_state_dict(expected_sd, cfg.model)


def test_unexpected_and_missing_keys_are_listed_and_nostrict_converts_the_rest(expected_sd):
    cfg = tiny_model_config("hrnetv2")
    sd = dict(expected_sd)
    sd["stage2.0.extra.weight"] = np.zeros((2, 2, 1, 1), np.float32)
    del sd["stage3.0.branches.1.0.conv2.weight"]
    with pytest.raises(
        convert.ConversionError,
        match=r"unexpected keys: stage2.0.extra.weight.*missing keys.*params/stage3_0/branches_1_0/conv2/kernel.*--nostrict",
    ):
        convert.convert_state_dict(sd, cfg.model)
    conv = convert.convert_state_dict(sd, cfg.model, strict=False)
    assert conv.unexpected == ["stage2.0.extra.weight"]
    assert conv.missing == ["params/stage3_0/branches_1_0/conv2/kernel"] == conv.fresh


def test_another_class_count_needs_nostrict_and_keeps_a_fresh_classifier(expected_sd):
    cfg = tiny_model_config("hrnetv2")
    cfg.model.num_classes = 7
    with pytest.raises(convert.ConversionError, match=r"last_layer.3.weight \(1, 1, 30, 5\) vs model \(1, 1, 30, 7\)"):
        convert.convert_state_dict(expected_sd, cfg.model)
    conv = convert.convert_state_dict(expected_sd, cfg.model, strict=False)
    assert set(conv.mismatched) == {"last_layer.3.weight", "last_layer.3.bias"}
    assert set(conv.fresh) == {"params/head/last_layer_3/kernel", "params/head/last_layer_3/bias"}


def test_imagenet_checkpoint_without_segmentation_head_converts_strictly(expected_sd):
    sd = {k: v for k, v in expected_sd.items() if not k.startswith("last_layer")}
    sd["classifier.weight"] = np.zeros((1000, 2048), np.float32)
    sd["incre_modules.0.0.conv1.weight"] = np.zeros((32, 2, 1, 1), np.float32)
    conv = convert.convert_state_dict(sd, tiny_model_config("hrnetv2").model)
    assert (
        conv.ignored["classifier.weight"]
        == conv.ignored["incre_modules.0.0.conv1.weight"]
        == "ImageNet classification head (set model.task=classification to use it)"
    )
    assert conv.fresh and all(p.split("/")[1] == "head" for p in conv.fresh)


def test_files_that_are_not_state_dicts(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(convert.ConversionError, match="not a PyTorch checkpoint"):
        convert.read_state_dict(str(text))
    listing = tmp_path / "list.pth"
    with zipfile.ZipFile(listing, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(convert.ConversionError, match="holds a list without tensors, not a state_dict"):
        convert.read_state_dict(str(listing))
    with pytest.raises(convert.ConversionError, match="does not exist"):
        convert.read_state_dict(str(tmp_path / "missing.pth"))


# ---------------------------------------------------------------------------------------
# The CLI and --config.init_from.


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run(
        [sys.executable, "-m", "segnode_jax.convert", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _tiny_flags(name):
    return [
        f"--config={os.path.join(REPO, 'configs', 'tiny.py')}",
        f"--config.model.name={name}",
        f"--config.model.width={TINY['widths'][0]}",
        f"--config.model.stem_width={TINY['stem_width']}",
        f"--config.model.layer1_planes={TINY['planes']}",
        f"--config.model.hrnet.stage_modules={TINY['stage_modules']}".replace(" ", ""),
    ]


@pytest.mark.slow
def test_cli_writes_variables_that_load_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "converted"
    proc = _cli("--torch", LEGACY, *_tiny_flags("segnode"), f"--out={out}")
    assert proc.returncode == 0, proc.stderr
    assert "written:" in proc.stdout
    info = json.loads((out / "conversion.json").read_text())
    assert info["format"] == convert.FORMAT and info["model"]["name"] == "segnode" and info["width"] == 2
    assert len(info["source_sha256"]) == 64
    loaded = checkpoints.load_variables(str(out))
    cfg = tiny_model_config("segnode")
    fresh = api.init(cfg.model, jax.random.key(0), (1, 32, 32, 3))
    merged, report = weights.merge_variables(fresh, loaded, num_classes=5, source=str(out))
    assert sorted(report["loaded"]) == sorted(info["mapped"]) and not report["unused"]
    assert sorted(report["missing"]) == sorted(info["fresh"])
    logits, _ = api.apply(merged, np.zeros((1, 32, 32, 3), np.float32), cfg.model)
    assert np.isfinite(np.asarray(logits)).all()
    # An existing output folder is left untouched without --overwrite.
    before = (out / "conversion.json").read_text()
    proc = _cli("--torch", ZIP, *_tiny_flags("segnode"), f"--out={out}")
    assert proc.returncode == 2 and "--overwrite" in proc.stderr and "Traceback" not in proc.stderr
    assert (out / "conversion.json").read_text() == before
    proc = _cli("--torch", ZIP, *_tiny_flags("segnode"), f"--out={out}", "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "conversion.json").read_text())["source"].endswith("hrnet_tiny_zip.pth")
    assert sorted(os.listdir(tmp_path)) == ["converted"]  # no temporary folders left behind


@pytest.mark.slow
def test_cli_errors_are_one_line(tmp_path):
    proc = _cli("--torch", ZIP, *_tiny_flags("hrnetv2")[:-1], "--config.model.width=4", f"--out={tmp_path / 'o'}")
    assert proc.returncode == 2 and "HRNet-W2" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "o").exists()
    proc = _cli("--torch", ZIP, f"--out={tmp_path / 'o'}")
    assert proc.returncode == 2 and "--config is required" in proc.stderr, proc.stderr


@pytest.mark.slow
def test_training_starts_from_the_converted_weights(tiny_data_dir, tmp_path):
    out = tmp_path / "converted"
    conv = convert.convert(ZIP, tiny_model_config("segnode"), str(out))
    workdir = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "train.py"),
            *_tiny_flags("segnode"),
            f"--config.data.data_dir={tiny_data_dir}",
            f"--workdir={workdir}",
            f"--config.init_from={out}",
            "--config.train.num_steps=1",
            "--config.train.eval_every_steps=0",
            "--config.train.learning_rate=1e-12",
            # What is tested is where the weights go, not the solve: one unrolled Euler step
            # compiles in a third of the time of the adaptive solve.
            "--config.model.ode.solver=euler",
            "--config.model.ode.num_steps=1",
            "--config.model.ode.adjoint=unrolled",
        ],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=REPO, XLA_FLAGS=xla_flags(1)),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"loaded {len(conv.mapped)} variables" in proc.stderr
    trained = checkpoints.load_variables(str(workdir))
    for path in ("stem/conv1/kernel", "ode/field/module_0/fuse_layers_0_1_0/kernel"):
        node_t, node_c = trained["params"], conv.variables["params"]
        for part in path.split("/"):
            node_t, node_c = node_t[part], node_c[part]
        np.testing.assert_allclose(np.asarray(node_t), node_c, rtol=1e-6, atol=1e-9)


# ---------------------------------------------------------------------------------------
# Whole networks against the official model code run by PyTorch (make_official_fixtures.py:
# HRNet-Semantic-Segmentation's seg_hrnet / seg_hrnet_ocr, HRNet-Image-Classification's
# cls_hrnet, built by their own factories, weights loaded with strict=True).


def _official(name: str):
    """``(arrays, state_dict, source)`` of an official-code fixture; the weights are drawn
    again from the fixture's seed (tests/convert/seeded.py)."""
    arrays, layout, source = seeded.load(os.path.join(OFFICIAL_FIXTURES, f"{name}.npz"))
    return arrays, seeded.values(layout, source["seed"]), source


def _outputs(arrays, align_corners: bool) -> dict[str, np.ndarray]:
    suffix = f"_align_corners_{int(align_corners)}"
    return {k[: -len(suffix)]: v for k, v in arrays.items() if k.endswith(suffix)}


@pytest.mark.parametrize("name", ["hrnetv2", "hrnetv2_ocr", "hrnet_cls"])
def test_the_numpy_transcription_writes_the_official_codes_keys_and_shapes(name):
    """official.state_dict (behind the .pth fixtures and the block tests above) has exactly
    the keys and shapes of the official module's state_dict."""
    _, layout, _ = seeded.load(os.path.join(OFFICIAL_FIXTURES, f"{name}.npz"))
    spec = dict(OFFICIAL)
    if name == "hrnetv2_ocr":
        spec["ocr"] = OFFICIAL_OCR
    if name == "hrnet_cls":
        spec["num_classes"] = OFFICIAL_CLS["num_classes"]
        spec["cls"] = (OFFICIAL_CLS["head_channels"], OFFICIAL_CLS["features"])
    ours = {k: list(v.shape) for k, v in official.state_dict(**spec).items()}
    assert ours == {k: shape for k, shape, _ in layout}


@pytest.mark.slow
@pytest.mark.parametrize("align_corners", [False, True], ids=["half_pixel", "align_corners"])
@pytest.mark.parametrize("ocr", [False, True], ids=["hrnetv2", "hrnetv2_ocr"])
def test_whole_converted_network_matches_the_official_code(ocr, align_corners):
    """Stem, layer1, every transition and stage, the head (HRNetV2's or OCR's) and the
    official test-time upsampling of the logits: the official module's state_dict converts
    strictly (nothing fresh, unexpected or missing) and our logits equal the official
    forward's to 1e-4."""
    arrays, sd, source = _official("hrnetv2_ocr" if ocr else "hrnetv2")
    assert source["repository"] == "HRNet/HRNet-Semantic-Segmentation" and len(source["commit"]) == 40
    cfg = official_model_config("hrnetv2", head="ocr" if ocr else "default")
    cfg.model.align_corners = align_corners
    conv = convert.convert_state_dict(sd, cfg.model)
    assert not conv.fresh and not conv.unexpected and not conv.missing
    image = np.transpose(arrays["image"], (0, 2, 3, 1))
    reference = _outputs(arrays, align_corners)
    logits, aux = api.apply(conv.variables, image, cfg.model)
    assert logits.shape == (2, *image.shape[1:3], OFFICIAL["num_classes"])
    _close(_nchw(logits), reference["logits"])
    if ocr:
        _close(_nchw(aux["aux_logits"]), reference["aux_logits"])
    # The reference depends on align_corners: the comparison can tell them apart.
    other = _outputs(arrays, not align_corners)
    assert np.abs(other["logits"] - reference["logits"]).max() > 1e-2 * np.abs(reference["logits"]).max()


def test_ocr_checkpoint_into_baseline_and_segnode_ocr_heads():
    """The OCR head's weights go into Baseline+OCR and SegNode+OCR (same shapes); what has no
    counterpart stays fresh and is listed."""
    sd = convert.read_state_dict(OCR)
    for name in ("baseline", "segnode"):
        cfg = _ocr_model_config(name)
        conv = convert.convert_state_dict(sd, cfg.model, strict=False)
        heads = {p for p in conv.mapped if p.split("/")[1] == "head"}
        assert {f"params/head/{k}/kernel" for k in ("conv3x3_ocr_0", "aux_head_0", "aux_head_3", "cls_head")} <= heads
        assert conv.mapped["params/head/ocr_distri_head/object_context_block/f_pixel_1_0/scale"] == (
            "ocr_distri_head.object_context_block.f_pixel.1.0.weight"
        )
        assert all(
            k in conv.mapped.values() for k in sd if k.split(".")[0] in convert.OCR_PARTS and "num_batches" not in k
        )
        fresh_head = {p for p in conv.fresh if p.split("/")[1] == "head"}
        # SegNode normalises its pre-activation state per branch first (no HRNet counterpart).
        assert fresh_head == (_SEGNODE_HEAD_NORMS if name == "segnode" else set())


_SEGNODE_HEAD_NORMS = {
    f"{c}/head/norm_{i}/{leaf}"
    for i in range(4)
    for c, leaf in (("params", "scale"), ("params", "bias"), ("batch_stats", "mean"), ("batch_stats", "var"))
}


def _ocr_model_config(name: str):
    cfg = tiny_model_config(name)
    cfg.model.head = "ocr"
    cfg.model.ocr.mid_channels, cfg.model.ocr.key_channels = TINY_OCR["ocr"]
    return cfg


def test_hrnetv2_head_initialises_an_ocr_auxiliary_head_and_ocr_keys_need_an_ocr_model(expected_sd):
    """As HRNet-OCR's own code starts from HRNetV2 weights: last_layer -> aux_head. An OCR
    file into a model without an OCR head: the OCR keys are ignored, saying why."""
    conv = convert.convert_state_dict(expected_sd, _ocr_model_config("hrnetv2").model, strict=False)
    assert conv.mapped["params/head/aux_head_3/kernel"] == "last_layer.3.weight"
    assert "params/head/cls_head/kernel" in conv.fresh
    plain = convert.convert_state_dict(convert.read_state_dict(OCR), tiny_model_config("hrnetv2").model, strict=False)
    assert "model.head=ocr" in plain.ignored["cls_head.weight"]
    assert "params/head/last_layer_3/kernel" in plain.fresh


@pytest.mark.slow
def test_classification_checkpoint_converts_and_matches_the_official_code():
    """HRNet-Image-Classification's cls_hrnet (W48-C's head: 32-256 head channels, 2048
    features, 1000 classes; a small backbone) into the hrnetv2 classifier: every variable
    from the file (the Linear classifier transposed), logits equal the official forward's to
    1e-4. Into SegNode's classifier the head converts too (its per-branch norms stay fresh);
    into a segmentation model it is ignored, saying how to use it."""
    arrays, sd, source = _official("hrnet_cls")
    assert source["repository"] == "HRNet/HRNet-Image-Classification"
    cfg = official_model_config("hrnetv2", task="classification")
    conv = convert.convert_state_dict(sd, cfg.model)
    assert not conv.fresh and not conv.unexpected and not conv.missing
    assert conv.mapped["params/head/classifier/kernel"] == "classifier.weight"
    assert conv.mapped["params/head/incre_modules_3_0/downsample_0/kernel"] == "incre_modules.3.0.downsample.0.weight"
    logits, _ = api.apply(conv.variables, np.transpose(arrays["image"], (0, 2, 3, 1)), cfg.model)
    assert logits.shape == (2, OFFICIAL_CLS["num_classes"])
    _close(logits, arrays["logits"])
    conv = convert.convert_state_dict(sd, official_model_config("segnode", task="classification").model, strict=False)
    assert "params/head/final_layer_0/kernel" in conv.mapped
    assert {p for p in conv.fresh if p.split("/")[1] == "head"} == _SEGNODE_HEAD_NORMS
    conv = convert.convert_state_dict(sd, official_model_config("hrnetv2").model, strict=False)
    assert "model.task=classification" in conv.ignored["classifier.weight"]
