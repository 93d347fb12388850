"""Models: shapes, dtypes, train/eval behaviour, compilation caching, resize, parameter counts."""

import glob
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import segnode_jax
from segnode_jax import api, memory
from segnode_jax.errors import ConfigError
from segnode_jax.models.hrnet import HRModule, Stem
from segnode_jax.models.layers import NormSpec, branch_sizes
from segnode_jax.models.segnode import VectorField
from segnode_jax.resize import resize_bilinear
from tests.conftest import REPO

MODELS = ("hrnetv2", "baseline", "segnode")
SHAPE = (2, 30, 34, 3)  # odd sizes: the branches are 8x9, 4x5, 2x3, 1x2


def tiny(name, **ode):
    cfg = segnode_jax.load_config(os.path.join(REPO, "configs", "tiny.py")).model
    cfg.name = name
    for k, v in ode.items():
        cfg.ode[k] = v
    return cfg


@pytest.fixture(scope="module")
def images():
    return jax.random.normal(jax.random.key(1), SHAPE, jnp.float32)


@pytest.fixture(scope="module")
def variables():
    return {name: segnode_jax.init(tiny(name), jax.random.key(0), SHAPE) for name in MODELS}


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_logits_shape_dtype_and_eval_determinism(name, variables, images):
    cfg = tiny(name)
    logits, aux = segnode_jax.apply(variables[name], images, cfg)
    assert logits.shape == SHAPE[:3] + (5,) and logits.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(logits)))
    assert [f.shape[1:3] for f in aux["features"]] == branch_sizes(30, 34)
    again, _ = segnode_jax.apply(variables[name], images, cfg)
    np.testing.assert_array_equal(logits, again)
    # Images are independent in evaluation (running statistics): image 0 alone gives the same.
    # (An adaptive solve picks one step size for the whole batch, so SegNode is compared with
    # fixed steps here; with adaptive steps images agree to within the tolerances.)
    if name == "segnode":
        cfg = tiny(name, solver="rk4", num_steps=3)
        logits, _ = segnode_jax.apply(variables[name], images, cfg)
    single, _ = segnode_jax.apply(variables[name], images[:1], cfg)
    np.testing.assert_allclose(single, logits[:1], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_train_mode_returns_updated_batch_stats(name, variables, images):
    cfg = tiny(name)
    v = variables[name]
    logits, aux = segnode_jax.apply(v, images, cfg, train=True)
    new = aux["batch_stats"]
    assert jax.tree_util.tree_structure(new) == jax.tree_util.tree_structure(v["batch_stats"])
    changed = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)), new, v["batch_stats"])
    assert all(jax.tree_util.tree_leaves(changed))
    # Batch statistics normalise differently from the initial running statistics.
    eval_logits, _ = segnode_jax.apply(v, images, cfg)
    assert not np.allclose(logits, eval_logits)
    assert "batch_stats" not in segnode_jax.apply(v, images, cfg)[1]


def test_segnode_vector_field_is_pure(variables):
    v = variables["segnode"]
    assert "ode" not in v["batch_stats"]  # no running statistics inside the ODE
    field = v["params"]["ode"]["field"]
    assert set(field) == {"module_0"}
    assert "gn" not in str(jax.tree_util.tree_structure(field))  # norm params sit directly under their name
    assert field["module_0"]["branches_3_0"]["norm1"]["scale"].shape == (32,)


def test_segnode_reports_solver_statistics(variables, images):
    _, aux = segnode_jax.apply(variables["segnode"], images, tiny("segnode"))
    stats = aux["ode"]
    assert {"num_steps", "num_accepted_steps", "num_rejected_steps", "nfe"} <= set(stats)
    n = int(stats["num_steps"])
    assert n >= 1 and int(stats["nfe"]) == 6 * n + 1  # dopri5, FSAL
    assert all(stats[k].dtype == jnp.int32 for k in ("num_steps", "nfe"))


@pytest.mark.slow
def test_trajectory_logits_end_at_the_final_prediction(variables, images):
    cfg = tiny("segnode", saveat=(0.25, 0.5))
    logits, aux = segnode_jax.apply(variables["segnode"], images, cfg)
    traj = aux["ode"]["trajectory_logits"]
    np.testing.assert_allclose(aux["ode"]["ts"], [0.25, 0.5, 1.0])
    assert traj.shape == (3,) + logits.shape
    np.testing.assert_allclose(traj[-1], logits, rtol=1e-5, atol=1e-5)
    assert not np.allclose(traj[0], logits, atol=1e-3)


def test_apply_compiles_once_per_shape(variables, images):
    cfg = tiny("hrnetv2")
    v = variables["hrnetv2"]
    segnode_jax.apply(v, images, cfg)
    before = api._apply_jit._cache_size()
    segnode_jax.apply(v, images + 1.0, cfg)
    segnode_jax.apply(v, images, tiny("hrnetv2"))  # an equal config built anew hits the cache
    assert api._apply_jit._cache_size() == before
    segnode_jax.apply(v, images[:, :28], cfg)
    assert api._apply_jit._cache_size() == before + 1


@pytest.mark.slow
def test_changing_a_config_field_takes_effect_on_the_next_call(variables, images):
    """The README's sequence: apply, change the solve on the same config object, apply again.
    The compiled function must follow the config as it is now (it once kept the first solve)."""
    cfg = segnode_jax.load_config(os.path.join(REPO, "configs", "tiny.py"))
    cfg.model.name = "segnode"
    v = variables["segnode"]
    _, aux = segnode_jax.apply(v, images, cfg.model)
    adaptive_nfe = int(aux["ode"]["nfe"])
    assert adaptive_nfe == 6 * int(aux["ode"]["num_steps"]) + 1  # Dopri5, adaptive
    cfg.model.ode.solver, cfg.model.ode.num_steps = "rk4", 2
    _, aux = segnode_jax.apply(v, images, cfg.model)
    assert int(aux["ode"]["nfe"]) == 8
    cfg.model.ode.solver, cfg.model.ode.num_steps = "euler", 3
    _, aux = segnode_jax.apply(v, images, cfg.model)
    assert int(aux["ode"]["nfe"]) == 3
    # A fresh config after the mutated one gets the file's own (adaptive) solve again.
    fresh = segnode_jax.load_config(os.path.join(REPO, "configs", "tiny.py"))
    fresh.model.name = "segnode"
    _, aux = segnode_jax.apply(v, images, fresh.model)
    assert int(aux["ode"]["nfe"]) == adaptive_nfe


def test_a_frozen_config_is_a_snapshot():
    cfg = tiny("segnode")
    frozen = segnode_jax.freeze(cfg)
    cfg.ode.solver = "euler"
    assert frozen.ode.solver == "dopri5" and segnode_jax.freeze(cfg).ode.solver == "euler"
    assert frozen != segnode_jax.freeze(cfg) and hash(frozen) != hash(segnode_jax.freeze(cfg))
    assert segnode_jax.freeze(tiny("segnode")) == frozen  # equal settings, equal keys


@pytest.mark.slow
def test_apply_inside_user_jit(variables, images):
    cfg = tiny("segnode")
    f = jax.jit(lambda v, x: segnode_jax.apply(v, x, cfg)[0])
    np.testing.assert_allclose(
        f(variables["segnode"], images), segnode_jax.apply(variables["segnode"], images, cfg)[0], rtol=1e-5, atol=1e-5
    )


@pytest.mark.slow
def test_failed_solve_raises_from_apply(variables, images):
    cfg = tiny("segnode", max_steps=1, rtol=1e-9, atol=1e-9)
    with pytest.raises(segnode_jax.ODESolveError, match="model.ode.max_steps"):
        segnode_jax.apply(variables["segnode"], images, cfg)


@pytest.mark.slow
def test_solve_settings_key_the_compiled_apply_outside_inside_and_outside_again(variables, images):
    """What a solve does on failure and whether it counts its evaluations are settings of the
    config (part of every cache key), not context state read while tracing: the same apply,
    compiled once per setting, keeps each setting's behaviour whatever ran before it."""
    from segnode_jax import ode

    failing = tiny("segnode", max_steps=1, rtol=1e-9, atol=1e-9)
    as_nan = ode.with_settings(failing, on_failure="nan")
    for _ in range(2):  # outside, "inside", outside again, and the same once more
        with pytest.raises(segnode_jax.ODESolveError, match="model.ode.max_steps"):
            segnode_jax.apply(variables["segnode"], images, failing)
        logits, aux = segnode_jax.apply(variables["segnode"], images, as_nan)
        assert np.isnan(np.asarray(logits)).all() and int(aux["ode"]["result"]) != 0
    cfg = tiny("segnode", solver="euler", num_steps=2, adjoint="unrolled")  # the cheapest solve to compile
    counted = ode.with_settings(cfg, count_evaluations=True)
    _, aux = segnode_jax.apply(variables["segnode"], images, counted)  # compiled and run outside any block
    nfe = int(aux["ode"]["nfe"])
    with ode.counting_evaluations() as inside:
        segnode_jax.apply(variables["segnode"], images, cfg)
        assert inside["count"] == 0  # built without counting: never calls back
        jax.block_until_ready(segnode_jax.apply(variables["segnode"], images, counted)[0])
    assert inside["count"] == nfe > 0
    segnode_jax.apply(variables["segnode"], images, counted)  # outside again: counted nowhere
    assert inside["count"] == nfe


@pytest.mark.slow
def test_bfloat16_compute_keeps_float32_state_and_logits(variables, images):
    cfg = tiny("segnode")
    cfg.dtype = "bfloat16"
    logits, aux = segnode_jax.apply(variables["segnode"], images, cfg)
    ref, _ = segnode_jax.apply(variables["segnode"], images, tiny("segnode"))
    assert logits.dtype == jnp.float32 and all(f.dtype == jnp.float32 for f in aux["features"])
    assert float(jnp.abs(logits - ref).max()) < 0.05 * float(jnp.abs(ref).max())


@pytest.mark.slow
def test_time_dependent_field_adds_a_time_channel(images):
    cfg = tiny("segnode", solver="euler", num_steps=1, adjoint="unrolled")  # the cheapest solve to compile
    cfg.field.time_dependence = "concat"
    v = segnode_jax.init(cfg, jax.random.key(0), SHAPE)
    kernel = v["params"]["ode"]["field"]["module_0"]["branches_0_0"]["conv1"]["kernel"]
    assert kernel.shape == (3, 3, 4 + 1, 4)
    base = segnode_jax.count_params(tiny("segnode"))
    # One extra input channel for both 3x3 convolutions of the block of every branch.
    assert segnode_jax.count_params(cfg) == base + 2 * 9 * (4 + 8 + 16 + 32)
    logits, _ = segnode_jax.apply(v, images, cfg)
    assert bool(jnp.all(jnp.isfinite(logits)))


@pytest.mark.slow
@pytest.mark.parametrize("adjoint", ["backsolve", "recursive_checkpoint", "unrolled"])
def test_rematerialisation_changes_nothing_but_memory(adjoint, variables, images):
    """Block-by-block remat (and, for adjoints that store steps, whole-evaluation remat of the
    field around it) gives the gradients of the plain model."""
    labels = jax.random.randint(jax.random.key(3), SHAPE[:3], 0, 5)

    def grads(cfg):
        def loss(p):
            logits, aux = segnode_jax.apply(
                {"params": p, "batch_stats": variables["segnode"]["batch_stats"]}, images, cfg, train=True
            )
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), aux["batch_stats"]

        # Compiled as the training step compiles it (remat's barriers kept on a CPU too), so
        # that what is checked is the rematerialised computation, not one XLA folded away.
        fn = jax.jit(jax.grad(loss, has_aux=True))
        return fn.lower(variables["segnode"]["params"]).compile(compiler_options=memory.compiler_options())(
            variables["segnode"]["params"]
        )

    # Two Euler steps: a step loop like any solve's, at a quarter of RK4's compile time.
    plain = tiny("segnode", solver="euler", num_steps=2, adjoint=adjoint)
    remat = tiny("segnode", solver="euler", num_steps=2, adjoint=adjoint)
    remat.remat.field = remat.remat.stem = remat.remat.head = True
    (g0, s0), (g1, s1) = grads(plain), grads(remat)
    leaves0, leaves1 = jax.tree_util.tree_leaves(g0), jax.tree_util.tree_leaves(g1)
    assert len(leaves0) == len(leaves1) > 10
    for a, b in zip(leaves0, leaves1):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # The BatchNorm statistics the step returns are the same too.
    for a, b in zip(jax.tree_util.tree_leaves(s0), jax.tree_util.tree_leaves(s1)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _stem_grad_memory(remat: bool) -> int:
    stem = Stem(16, 16, 4, NormSpec("batch"), remat=remat)
    x = jax.ShapeDtypeStruct((4, 64, 64, 3), jnp.float32)
    v = jax.eval_shape(lambda: stem.init(jax.random.key(0), jnp.zeros(x.shape), False))

    def loss(params, stats, x):
        y, _ = stem.apply({"params": params, "batch_stats": stats}, x, True, mutable=["batch_stats"])
        return jnp.mean(y**2)

    return memory.analyse(jax.grad(loss), v["params"], v["batch_stats"], x)["temp"]


def _field_vjp_memory(remat: bool) -> int:
    """One vector-field VJP, as each step of the backsolve adjoint's backward solve runs it."""
    widths = (8, 16, 32, 64)
    field = VectorField(widths, 2, 2, NormSpec("group", groups=4), remat=remat)
    y = tuple(jax.ShapeDtypeStruct((4, 32 // 2**i, 32 // 2**i, w), jnp.float32) for i, w in enumerate(widths))
    t = jnp.zeros((), jnp.float32)
    params = jax.eval_shape(lambda: field.init(jax.random.key(0), t, tuple(jnp.zeros(a.shape) for a in y))["params"])

    def vjp(params, y):
        out, pull = jax.vjp(lambda p, y: field.apply({"params": p}, t, y), params, y)
        return pull(out)

    return memory.analyse(vjp, params, y)["temp"]


@pytest.mark.slow
@pytest.mark.parametrize("part", ["stem", "field"])
def test_remat_lowers_the_compiled_backward_memory(part):
    """Rematerialising unit by unit holds one unit's activations at a time in the backward pass
    (XLA's analysis of the compiled executable, with optimisation barriers kept as on GPUs)."""
    measure = _stem_grad_memory if part == "stem" else _field_vjp_memory
    plain, remat = measure(False), measure(True)
    assert remat < 0.7 * plain, (part, plain, remat)


def test_resize_matches_pytorch_bilinear():
    """Against a direct transcription of PyTorch's upsample_bilinear2d index rules."""

    def reference(x, out_h, out_w, align):
        n, h, w, c = x.shape
        out = np.zeros((n, out_h, out_w, c))

        def src(o, size_in, size_out):
            if align:
                return o * (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
            return max((o + 0.5) * size_in / size_out - 0.5, 0.0)

        for i in range(out_h):
            sy = src(i, h, out_h)
            y0 = min(int(np.floor(sy)), h - 1)
            y1, ly = min(y0 + 1, h - 1), sy - min(int(np.floor(sy)), h - 1)
            for j in range(out_w):
                sx = src(j, w, out_w)
                x0 = min(int(np.floor(sx)), w - 1)
                x1, lx = min(x0 + 1, w - 1), sx - x0
                out[:, i, j] = (1 - ly) * ((1 - lx) * x[:, y0, x0] + lx * x[:, y0, x1]) + ly * (
                    (1 - lx) * x[:, y1, x0] + lx * x[:, y1, x1]
                )
        return out

    x = np.random.default_rng(0).normal(size=(2, 5, 7, 3)).astype(np.float32)
    for size in [(20, 28), (9, 13), (3, 4), (5, 7)]:
        for align in (False, True):
            got = resize_bilinear(jnp.asarray(x), size, align_corners=align)
            np.testing.assert_allclose(got, reference(x, *size, align), rtol=1e-5, atol=1e-5)


def _apply_overrides(cfg, text):
    pairs = (item.strip().split("=") for item in text.split(","))
    segnode_jax.config.apply_overrides(cfg, {k: v if k.endswith("name") else int(v) for k, v in pairs})


def _documented_rows():
    doc = open(os.path.join(REPO, "docs", "reproduction.md")).read()
    rows = re.findall(r"^\| (hrnetv2|baseline|segnode) \| `([^`]*)`[^|]*\| ([\d,]+) \|", doc, re.M)
    assert len(rows) == 13, rows
    return doc, rows


@pytest.mark.slow
def test_parameter_counts_equal_the_documented_table():
    doc, rows = _documented_rows()
    for name, overrides, documented in rows:
        cfg = segnode_jax.model_config()
        cfg.name = name
        cfg.num_classes = 11
        _apply_overrides(cfg, overrides)
        assert segnode_jax.count_params(cfg) == int(documented.replace(",", "")), (name, overrides)
    # The official HRNetV2-W48 reference points.
    cfg = segnode_jax.model_config()
    cfg.name = "hrnetv2"
    assert segnode_jax.count_params(cfg) == 65_859_379 and "65,859,379" in doc
    cfg.hrnet.stage_modules = (1, 4, 0)
    assert segnode_jax.count_params(cfg) == 18_235_123 and "18,235,123" in doc
    widths = (48, 96, 192, 384)
    xs = tuple(jnp.zeros((1, 16 >> i, 16 >> i, w)) for i, w in enumerate(widths))
    for blocks, official in [(4, 15_874_752), (2, 8_818_752), (1, 5_290_752)]:
        for preact, norm in [(False, "batch"), (True, "group")]:
            module = HRModule(widths, blocks, norm=NormSpec(norm), preact=preact)
            shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), xs, False))
            assert sum(s.size for s in jax.tree_util.tree_leaves(shapes["params"])) == official
        assert f"{official:,}" in doc


@pytest.mark.slow
def test_ocr_parameter_counts_equal_the_documented_table():
    doc = open(os.path.join(REPO, "docs", "reproduction.md")).read()
    rows = re.findall(r"^\| (hrnetv2|baseline|segnode)\+ocr \| `name=\w+, head=ocr` \| ([\d,]+) \|", doc, re.M)
    assert [name for name, _ in rows] == list(MODELS)
    for name, documented in rows:
        cfg = segnode_jax.model_config()
        cfg.name, cfg.head = name, "ocr"
        assert segnode_jax.count_params(cfg) == int(documented.replace(",", "")), name
        if name == "hrnetv2":  # HRNet-OCR's reported 70.4M
            assert abs(int(documented.replace(",", "")) / 70.4e6 - 1) < 1e-3


@pytest.mark.slow
def test_ocr_head_on_every_model(images):
    """model.head=ocr: logits at the input size, the soft-region logits at 1/4 in aux; eval is
    deterministic, training draws its dropout from the key it is given."""
    for name in MODELS:
        cfg = tiny(name, solver="euler", num_steps=1, adjoint="unrolled")  # SegNode: the cheapest solve to compile
        cfg.head, cfg.ocr.mid_channels, cfg.ocr.key_channels = "ocr", 8, 4
        v = segnode_jax.init(cfg, jax.random.key(0), SHAPE)
        assert {"conv3x3_ocr_0", "aux_head_3", "ocr_distri_head", "cls_head"} <= set(v["params"]["head"])
        logits, aux = segnode_jax.apply(v, images, cfg)
        assert logits.shape == SHAPE[:3] + (cfg.num_classes,) and aux["aux_logits"].shape == (2, 8, 9, cfg.num_classes)
        assert np.isfinite(np.asarray(logits)).all()
        again, _ = segnode_jax.apply(v, images, cfg)
        np.testing.assert_array_equal(np.asarray(again), np.asarray(logits))
    cfg.ocr.dropout = 0.5  # segnode
    a, aux_a = segnode_jax.apply(v, images, cfg, train=True, rng=jax.random.key(1))
    b, aux_b = segnode_jax.apply(v, images, cfg, train=True, rng=jax.random.key(2))
    assert float(jnp.abs(a - b).max()) > 1e-4  # dropout after the fusion...
    np.testing.assert_array_equal(np.asarray(aux_a["aux_logits"]), np.asarray(aux_b["aux_logits"]))  # ...not before
    cfg.head = "orc"
    with pytest.raises(ConfigError, match=r"model\.head"):
        segnode_jax.count_params(cfg)


@pytest.mark.slow
def test_default_readings_reproduce_table2():
    """Paper Table 2 (CamVid): HRNetV2 65.8M within 0.5%, Baseline 70.9M and SegNode 20.9M
    within 5%, with the defaults every dataset config inherits."""
    cfg = segnode_jax.load_config("configs/camvid.py").model
    for name, paper, tol in [("hrnetv2", 65.8e6, 0.005), ("baseline", 70.9e6, 0.05), ("segnode", 20.9e6, 0.05)]:
        cfg.name = name
        assert abs(segnode_jax.count_params(cfg) / paper - 1) <= tol, name


@pytest.mark.slow
def test_classification_models_for_imagenet_pretraining():
    """model.task=classification: HRNetV2-W48 with HRNet-Image-Classification's head is the
    official HRNet-W48-C (77,469,864 parameters, its published 77.5M); the Baseline's and
    SegNode's counts are documented in docs/reproduction.md. Tiny networks give (N, classes)
    logits; a segmentation head or a non-HRNet model is refused naming the field."""
    cfg = segnode_jax.load_config("configs/camvid.py").model
    cfg.task, cfg.num_classes = "classification", 1000
    counts = {}
    for name in ("hrnetv2", "baseline", "segnode"):
        cfg.name = name
        counts[name] = segnode_jax.count_params(cfg)
    assert counts == {"hrnetv2": 77_469_864, "baseline": 82_758_120, "segnode": 33_540_072}
    for name in ("hrnetv2", "baseline", "segnode"):
        t = tiny(name, solver="euler", num_steps=2)
        t.task, t.num_classes = "classification", 7
        t.classification.head_channels, t.classification.features = (2, 3, 4, 5), 12
        # Shapes only (the head's numbers are checked against PyTorch in tests/convert).
        v = jax.eval_shape(lambda: segnode_jax.init(t, jax.random.key(0), (2, 32, 32, 3)))
        logits, aux = jax.eval_shape(lambda v: segnode_jax.apply(v, jnp.ones((2, 32, 32, 3)), t), v)
        assert logits.shape == (2, 7) and logits.dtype == jnp.float32
        assert ("ode" in aux) == (name == "segnode")
    t.head = "ocr"
    with pytest.raises(ConfigError, match="model.head"):
        segnode_jax.count_params(t)
    t.head, t.task = "default", "detection"
    with pytest.raises(ConfigError, match="model.task"):
        segnode_jax.count_params(t)
    # A classifier trains on a classification dataset (configs/imagenet.py); on a segmentation
    # one it is refused with one message naming the fix (tests/training/test_pretraining.py trains one).
    from segnode_jax import training

    run = segnode_jax.load_config("configs/tiny.py")
    run.model.task = "classification"
    with pytest.raises(training.ConfigError, match="classification dataset.*configs/imagenet.py"):
        training.resolve_config(run)


CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "*.py")))


def test_the_configs_are_found():
    names = {os.path.basename(p) for p in CONFIGS}
    assert {"cityscapes.py", "camvid.py", "lip.py", "pascal_context.py", "synthetic.py", "tiny.py"} <= names


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_every_config_builds_its_models(path, tmp_path):
    import json

    from segnode_jax import data

    cfg = segnode_jax.load_config(path)
    if cfg.data.name == "folder":  # the class count comes from the user's class file
        (tmp_path / "classes.json").write_text(json.dumps({"classes": ["background", "wall", "crack"]}))
        cfg.data.root = str(tmp_path)
        assert cfg.model.num_classes is None and data.resolve_num_classes(cfg) == 3
    if cfg.data.name == "imagenet":  # the class count comes from the dataset: ILSVRC2012's 1000
        cfg.data.data_dir = str(tmp_path)  # (read from the prepared dataset; before it, the standard list)
        assert cfg.model.num_classes is None and data.resolve_num_classes(cfg) == 1000
    # The model predicts exactly the dataset's classes (a mismatch only shows at train time).
    assert cfg.model.num_classes == data.get_info(cfg.data).num_classes
    for name in MODELS:
        cfg.model.name = name
        assert segnode_jax.count_params(cfg.model) > 0


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(name="unetplusplus"), "model.name"),
        (dict(dtype="float8"), "model.dtype"),
    ],
)
def test_bad_model_config_names_the_field(change, message, images):
    cfg = tiny("segnode")
    for k, v in change.items():
        cfg[k] = v
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        segnode_jax.count_params(cfg)


def test_batchnorm_in_the_field_is_refused():
    cfg = tiny("segnode")
    cfg.field.norm = "batch"
    with pytest.raises(ConfigError, match=r"model\.field\.norm.*pure function"):
        segnode_jax.count_params(cfg)


def test_images_must_be_nhwc(variables):
    with pytest.raises(ValueError, match=r"images\[None\]"):
        segnode_jax.apply(variables["hrnetv2"], jnp.zeros((30, 34, 3)), tiny("hrnetv2"))


def test_a_registered_model_is_asked_what_it_can_do_not_named(variables, images):
    """A model added with register_model(..., solves_ode=True) gets --solver, NaN-on-failure in
    export and the ODE statistics like the built-in ODE models; one registered without it is
    refused with the names of those that can."""
    from segnode_jax import models, segment
    from segnode_jax.models.segnode import SegNode

    try:
        segnode_jax.register_model("my_ode_net", solves_ode=True)(type("MyODENet", (SegNode,), {}))
        segnode_jax.register_model("my_plain_net")(type("MyPlainNet", (SegNode,), {}))
        cfg = segnode_jax.load_config(os.path.join(REPO, "configs", "tiny.py"))
        cfg.model.name = "my_ode_net"
        assert models.has_ode(cfg.model) and "my_ode_net" in models.ode_model_names()
        assert not segnode_jax.capabilities("my_ode_net").saves_along_solve
        fast = segment.with_solver(cfg, "euler:1")
        assert (fast.model.ode.solver, fast.model.ode.num_steps) == ("euler", 1)
        _, aux = segnode_jax.apply(variables["segnode"], images, fast.model)
        assert int(aux["ode"]["nfe"]) == 1
        cfg.model.name = "my_plain_net"
        assert not models.has_ode(cfg.model)
        with pytest.raises(
            segment.PredictError, match=r"--solver only applies to models that solve an ODE \(.*my_ode_net"
        ):
            segment.with_solver(cfg, "euler:1")
        with pytest.raises(ConfigError, match="unknown model.name='nope'"):
            segnode_jax.capabilities("nope")
    finally:
        for name in ("my_ode_net", "my_plain_net"):
            models._REGISTRY.pop(name, None)


def test_make_head_is_the_one_choice_of_an_hrnet_family_head():
    """models.heads.make_head picks the head from the config alone (task, model.head, and whether
    the branches are SegNode's pre-activation state); calling it twice (SegNode's trajectory)
    reuses one module named ``head``; a model with its own head refuses model.head=ocr."""
    import flax.linen as nn

    from segnode_jax.models.heads import make_head

    cfg = tiny("segnode")
    widths = (2, 4, 8, 16)
    xs = tuple(jnp.ones((1, 8 >> i, 8 >> i, w)) for i, w in enumerate(widths))

    class Host(nn.Module):
        cfg: object
        per_branch: bool

        @nn.compact
        def __call__(self, xs):
            head = make_head(self.cfg, NormSpec("batch"), jnp.float32, (32, 32), per_branch=self.per_branch)
            first, aux_logits = head(xs, False)
            second, _ = head(xs, False)
            return first, second, aux_logits

    expected = {
        ("default", "segmentation", False): ({"last_layer_0", "last_layer_1", "last_layer_3"}, (1, 32, 32)),
        ("default", "segmentation", True): (
            {f"{k}_{i}" for k in ("norm", "classifier") for i in range(4)},
            (1, 32, 32),
        ),
        ("ocr", "segmentation", False): ({"conv3x3_ocr_0", "aux_head_3", "cls_head"}, (1, 32, 32)),
        ("ocr", "segmentation", True): ({"norm_0", "conv3x3_ocr_0", "aux_head_3", "cls_head"}, (1, 32, 32)),
        ("default", "classification", False): ({"incre_modules_0_0", "final_layer_0", "classifier"}, (1,)),
        ("default", "classification", True): ({"norm_0", "incre_modules_0_0", "classifier"}, (1,)),
    }
    for (head, task, per_branch), (names, lead) in expected.items():
        c = cfg
        c.head, c.task = head, task
        c.ocr.mid_channels, c.ocr.key_channels = 8, 4
        c.classification.head_channels, c.classification.features = (2, 3, 4, 5), 12
        c.num_classes = 5
        host = Host(c, per_branch)
        v = jax.eval_shape(lambda host=host: host.init(jax.random.key(0), xs))
        assert set(v["params"]) == {"head"}, (head, task, per_branch)
        assert names <= set(v["params"]["head"]), (head, task, per_branch, sorted(v["params"]["head"]))
        first, second, aux_logits = jax.eval_shape(host.apply, v, xs)
        assert first.shape == lead + (5,) and second.shape == first.shape
        assert (aux_logits is not None) == (head == "ocr")
    own = tiny("unet")
    own.head = "ocr"
    with pytest.raises(ConfigError, match=r"U-Net has its own decoder \(model.head=default\)"):
        segnode_jax.count_params(own)
