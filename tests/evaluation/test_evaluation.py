"""Evaluation: metrics with exactly known answers, ignore handling, label-resolution scoring,
whole / sliding-window / multi-scale+flip inference and scoring saved predictions."""

from __future__ import annotations

import copy
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import segnode_jax
from segnode_jax import data, evaluation
from segnode_jax.errors import ConfigError
from segnode_jax.resize import resize_bilinear
from tests.conftest import tiny_config

# ---------------------------------------------------------------------------------------
# Metrics.


def test_metrics_of_a_hand_computed_confusion():
    label = np.array([0, 0, 1, 1, 2, 255, 255])
    pred = np.array([0, 1, 1, 1, 0, 2, 0])
    cm = evaluation.confusion_matrix_np(pred, label, 3)[:, :3]
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    device_cm = evaluation.confusion_matrix(jnp.asarray(pred), jnp.asarray(label), 3)
    np.testing.assert_array_equal(np.asarray(device_cm), cm)
    m = evaluation.metrics_from_confusion(cm, ["a", "b", "c"])
    # a: TP 1, FP 1, FN 1 -> 1/3; b: TP 2, FP 1 -> 2/3; c: TP 0, FN 1 -> 0.
    assert m["per_class_iou"] == pytest.approx({"a": 1 / 3, "b": 2 / 3, "c": 0.0})
    assert m["miou"] == pytest.approx(1 / 3)
    assert m["pixel_accuracy"] == pytest.approx(3 / 5)
    assert m["labelled_pixels"] == 5


def test_absent_classes_are_left_out_of_the_mean():
    cm = np.array([[5, 0, 0], [0, 0, 0], [1, 0, 2]])
    m = evaluation.metrics_from_confusion(cm, ["x", "absent", "z"])
    assert m["per_class_iou"]["absent"] is None
    assert m["num_classes_present"] == 2
    assert m["miou"] == pytest.approx((5 / 6 + 2 / 3) / 2)


def test_miou_over_all_classes_counts_absent_ones_as_zero():
    """HRNet averages over every class (an absent one scores 0); both means are reported."""
    cm = np.array([[5, 0, 0], [0, 0, 0], [1, 0, 2]])
    present = (5 / 6 + 2 / 3) / 2
    everything = (5 / 6 + 0 + 2 / 3) / 3
    m = evaluation.metrics_from_confusion(cm, ["x", "absent", "z"])
    assert (m["miou"], m["miou_present_classes"], m["miou_all_classes"]) == pytest.approx(
        (present, present, everything)
    )
    h = evaluation.metrics_from_confusion(cm, ["x", "absent", "z"], miou_over="all")
    assert h["miou"] == pytest.approx(everything) and h["miou_over"] == "all"
    with pytest.raises(ConfigError, match="miou_over"):
        evaluation.metrics_from_confusion(cm, miou_over="some")


def test_unassigned_predictions_count_as_misses():
    # A saved prediction with "no class" (255) where the label is class 0.
    cm = evaluation.confusion_matrix_np(np.array([0, 255, 1]), np.array([0, 0, 1]), 2)
    assert cm.shape == (2, 3) and cm[0, 2] == 1
    m = evaluation.metrics_from_confusion(cm)
    assert m["per_class_iou"]["class_0"] == pytest.approx(1 / 2)
    assert m["pixel_accuracy"] == pytest.approx(2 / 3)


def test_ignore_index_and_out_of_range_labels_are_not_counted():
    label = jnp.array([[255, 1], [7, 0]])
    pred = jnp.array([[1, 1], [1, 1]])
    cm = np.asarray(evaluation.confusion_matrix(pred, label, 3))
    assert cm.sum() == 2 and cm[1, 1] == 1 and cm[0, 1] == 1


# ---------------------------------------------------------------------------------------
# Resizing to the label resolution.


def test_host_resize_matches_the_models_pytorch_bilinear():
    x = np.random.default_rng(0).normal(size=(13, 17, 3)).astype(np.float32)
    for size in [(20, 31), (7, 9), (13, 40)]:
        for align in (False, True):
            ours = evaluation.resize_bilinear_np(x, size, align_corners=align)
            ref = np.asarray(resize_bilinear(jnp.asarray(x[None]), size, align_corners=align))[0]
            np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_device_scoring_in_a_canvas_equals_host_scoring():
    rng = np.random.default_rng(1)
    c = 4
    # Two examples with different real image and label sizes, padded into canvases.
    sizes = [((10, 12), (23, 17)), ((8, 8), (5, 30))]
    logits = np.zeros((2, 12, 12, c), np.float32)
    labels = np.full((2, 32, 32), 255, np.int32)
    image_size = np.zeros((2, 2), np.int32)
    label_size = np.zeros((2, 2), np.int32)
    expected = np.zeros((c, c), np.int64)
    for i, ((h, w), (lh, lw)) in enumerate(sizes):
        lg = rng.normal(size=(h, w, c)).astype(np.float32)
        lab = rng.integers(0, c, (lh, lw))
        lab[0, :3] = 255
        logits[i, :h, :w] = lg
        logits[i, h:, :] = 50.0  # padding must not leak into the real pixels
        logits[i, :, w:] = -50.0
        labels[i, :lh, :lw] = lab
        image_size[i], label_size[i] = (h, w), (lh, lw)
        pred = np.argmax(evaluation.resize_bilinear_np(lg, (lh, lw)), -1)
        expected += evaluation.confusion_matrix_np(pred, lab, c)[:, :c]
    cm, pred = jax.jit(evaluation.score_batch)(logits, image_size, labels, label_size)
    np.testing.assert_array_equal(np.asarray(cm), expected)


# ---------------------------------------------------------------------------------------
# Inference modes.


@pytest.mark.parametrize("size", [(32, 32), (33, 50), (100, 37), (64, 96)])
@pytest.mark.parametrize("crop,stride", [((32, 32), (21, 21)), ((32, 32), (32, 32)), ((16, 24), (5, 7))])
def test_sliding_windows_cover_every_pixel_inside_the_image(size, crop, stride):
    h, w = size
    windows = evaluation.sliding_windows(h, w, crop, stride)
    count = np.zeros((h, w), np.int32)
    for y0, y1, x0, x1 in windows:
        assert 0 <= y0 and y1 <= h and 0 <= x0 and x1 <= w
        assert (y1 - y0, x1 - x0) == tuple(crop)
        count[y0:y1, x0:x1] += 1
    assert count.min() >= 1
    if h % crop[0] == 0 and w % crop[1] == 0 and tuple(stride) == tuple(crop):
        assert count.max() == 1  # non-overlapping tiling: every pixel exactly once


@pytest.mark.parametrize("size", [(40, 50), (20, 13)])
def test_slide_inference_reassembles_the_image_exactly(size):
    image = np.random.default_rng(2).normal(size=(*size, 3)).astype(np.float32)
    calls = []

    def identity(batch):
        calls.append(batch.shape)
        return batch.copy()

    out = evaluation.slide_inference(identity, image, crop=(24, 16), stride=(10, 9), pad_value=-9.0, batch_size=3)
    np.testing.assert_allclose(out, image, rtol=0, atol=1e-6)
    assert all(s[1:3] == (24, 16) for s in calls)  # every window has the crop size


def test_multiscale_flip_of_a_constant_model_equals_whole_inference():
    rng = np.random.default_rng(3)
    const = rng.normal(size=5).astype(np.float32)

    def constant(batch):
        return np.broadcast_to(const, batch.shape[:3] + (5,)).copy()

    image = rng.normal(size=(30, 44, 3)).astype(np.float32)
    whole = evaluation.whole_inference(constant, image)
    for base in ("whole", "slide"):
        probs = evaluation.multiscale_inference(
            constant,
            image,
            scales=(0.5, 0.75, 1.0, 1.5),
            flip=True,
            base=base,
            crop=(16, 16),
            batch_size=4,
        )
        np.testing.assert_allclose(probs, evaluation.softmax_np(whole), atol=1e-6)
        np.testing.assert_array_equal(probs.argmax(-1), whole.argmax(-1))


def test_multiscale_flip_of_a_spatially_varying_model_keeps_every_region_in_place():
    """A pixel-wise oracle on an image of coloured blocks: every scale and the flipped views,
    once resized and flipped back, must put each block's class where the block is. (A constant
    model cannot reveal a misaligned view; this one does: see the unflipped-back check.)"""
    rng = np.random.default_rng(4)
    colours = rng.normal(size=(4, 3)).astype(np.float32) * 2
    blocks = rng.integers(0, 4, size=(5, 7))
    truth = np.kron(blocks, np.ones((8, 8), np.int64))  # 40 x 56, 8-pixel blocks
    image = colours[truth]

    def pixelwise(batch):  # class = nearest colour, as logits
        d = ((batch[..., None, :] - colours[None, None, None]) ** 2).sum(-1)
        return (-d).astype(np.float32)

    whole = evaluation.whole_inference(pixelwise, image).argmax(-1)
    np.testing.assert_array_equal(whole, truth)
    # Block interiors (2 pixels from any border): resizing blurs only the borders.
    interior = np.zeros_like(truth, bool)
    for i in range(5):
        for j in range(7):
            interior[i * 8 + 2 : i * 8 + 6, j * 8 + 2 : j * 8 + 6] = True
    for base in ("whole", "slide"):
        probs = evaluation.multiscale_inference(
            pixelwise,
            image,
            scales=(0.5, 0.75, 1.0, 1.5, 2.0),
            flip=True,
            base=base,
            crop=(24, 24),
            batch_size=4,
        )
        pred = probs.argmax(-1)
        np.testing.assert_array_equal(pred[interior], truth[interior])
        assert (pred == truth).mean() > 0.95, base
    # The test can fail: a flipped view left unflipped disagrees with the truth almost everywhere.
    unflipped_back = pixelwise(np.ascontiguousarray(image[None, :, ::-1]))[0].argmax(-1)
    assert (unflipped_back[interior] == truth[interior]).mean() < 0.6


def test_flip_swaps_left_right_classes_back():
    """A handedness-aware model: red pixels in the left half of what it sees are class 1
    ("left arm"), in the right half class 2 ("right arm"). Flip testing must give the whole-
    image answer back, which it only does when classes 1 and 2 are swapped after flipping."""

    def model(batch):
        n, h, w, _ = batch.shape
        red = batch[..., 0] > 0
        left = (np.arange(w) < w / 2)[None, None, :]
        logits = np.zeros((n, h, w, 4), np.float32)
        logits[..., 0] = 1.0
        logits[..., 1] = np.where(red & left, 5.0, -5.0)
        logits[..., 2] = np.where(red & ~left, 5.0, -5.0)
        return logits

    image = -np.ones((8, 10, 3), np.float32)
    image[2:6, 1:4, 0] = 1.0  # a red patch on the left
    whole = evaluation.whole_inference(model, image)
    assert (whole.argmax(-1)[2:6, 1:4] == 1).all()
    # The flipped view, flipped back with the swap, is exactly the unflipped one.
    view = evaluation.flip_back(model(image[None, :, ::-1])[0], ((1, 2),))
    np.testing.assert_array_equal(view, whole)
    flipped = evaluation.multiscale_inference(model, image, scales=(1.0,), flip=True, flip_pairs=((1, 2),))
    np.testing.assert_allclose(flipped, evaluation.softmax_np(whole), atol=1e-6)
    # Without the swap the flipped view votes "right arm" on the left: not the same answer.
    wrong = evaluation.multiscale_inference(model, image, scales=(1.0,), flip=True, flip_pairs=())
    assert np.abs(wrong - evaluation.softmax_np(whole)).max() > 0.4


# ---------------------------------------------------------------------------------------
# HRNet's own multi-scale + flip test (eval.mode="hrnet").


def test_hrnet_mode_takes_hrnets_test_crop_and_rule_from_the_dataset():
    import segnode_jax
    from tests.conftest import REPO

    cfg = segnode_jax.load_config(os.path.join(REPO, "configs", "cityscapes.py"))
    s = evaluation.EvalSettings.from_config(cfg, mode="hrnet")  # as evaluate.py --mode hrnet
    assert (s.crop, s.hrnet_rule, s.base_size) == ((1024, 2048), "cityscapes", 2048)
    assert evaluation.EvalSettings.from_config(cfg, mode="slide").crop == (512, 1024)


def test_hrnet_scaled_size_follows_base_size_and_rounds_like_hrnet():
    assert evaluation.hrnet_scaled_size(1024, 2048, 0.75, 2048) == (768, 1536)
    assert evaluation.hrnet_scaled_size(375, 500, 1.0, 520) == (390, 520)  # PASCAL-Context
    assert evaluation.hrnet_scaled_size(500, 375, 1.0, 520) == (520, 390)
    assert evaluation.hrnet_scaled_size(40, 60, 1.5, None) == (60, 90)


def _recording(model):
    shapes = []

    def fn(batch):
        shapes.append(batch.shape[1:3])
        return model(batch)

    return fn, shapes


def _pixelwise(batch):
    """A translation-equivariant model: logits from each pixel alone."""
    return np.stack([batch[..., 0], -batch[..., 0], batch[..., 1] - batch[..., 2]], axis=-1).astype(np.float32)


def test_hrnet_windows_follow_each_datasets_rule():
    image = np.random.default_rng(0).normal(size=(40, 60, 3)).astype(np.float32)
    # Cityscapes: scales <= 1 whole; 1.5 -> 60x90 covered by 16x24 windows every 16x24 pixels,
    # the last ones moved back to the border: 4 x 4 windows, none padded.
    fn, shapes = _recording(_pixelwise)
    evaluation.hrnet_inference(fn, image, scales=(0.5, 1.5), crop=(16, 24), rule="cityscapes")
    assert shapes == [(20, 30)] + [(16, 24)] * 16
    # Base (PASCAL-Context, LIP): 20x30 does not fit a 16x24 window -> windows every 2/3 crop
    # (10x16), border windows padded to the crop: 2 x 2; at 0.25 (10x15) it fits: padded, whole.
    fn, shapes = _recording(_pixelwise)
    evaluation.hrnet_inference(fn, image, scales=(0.5, 0.25), crop=(16, 24), rule="base")
    assert shapes == [(16, 24)] * 4 + [(16, 24)]
    # With flip every view is inferred twice.
    fn, shapes = _recording(_pixelwise)
    evaluation.hrnet_inference(fn, image, scales=(1.0,), flip=True, crop=(64, 64), rule="base")
    assert shapes == [(64, 64)] * 2


@pytest.mark.parametrize("rule", ["base", "cityscapes"])
def test_hrnet_windows_reassemble_a_pixelwise_model_exactly(rule):
    """Windows (and the padding of the base rule) must put every pixel's answer back in place."""
    image = np.random.default_rng(1).normal(size=(37, 53, 3)).astype(np.float32)
    expected = np.exp(_pixelwise(image[None])[0].astype(np.float64))
    out = evaluation.hrnet_inference(_pixelwise, image, scales=(1.0,), crop=(16, 24), rule=rule, pad_value=-9.0)
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_hrnet_averages_flips_as_logits_and_scales_in_exp_space():
    """A model that sees where it is (its logits depend on the column): the flipped view differs,
    and HRNet averages the two views' *logits*, then exponentiates, then sums the scales."""

    def positional(batch):
        n, h, w, _ = batch.shape
        col = np.linspace(-2.0, 2.0, w, dtype=np.float32)[None, None, :]
        return np.stack([batch[..., 0] + col, batch[..., 1] - col, 0.5 * col * batch[..., 2]], axis=-1)

    image = np.random.default_rng(2).normal(size=(12, 20, 3)).astype(np.float32)
    scales = (1.0, 0.5)
    expected = 0.0
    for s in scales:
        x = evaluation.resize_bilinear_np(image, evaluation.hrnet_scaled_size(12, 20, s, None))
        a = positional(x[None])[0].astype(np.float64)
        b = evaluation.flip_back(positional(np.ascontiguousarray(x[None, :, ::-1]))[0]).astype(np.float64)
        expected = expected + evaluation.resize_bilinear_np(np.exp(0.5 * (a + b)), (12, 20))
    out = evaluation.hrnet_inference(positional, image, scales=scales, flip=True, crop=(64, 64), rule="cityscapes")
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    # Averaging probabilities instead would give another answer: the test can tell.
    x = image
    a, b = positional(x[None])[0], evaluation.flip_back(positional(np.ascontiguousarray(x[None, :, ::-1]))[0])
    one = evaluation.hrnet_inference(positional, image, scales=(1.0,), flip=True, crop=(64, 64), rule="cityscapes")
    assert np.abs(one - 0.5 * (np.exp(a) + np.exp(b))).max() > 1e-2


# ---------------------------------------------------------------------------------------
# Over a dataset, with oracles of exactly known answers.


@pytest.fixture(scope="module")
def eval_cfg(tiny_data_dir):
    return tiny_config(tiny_data_dir)


def _examples(cfg):
    return list(data.eval_dataset(cfg.data, split="val"))


def _red_channel_model(images):
    # Class 1 where the (normalised) red channel is positive, class 0 elsewhere.
    c = 5
    onehot = jax.nn.one_hot((images[..., 0] > 0).astype(jnp.int32), c)
    return onehot * 4.0


@pytest.mark.parametrize("mode", ["whole", "slide", "multiscale", "hrnet"])
def test_evaluate_with_an_oracle_gives_the_exact_confusion(eval_cfg, mode):
    expected = np.zeros((5, 5), np.int64)
    for ex in _examples(eval_cfg):
        pred = (ex["image"][..., 0] > 0).astype(np.int32)
        expected += evaluation.confusion_matrix_np(pred, ex["label"], 5)[:, :5]
    settings = evaluation.EvalSettings.from_config(
        eval_cfg, mode=mode, crop=(16, 16), stride=(16, 16), scales=(1.0,), flip=False, batch_size=4
    )
    predictor = evaluation.Predictor.from_function(_red_channel_model, batch_size=4)
    res = evaluation.evaluate_predictor(predictor, eval_cfg, settings=settings)
    np.testing.assert_array_equal(np.asarray(res["confusion_matrix"]), expected)
    assert res["miou"] == pytest.approx(evaluation.metrics_from_confusion(expected)["miou"])
    assert res["num_images"] == 4


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["whole", "slide", "multiscale", "hrnet"])
def test_evaluate_and_predict_give_the_same_predictions_in_every_mode(eval_cfg, mode):
    """evaluate.py's runner and predict.py's Segmenter go through one dispatcher
    (evaluation.inference.infer, canvas_groups): for the same model and images their
    predictions are identical, and the Segmenter's probabilities are the dispatcher's."""
    from segnode_jax import segment
    from segnode_jax.evaluation import inference

    cfg = copy.deepcopy(eval_cfg)
    cfg.model.ode.update(solver="euler", num_steps=1, adjoint="unrolled")  # the cheapest solve to compile
    cfg.eval.update(
        mode=mode, crop_size=(16, 24), stride=(8, 8), scales=(1.0, 0.75), flip=True, batch_size=2, pad_multiple=12
    )  # 32x32 images on 36x36 canvases: padding in play
    variables = segnode_jax.init(cfg.model, jax.random.key(5), (1, 32, 32, 3))
    settings = evaluation.EvalSettings.from_config(cfg)
    predictor = evaluation.Predictor.for_model(variables, cfg.model, batch_size=2)
    evaluated = {}
    evaluation.evaluate_predictor(
        predictor, cfg, settings=settings, on_prediction=lambda ex, pred: evaluated.__setitem__(str(ex["name"]), pred)
    )
    examples = _examples(cfg)
    segmenter = segment.Segmenter(variables, cfg)
    predicted = segmenter.segment([ex["raw_image"] for ex in examples], probabilities=True)
    assert len(evaluated) == len(predicted) == len(examples) == 4
    for ex, p in zip(examples, predicted):
        np.testing.assert_array_equal(p.labels, evaluated[str(ex["name"])])
        if mode != "whole":
            scores, are_probs = inference.infer(predictor, ex["image"], settings, fill=inference.pad_value(cfg.data))
            assert are_probs == (mode != "slide")
            expected = scores if are_probs else inference.softmax_np(scores)
            if expected.shape[:2] != p.labels.shape:
                expected = evaluation.resize_bilinear_np(expected, p.labels.shape)
            np.testing.assert_array_equal(p.probabilities, expected.astype(np.float32))  # predict returns float32


def test_whole_mode_pads_labels_and_resizes_to_the_original_label_size(eval_cfg):
    """Images evaluated at another size (as LIP's 473x473) are scored at label resolution;
    a constant prediction's IoU is then exactly its class's pixel share."""
    cfg = tiny_config(eval_cfg.data.data_dir, **{"data.eval_size": (24, 20)})
    examples = list(data.eval_dataset(cfg.data, split="val"))
    assert examples[0]["image"].shape[:2] == (24, 20) and examples[0]["label"].shape == (32, 32)
    labels = np.concatenate([ex["label"].ravel() for ex in examples])
    predictor = evaluation.Predictor.from_function(
        lambda x: jnp.zeros(x.shape[:3] + (5,)).at[..., 2].set(1.0), batch_size=4
    )
    res = evaluation.evaluate_predictor(predictor, cfg, settings=evaluation.EvalSettings.from_config(cfg, batch_size=4))
    share = np.mean(labels == 2)
    present = len(set(np.unique(labels).tolist()) | {2})  # classes in the labels, and the predicted one
    assert res["per_class_iou"][data.get_info(cfg.data).class_names[2]] == pytest.approx(share)
    assert res["miou"] == pytest.approx(share / present)
    assert res["labelled_pixels"] == labels.size


# ---------------------------------------------------------------------------------------
# Scoring saved predictions.


def _write_predictions(cfg, out_dir, transform):
    for name, path in data.ground_truth_files(cfg.data, "val"):
        gt = data.label_to_train_ids(cfg.data, path)
        target = os.path.join(out_dir, name + ".png")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        Image.fromarray(transform(gt).astype(np.uint8)).save(target)


def test_score_predictions_of_a_folder(eval_cfg, tmp_path):
    perfect = tmp_path / "perfect"
    _write_predictions(eval_cfg, perfect, lambda gt: gt)
    res = evaluation.score_predictions(eval_cfg.data, str(perfect))
    assert res["miou"] == pytest.approx(1.0) and res["pixel_accuracy"] == pytest.approx(1.0)
    assert res["num_images"] == 4

    shifted = tmp_path / "background"
    _write_predictions(eval_cfg, shifted, lambda gt: np.zeros_like(gt))
    res = evaluation.score_predictions(eval_cfg.data, str(shifted))
    labels = np.concatenate(
        [data.label_to_train_ids(eval_cfg.data, p).ravel() for _, p in data.ground_truth_files(eval_cfg.data, "val")]
    )
    assert res["per_class_iou"]["background"] == pytest.approx(np.mean(labels == 0))
    assert res["pixel_accuracy"] == pytest.approx(np.mean(labels == 0))


def test_score_predictions_errors(eval_cfg, tmp_path):
    with pytest.raises(evaluation.PredictionError, match="does not exist"):
        evaluation.score_predictions(eval_cfg.data, str(tmp_path / "nope"))
    partial = tmp_path / "partial"
    _write_predictions(eval_cfg, partial, lambda gt: gt)
    first = sorted(os.listdir(partial))[0]
    os.remove(partial / first)
    with pytest.raises(evaluation.PredictionError, match=r"1 of 4 synthetic val images have no prediction"):
        evaluation.score_predictions(eval_cfg.data, str(partial))
    small = tmp_path / "small"
    _write_predictions(eval_cfg, small, lambda gt: gt[:16, :16])
    with pytest.raises(evaluation.PredictionError, match="original resolution"):
        evaluation.score_predictions(eval_cfg.data, str(small))
