"""predict.py and segnode_jax.predict on real image files (mixed sizes and formats, a broken
file, an occupied output folder), and the serialized inference function (jax.export) run by
the loader of docs/usage.md with only jax, and the same function as ONNX run by onnxruntime."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

import segnode_jax
from segnode_jax import data, segment
from segnode_jax import export as export_lib
from segnode_jax.data.transforms import normalize
from tests.conftest import REPO, random_model_dir, run_cli


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny SegNode with random weights as ``--ckpt`` takes it (see ``random_model_dir``)."""
    return random_model_dir(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Images of mixed sizes, modes and formats, in sub-folders, plus a broken file and a
    non-image file."""
    root = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    (root / "sub" / "deeper").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "a.png")
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "sub" / "b.jpg", quality=95)
    Image.fromarray(rng.integers(0, 256, (24, 40), dtype=np.uint8)).save(root / "sub" / "grey.png")
    Image.fromarray(rng.integers(0, 256, (32, 32, 4), dtype=np.uint8)).save(root / "sub" / "deeper" / "alpha.png")
    Image.fromarray(rng.integers(0, 65535, (20, 28), dtype=np.uint16)).save(root / "depth16.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but then nothing")
    (root / "notes.txt").write_text("not an image, and not named like one")
    return root


def test_find_inputs_takes_files_folders_and_globs_and_names_the_problems(inputs, tmp_path):
    found = segment.find_inputs([str(inputs)])
    assert sorted(i.name for i in found) == ["a", "broken", "depth16", "sub/b", "sub/deeper/alpha", "sub/grey"]
    globbed = segment.find_inputs([str(inputs / "sub" / "**" / "*.png")])
    assert sorted(i.name for i in globbed) == ["deeper/alpha", "grey"]
    assert [i.name for i in segment.find_inputs([str(inputs / "notes.txt")])] == ["notes"]  # named: tried
    with pytest.raises(segment.PredictError, match="no such file or folder"):
        segment.find_inputs([str(tmp_path / "missing")])
    with pytest.raises(segment.PredictError, match="matches no file"):
        segment.find_inputs([str(tmp_path / "*.png")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(segment.PredictError, match="holds no image files"):
        segment.find_inputs([str(tmp_path / "empty")])
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "a.jpg")
    with pytest.raises(segment.PredictError, match=r"a\.png and .*a\.jpg would both be written as 'a'"):
        segment.find_inputs([str(inputs / "a.png"), str(tmp_path / "a.jpg")])


def test_read_image_converts_modes_and_applies_the_exif_orientation(inputs, tmp_path):
    assert segment.read_image(str(inputs / "sub" / "grey.png")).shape == (24, 40, 3)
    assert segment.read_image(str(inputs / "sub" / "deeper" / "alpha.png")).shape == (32, 32, 3)
    deep = segment.read_image(str(inputs / "depth16.png"))
    assert deep.dtype == np.uint8 and deep.shape == (20, 28, 3) and deep.max() > 128
    # A camera JPEG stored sideways with "rotate 90" in its EXIF: read upright.
    img = Image.fromarray(np.zeros((10, 30, 3), np.uint8))
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(tmp_path / "turned.jpg", exif=exif)
    assert segment.read_image(str(tmp_path / "turned.jpg")).shape == (30, 10, 3)
    assert segment.image_size(str(tmp_path / "turned.jpg")) == (30, 10)
    for bad in ("broken.png", "notes.txt"):
        with pytest.raises(segment.UnreadableImage, match=bad.replace(".", r"\.")):
            segment.read_image(str(inputs / bad))


@pytest.mark.slow
def test_predict_api_equals_the_model_on_normalised_images(model_dir):
    _, cfg, variables = model_dir
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
    labels = segnode_jax.predict(variables, a, cfg)
    logits, _ = segnode_jax.apply(variables, normalize(a, mean=cfg.data.mean, std=cfg.data.std)[None], cfg.model)
    assert labels.shape == (32, 32) and labels.dtype == np.int32
    np.testing.assert_array_equal(labels, np.argmax(np.asarray(logits[0]), -1))
    # A list of mixed sizes: a list back, each at its own size; probabilities sum to one.
    both, probs = segnode_jax.predict(variables, [a, b], cfg, probabilities=True)
    assert [x.shape for x in both] == [(32, 32), (24, 40)] and probs[1].shape == (24, 40, 5)
    np.testing.assert_array_equal(both[0], labels)
    np.testing.assert_allclose(probs[1].sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(both[1], probs[1].argmax(-1))
    # A stacked batch gives a stacked result; slide mode covers the image with crop windows.
    stacked = segnode_jax.predict(variables, np.stack([a, a]), cfg)
    assert stacked.shape == (2, 32, 32)
    np.testing.assert_array_equal(stacked[1], labels)
    slid = segnode_jax.predict(variables, b, cfg, mode="slide")
    assert slid.shape == (24, 40)
    # One window exactly covering the image is whole-image inference.
    one_window = copy.deepcopy(cfg)
    one_window.eval.crop_size = (24, 40)
    np.testing.assert_array_equal(segnode_jax.predict(variables, b, one_window, mode="slide"), both[1])
    with pytest.raises(segment.PredictError, match="uint8"):
        segnode_jax.predict(variables, a.astype(np.float32), cfg)
    with pytest.raises(segment.PredictError, match="rk4:1"):
        segnode_jax.predict(variables, a, cfg, solver="rk4-1")


@pytest.mark.slow
def test_predict_cli_writes_every_readable_image_skips_the_broken_one_and_keeps_existing_outputs(
    model_dir, inputs, tmp_path
):
    ckpt, cfg, variables = model_dir
    out = tmp_path / "out"
    proc = run_cli(
        "predict.py",
        f"--ckpt={ckpt}",
        f"--input={inputs}",
        f"--output={out}",
        "--solver=rk4:1",
        "--noprogress",
        devices=1,
    )
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    # The broken file: one line when it is met, one error at the end; exit status 1.
    assert proc.returncode == 1 and len(errors) == 1, proc.stderr
    assert "1 of 6 inputs could not be read" in errors[0] and "broken.png" in errors[0], errors[0]
    assert any(line.startswith("skipped:") and "broken.png" in line for line in proc.stderr.splitlines())
    assert "Traceback" not in proc.stderr
    summary = json.loads((out / "predictions.json").read_text())
    assert summary["num_images"] == 5 and summary["solver"] == "rk4:1" and summary["format"] == "train_ids"
    assert [s["input"] for s in summary["skipped"]] == [str(inputs / "broken.png")]
    sizes = {r["name"]: (r["height"], r["width"]) for r in summary["images"]}
    assert sizes == {
        "a": (32, 32),
        "depth16": (20, 28),
        "sub/b": (32, 32),
        "sub/deeper/alpha": (32, 32),
        "sub/grey": (24, 40),
    }
    for r in summary["images"]:
        labels = np.asarray(Image.open(r["outputs"]["labels"]))
        assert labels.shape == (r["height"], r["width"]) and labels.max() < 5
        # Fixed RK4 x 1: four field evaluations per image.
        assert r["nfe"] == 4.0 and r["seconds"] > 0
        assert sum(r["pixels_per_class"].values()) == r["height"] * r["width"]
        assert np.asarray(Image.open(r["outputs"]["color"])).shape == (r["height"], r["width"], 3)
        assert np.asarray(Image.open(r["outputs"]["overlay"])).shape == (r["height"], r["width"], 3)
    # The written labels are what the Python API gives for the same file and solve.
    grey = segment.read_image(str(inputs / "sub" / "grey.png"))
    expected = segnode_jax.predict(variables, grey, cfg, solver="rk4:1")
    np.testing.assert_array_equal(np.asarray(Image.open(out / "labels" / "sub" / "grey.png")), expected)
    # The same command again: the folder is left alone, one error line naming --overwrite.
    before = {p: os.path.getmtime(p) for p in (out / "labels").rglob("*.png")}
    again = run_cli("predict.py", f"--ckpt={ckpt}", f"--input={inputs / 'a.png'}", f"--output={out}", devices=1)
    lines = [line for line in again.stderr.splitlines() if line.startswith("error:")]
    assert again.returncode == 2 and len(lines) == 1 and "--overwrite" in lines[0], again.stderr
    assert before == {p: os.path.getmtime(p) for p in (out / "labels").rglob("*.png")}
    # --overwrite replaces; --format dataset writes the dataset's own ids (synthetic: its table).
    over = run_cli(
        "predict.py",
        f"--ckpt={ckpt}",
        f"--input={inputs / 'a.png'}",
        f"--output={out}",
        "--overwrite",
        "--format=dataset",
        "--noprogress",
        devices=1,
    )
    assert over.returncode == 0, over.stderr
    ids = np.asarray(Image.open(out / "labels" / "a.png"))
    train_ids = segnode_jax.predict(variables, segment.read_image(str(inputs / "a.png")), cfg)
    np.testing.assert_array_equal(ids, data.train_ids_to_dataset_ids(cfg.data, train_ids))


@pytest.mark.slow
def test_predict_cli_bad_input_is_one_line(model_dir, tmp_path):
    ckpt, _, _ = model_dir
    for args, words in (
        ([f"--ckpt={ckpt}", f"--output={tmp_path}/o"], "--input"),
        ([f"--ckpt={ckpt}", f"--input={tmp_path}/nothing", f"--output={tmp_path}/o"], "no such file or folder"),
        ([f"--ckpt={tmp_path}/no_run", f"--input={REPO}/README.md", f"--output={tmp_path}/o"], "no checkpoint"),
    ):
        proc = run_cli("predict.py", *args, devices=1)
        lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert proc.returncode == 2 and len(lines) == 1 and words in lines[0], (args, proc.stderr)
        assert "Traceback" not in proc.stderr


LOADER = """
import sys, numpy as np
from jax import export
with open(sys.argv[1], "rb") as f:
    fn = export.deserialize(bytearray(f.read()))
images = np.load(sys.argv[2])
np.save(sys.argv[3], np.asarray(fn.call(images)))
"""


@pytest.mark.slow
def test_exported_function_runs_with_only_jax_and_equals_apply(model_dir, tmp_path):
    ckpt, cfg, variables = model_dir
    out = tmp_path / "model.jax"
    proc = subprocess.run(
        [sys.executable, "-m", "segnode_jax.export", f"--ckpt={ckpt}", f"--out={out}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((tmp_path / "model.jax.json").read_text())
    assert meta["input"]["shape"] == ["b", 32, 32, 3] and meta["platforms"] == ["cpu", "cuda"]
    assert meta["class_names"] == list(data.get_info(cfg.data).class_names)
    rng = np.random.default_rng(2)
    for n in (1, 3):  # the batch is symbolic: any size runs
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        np.save(tmp_path / "images.npy", images)
        # The loader imports nothing but jax and numpy (not segnode_jax, not flax).
        run = subprocess.run(
            [
                sys.executable,
                "-c",
                LOADER + "assert not any(m.startswith(('segnode_jax', 'flax', 'diffrax')) for m in sys.modules)",
                str(out),
                str(tmp_path / "images.npy"),
                str(tmp_path / "logits.npy"),
            ],
            cwd=str(tmp_path),
            capture_output=True,
            text=True,
            timeout=300,
            env=dict(os.environ, JAX_PLATFORMS="cpu"),
        )
        assert run.returncode == 0, run.stderr
        got = np.load(tmp_path / "logits.npy")
        x = normalize(images, mean=cfg.data.mean, std=cfg.data.std)
        want = np.stack([np.asarray(segnode_jax.apply(variables, x[i : i + 1], cfg.model)[0][0]) for i in range(n)])
        assert got.shape == (n, 32, 32, 5)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # Bad settings: one line, nothing written; an existing file is kept.
    for args, words in (
        ([f"--out={out}"], "exists; pass --overwrite"),
        ([f"--out={tmp_path}/x.jax", "--shape=b,h,w"], "height and width must be numbers"),
        ([f"--out={tmp_path}/x.jax", "--shape=4,32"], "must be N,H,W"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "segnode_jax.export", f"--ckpt={ckpt}", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert proc.returncode == 2 and len(lines) == 1 and words in lines[0], (args, proc.stderr)
    assert not os.path.exists(tmp_path / "x.jax")


@pytest.mark.slow
def test_onnx_export_runs_in_onnxruntime_and_equals_apply_on_real_image_files(model_dir, inputs, tmp_path):
    """--format onnx: an adaptive solve is refused in one line naming a fixed-step --solver; with
    euler:1 the file passes onnx.checker and onnxruntime gives apply's logits (euler:1) on image
    files read from disk, for batch 1 and 3 (the batch is symbolic). One Euler step, not the
    docs' rk4:1: the same code path, and jax2onnx's conversion time grows faster than linearly in
    the program's size (rk4:1's four evaluations: 9406 ONNX nodes in 72 s, euler:1: 2818 in 12 s)."""
    pytest.importorskip("jax2onnx", reason="optional ONNX packages not installed: bash scripts/install_onnx.sh")
    import onnx
    import onnxruntime as ort

    ckpt, cfg, variables = model_dir
    out = tmp_path / "model.onnx"

    def export(*args):
        return subprocess.run(
            [sys.executable, "-m", "segnode_jax.export", f"--ckpt={ckpt}", f"--out={out}", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=900,
        )

    refused = export("--solver=dopri5@1e-3")
    lines = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert refused.returncode == 2 and len(lines) == 1 and "--solver rk4:1" in lines[0], refused.stderr
    assert not out.exists()
    proc = export("--solver=euler:1")
    assert proc.returncode == 0, proc.stderr
    assert "WARNING" not in proc.stderr, proc.stderr  # onnx_ir's per-constant warnings are silenced
    onnx.checker.check_model(str(out))
    meta = json.loads((tmp_path / "model.onnx.json").read_text())
    assert meta["format"] == "onnx" and meta["solver"] == "euler:1" and meta["input"]["shape"] == ["b", 32, 32, 3]
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    files = [inputs / "a.png", inputs / "sub" / "b.jpg", inputs / "sub" / "deeper" / "alpha.png"]
    images = np.stack([segment.read_image(str(f)) for f in files])
    fast = segment.with_solver(cfg, "euler:1").model
    for n in (1, 3):
        got = sess.run(None, {sess.get_inputs()[0].name: images[:n]})[0]
        x = normalize(images[:n], mean=cfg.data.mean, std=cfg.data.std)
        want = np.asarray(segnode_jax.apply(variables, x, fast)[0])
        assert got.shape == (n, 32, 32, 5)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["unet", "pspnet"])
def test_onnx_export_of_models_with_max_pooling_runs_in_onnxruntime(name):
    """U-Net (2x2 pools) and PSPNet (the ResNet stem's padded 3x3 pool): jax2onnx writes a max
    pool over NHWC as a 4-axis ONNX MaxPool that onnxruntime refuses; the exporter writes it as
    slices and maxima instead (no MaxPool node) and onnxruntime gives the JAX function's logits
    for batch 1 and 3."""
    pytest.importorskip("jax2onnx", reason="optional ONNX packages not installed: bash scripts/install_onnx.sh")
    import onnxruntime as ort

    cfg = segnode_jax.load_config(os.path.join(REPO, "configs", "tiny.py"))
    cfg.model.name = name
    variables = segnode_jax.init(cfg.model, jax.random.key(0), (1, 64, 64, 3))
    proto = export_lib.onnx_model(variables, cfg, shape=("b", 64, 64))
    assert "MaxPool" not in {node.op_type for node in proto.graph.node}
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    fn = jax.jit(export_lib.inference_function(variables, cfg, per_image=False))
    images = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    for n in (1, 3):
        got = sess.run(None, {sess.get_inputs()[0].name: images[:n]})[0]
        np.testing.assert_allclose(got, np.asarray(fn(images[:n])), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_exported_adaptive_solve_gives_nan_instead_of_a_callback_when_it_fails(model_dir):
    _, cfg, variables = model_dir
    cfg = segment.with_solver(cfg, "dopri5@1e-9")
    with cfg.unlocked():
        cfg.model.ode.max_steps = 1
    exported = export_lib.export_model(variables, cfg, shape=(1, 32, 32), platforms=("cpu",))
    logits = np.asarray(exported.call(np.zeros((1, 32, 32, 3), np.uint8)))
    assert np.isnan(logits).all()
    with pytest.raises(segnode_jax.ODESolveError):
        segnode_jax.apply(variables, np.zeros((1, 32, 32, 3), np.float32), cfg.model)


@pytest.mark.slow
def test_a_failed_solve_in_evaluation_and_prediction_raises_from_its_result_code_without_a_callback(model_dir):
    """The predictor behind evaluate.py and predict.py compiles the model with
    ``on_failure="nan"`` (no host callback: JAX's persistent cache can keep it) and raises a
    failed solve on the host from the returned result code, naming the field to change."""
    from segnode_jax.evaluation import predictor as predictor_lib

    _, cfg, variables = model_dir
    cfg = segment.with_solver(cfg, "dopri5@1e-9")
    with cfg.unlocked():
        cfg.model.ode.max_steps = 1
    predictor = predictor_lib.Predictor.for_model(variables, cfg.model, batch_size=2)
    images = np.zeros((predictor.batch_size, 32, 32, 3), np.float32)
    jitted = predictor_lib._predict_jit(segnode_jax.freeze(cfg.model), True, predictor.mesh)
    assert "callback" not in jitted.lower(variables, predictor.put(images)).as_text()
    with pytest.raises(segnode_jax.ODESolveError, match=r"max_steps=1.*model\.ode\.max_steps"):
        predictor(images[:1])
    # Solved: no error, the statistics of the solve.
    ok = predictor_lib.Predictor.for_model(variables, segment.with_solver(cfg, "rk4:1").model, batch_size=2)
    assert np.isfinite(ok(images[:1])).all() and ok.solver_stats() == {"mean_nfe": 4.0, "num_solves": 1}


def test_slide_inference_of_a_pixelwise_function_is_that_function():
    """Windows that overlap, fall off the image edge and pad it: for a per-pixel predict function
    every pixel must be covered and the overlaps averaged back to the same value."""
    from segnode_jax.evaluation.inference import slide_inference

    rng = np.random.default_rng(3)
    image = rng.normal(size=(37, 53, 3)).astype(np.float32)
    calls = []

    def pixelwise(x):
        calls.append(x.shape)
        return np.concatenate([x, x[..., :1] ** 2], axis=-1)

    for crop, stride in (((16, 16), None), ((16, 24), (5, 7)), ((64, 64), None)):
        calls.clear()
        out = slide_inference(pixelwise, image, crop=crop, stride=stride, batch_size=3)
        np.testing.assert_allclose(out, pixelwise(image), rtol=1e-6, atol=1e-6)
        assert all(shape[1:3] == crop for shape in calls[:-1])
