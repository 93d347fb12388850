"""The demo page: its model side (uploads of every kind, the solve controls) and the page itself
in a real headless browser (chromium), whose rendered overlay must equal predict.py's output for
the same image. The browser test is skipped with the reason where no browser is installed
(``bash scripts/install_demo.sh`` installs one as root; the README's test command runs it)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

import segnode_jax
from benchmarks import demo_page
from segnode_jax import data, ode, segment
from tests.conftest import REPO, random_model_dir, run_cli

demo_app = pytest.importorskip("segnode_jax.demo_app")
ARTIFACTS = os.environ.get("SEGNODE_TEST_ARTIFACTS", os.path.join(REPO, "runs", "test_artifacts"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return random_model_dir(tmp_path_factory.mktemp("demo_model"), seed=5)


@pytest.fixture(scope="module")
def demo_model(model_dir):
    """The page's model (compiled on first use: the tests that take it are slow)."""
    return demo_app.DemoModel(model_dir[0])


@pytest.fixture(scope="module")
def uploads(tmp_path_factory):
    """A generated street scene (PNG), its grey / alpha / 16-bit versions, a text file named
    like an image, and a PNG whose header claims 60 megapixels."""
    from segnode_jax.data import street

    root = tmp_path_factory.mktemp("uploads")
    image, _ = street.render(seed=1, split="test", index=0, size=(48, 64))
    Image.fromarray(image).save(root / "scene.png")
    Image.fromarray(image).convert("L").save(root / "grey.png")
    Image.fromarray(np.dstack([image, np.full(image.shape[:2], 128, np.uint8)])).save(root / "alpha.png")
    Image.fromarray((image[..., 0].astype(np.uint16) * 257)).save(root / "depth16.png")
    (root / "notes.png").write_text("not an image")
    Image.new("1", (10000, 6000)).save(root / "huge.png")
    return root


def test_the_page_overlay_is_predict_labels_blended_and_the_shares_count_the_pixels(demo_model, model_dir, uploads):
    _, cfg, variables = model_dir
    result = demo_model.run(str(uploads / "scene.png"))
    image = segment.read_image(str(uploads / "scene.png"))
    labels = segnode_jax.predict(variables, image, cfg)
    np.testing.assert_array_equal(result.labels, labels)
    assert len(np.unique(labels)) >= 2, "random weights should give several classes, else the check is weak"
    np.testing.assert_array_equal(result.overlay, segment.overlay(image, data.colorize(labels, demo_model.palette)))
    counts = np.bincount(labels.ravel(), minlength=len(demo_model.class_names))
    assert result.shares == pytest.approx({n: c / labels.size for n, c in zip(demo_model.class_names, counts)})
    assert result.solve == f"{ode.describe_solve(cfg.model.ode)}, t = 1" and result.nfe == (
        segment.Segmenter(variables, cfg).segment([image])[0].nfe
    )
    legend = demo_model.legend_html(result.shares)
    top = max(result.shares, key=result.shares.get)
    assert legend.index(f'data-class="{top}"') < min(
        legend.index(f'data-class="{n}"') for n in demo_model.class_names if n != top
    ), "the legend lists the largest class first"


def test_the_solve_controls_change_the_solve_nfe_and_time_t(demo_model, uploads):
    path = str(uploads / "scene.png")
    euler = demo_model.run(path, demo_model.solve_spec("euler", 2, "1e-3"))
    assert (euler.solve, euler.nfe) == ("euler:2, t = 1", 2)
    rk4 = demo_model.run(path, demo_model.solve_spec("rk4", 2, "1e-2"))
    assert (rk4.solve, rk4.nfe) == ("rk4:2, t = 1", 8)
    half = demo_model.run(path, "euler:2", 0.5)
    assert half.solve == "euler:2, t = 0.5" and half.nfe == 2
    assert not np.array_equal(half.labels, euler.labels), "the state at t = 0.5 is not the state at t = 1"
    assert demo_model.solve_spec("dopri5", 3, "1e-3") == "dopri5@1e-3"  # adaptive: the trained solve of the tiny config
    assert demo_model.solve_spec("euler", 3, "1e-2") == "euler:3"


@pytest.mark.parametrize("name", ["grey.png", "alpha.png", "depth16.png"])
def test_grey_alpha_and_16_bit_uploads_are_segmented(demo_model, uploads, name):
    overlay, legend, status = demo_app.handle(demo_model, str(uploads / name), "euler", 2, "1e-2", 1.0)
    assert overlay is not None and overlay.shape == (48, 64, 3) and "error" not in status
    assert "NFE 2" in status and " ms" in status and "%" in legend


@pytest.mark.parametrize(
    "name, message",
    [
        ("notes.png", "notes.png: not an image file"),
        ("huge.png", "10000x6000 (60 megapixels); the demo takes up to 50"),
    ],
)
def test_bad_uploads_are_a_message_on_the_page(demo_model, uploads, name, message):
    overlay, legend, status = demo_app.handle(demo_model, str(uploads / name), "euler", 2, "1e-2", 1.0)
    assert overlay is None and status.startswith("**error:**") and message in status, status
    assert "<table" in legend


def test_large_uploads_are_shrunk_and_bad_settings_are_messages(demo_model, model_dir, uploads, tmp_path):
    small = demo_app.DemoModel(model_dir[0], max_side=32)
    overlay, _, status = demo_app.handle(small, str(uploads / "scene.png"), "euler", 2, "1e-2", 1.0)
    assert overlay.shape == (24, 32, 3) and "shrunk from 64x48 to 32x24" in status
    _, _, status = demo_app.handle(demo_model, str(uploads / "scene.png"), "euler", 2, "1e-2", 1.5)
    assert status.startswith("**error:**") and "(0, 1]" in status
    _, _, status = demo_app.handle(demo_model, None, "euler", 2, "1e-2", 1.0)
    assert "Drop an image" in status


def test_demo_cli_bad_input_is_one_line(tmp_path):
    result = run_cli("demo.py", "--ckpt", str(tmp_path / "nothing"))
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in result.stderr, result.stderr


@pytest.mark.slow
@pytest.mark.skipif(demo_page.browser_missing() is not None, reason=str(demo_page.browser_missing()))
def test_the_page_in_a_headless_browser_shows_predict_py_overlay_and_survives_a_bad_upload(
    model_dir, uploads, tmp_path
):
    ckpt = model_dir[0]
    result = run_cli(
        "predict.py", "--ckpt", ckpt, "--input", str(uploads / "scene.png"), "--output", str(tmp_path / "p")
    )
    assert result.returncode == 0, result.stderr
    image = segment.read_image(str(uploads / "scene.png"))
    expected = segment.overlay(image, np.asarray(Image.open(tmp_path / "p" / "color" / "scene.png").convert("RGB")))
    os.makedirs(ARTIFACTS, exist_ok=True)
    with demo_page.demo_server(ckpt, "--examples", str(uploads / "scene.png")) as (url, output):
        with demo_page.headless_browser() as driver:
            demo_page.open_page(driver, url)
            shown = demo_page.upload(driver, str(uploads / "scene.png"))
            driver.save_screenshot(os.path.join(ARTIFACTS, "demo_page.png"))
            with open(tmp_path / "p" / "predictions.json") as f:
                nfe = json.load(f)["images"][0]["nfe"]
            assert "error" not in shown["status"] and f"NFE {nfe:g} " in shown["status"], (shown["status"], output())
            np.testing.assert_array_equal(shown["overlay"], expected)
            assert {name for name, _ in shown["legend"]} == set(data.get_info(model_dir[1].data).class_names)
            bad = demo_page.upload(driver, str(uploads / "notes.png"))
            assert "error:" in bad["status"] and "not an image file" in bad["status"], bad["status"]
            again = demo_page.upload(driver, str(uploads / "grey.png"))
            assert "error" not in again["status"] and again["overlay"].shape == (48, 64, 3), (again["status"], output())
