"""Training/eval transforms: alignment of image and label, LIP flip swap, determinism."""

from __future__ import annotations

import os

import numpy as np
import pytest

from segnode_jax.data import transforms as T
from segnode_jax.data.classes import IGNORE
from tests.conftest import REPO

# Label = deterministic function of colour: class k is drawn in COLORS[k].
COLORS = np.array(
    [[250, 10, 10], [10, 250, 10], [10, 10, 250], [240, 240, 20], [20, 240, 240], [128, 128, 128]], np.uint8
)


def blocky_pair(rng, h=40, w=56, block=4):
    """An image made of colour blocks and the label read off the colours."""
    cls = rng.integers(0, len(COLORS), (h // block, w // block))
    label = np.kron(cls, np.ones((block, block), np.int64)).astype(np.uint8)
    return COLORS[label], label


def colour_to_class(image):
    d = ((image[:, :, None, :].astype(np.int32) - COLORS[None, None].astype(np.int32)) ** 2).sum(-1)
    return d.argmin(-1), d.min(-1)


def make(**kw):
    args = dict(
        crop_size=(32, 48),
        base_size=None,
        scale_range=(0.5, 2.0),
        scale_step=0.0,
        flip=True,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
    )
    args.update(kw)
    return T.TrainTransform(**args)


@pytest.mark.parametrize("seed", range(30))
def test_label_stays_a_function_of_the_image_nearest(seed):
    """With nearest resizing the geometric transform must keep every non-ignored pixel exact."""
    rng = np.random.default_rng(seed)
    image, label = blocky_pair(rng)
    out_img, out_lab = make(image_resample="nearest").augment(image, label, np.random.default_rng(100 + seed))
    cls, dist = colour_to_class(out_img)
    valid = out_lab != IGNORE
    assert valid.sum() > 0
    assert (dist[valid] == 0).all() and (cls[valid] == out_lab[valid]).all()
    # Padding: ignore in the label and black (0) in the image.
    assert (out_img[~valid] == 0).all()


@pytest.mark.parametrize("seed", range(10))
def test_label_aligned_with_bilinear_image(seed):
    """Bilinear (HRNet) resizing blends colours only at block borders."""
    rng = np.random.default_rng(seed)
    image, label = blocky_pair(rng, block=8)
    out_img, out_lab = make().augment(image, label, np.random.default_rng(7 + seed))
    cls, _ = colour_to_class(out_img)
    valid = out_lab != IGNORE
    assert (cls[valid] == out_lab[valid]).mean() > 0.9


def test_scale_pad_crop_matches_full_resize_then_crop():
    from PIL import Image

    rng = np.random.default_rng(0)
    image, label = blocky_pair(rng, h=30, w=50, block=5)
    size, crop, offset = (36, 75), (40, 64), (0, 9)  # 4 rows of bottom padding
    img, lab = T.scale_pad_crop(image, label, size=size, crop=crop, offset=offset)
    full_img = np.asarray(Image.fromarray(image).resize(size[::-1], Image.BILINEAR))
    full_lab = np.asarray(Image.fromarray(label).resize(size[::-1], Image.NEAREST))
    y, x = offset
    np.testing.assert_allclose(
        img[: size[0] - y, : crop[1]].astype(int), full_img[y:, x : x + crop[1]].astype(int), atol=2
    )
    assert (lab[: size[0] - y] == full_lab[y:, x : x + crop[1]]).mean() > 0.97
    assert (lab[size[0] - y :] == IGNORE).all() and (img[size[0] - y :] == 0).all()  # bottom padding


def test_hrnet_scaled_size():
    # Long side = base_size * scale, aspect kept, + 0.5 rounding (HRNet multi_scale_aug).
    assert T.scaled_size(1024, 2048, scale=0.5, base_size=2048, train_resize=None) == (512, 1024)
    assert T.scaled_size(1024, 2048, scale=1.3, base_size=2048, train_resize=None) == (1331, 2662)
    assert T.scaled_size(500, 375, scale=1.0, base_size=520, train_resize=None) == (520, 390)
    assert T.scaled_size(100, 80, scale=1.0, base_size=473, train_resize=(473, 473)) == (473, 473)
    assert T.scaled_size(16, 24, scale=2.0, base_size=None, train_resize=None) == (32, 48)


def test_scale_grid_like_hrnet():
    """HRNet draws ``0.5 + randint(0, SCALE_FACTOR) / 10`` (Python's randint includes its upper
    end): SCALE_FACTOR 16 gives the 17 scales 0.5 ... 2.1 of the Cityscapes, PASCAL-Context
    and CamVid configs, 11 (LIP) 0.5 ... 1.6."""
    import segnode_jax
    from segnode_jax import data

    rng = np.random.default_rng(0)
    for factor, name in ((16, "cityscapes"), (16, "pascal_context"), (16, "camvid"), (11, "lip")):
        dcfg = data.data_config(name)
        hrnet = {round(0.5 + k / 10.0, 6) for k in range(factor + 1)}
        draws = {round(T.draw_scale(rng, dcfg.scale_range, dcfg.scale_step), 6) for _ in range(3000)}
        assert draws == hrnet, name
    assert segnode_jax.load_config(os.path.join(REPO, "configs", "lip.py")).data.scale_range == (0.5, 1.6)


def test_lip_flip_swaps_left_and_right():
    pairs = ((14, 15), (16, 17), (18, 19))
    label = np.array([[14, 15, 16, 17, 18, 19, 0, 5, 255]], np.uint8)
    image = np.arange(label.size * 3, dtype=np.uint8).reshape(1, label.size, 3)
    img, lab = T.hflip(image, label, pairs=pairs)
    np.testing.assert_array_equal(lab[0], [255, 5, 0, 18, 19, 16, 17, 14, 15])
    np.testing.assert_array_equal(img[0], image[0, ::-1])


def test_lip_training_flip_swaps_through_the_transform():
    """In the pipeline: a flipped crop has the left-arm pixels of the original on the other side as right-arm."""
    h, w = 20, 30
    label = np.zeros((h, w), np.uint8)
    label[:, :10] = 14  # left arm on the image's left
    image = np.zeros((h, w, 3), np.uint8)
    image[:, :10] = 200
    t = make(
        crop_size=(h, w), scale_range=(1.0, 1.0), flip_pairs=((14, 15), (16, 17), (18, 19)), image_resample="nearest"
    )
    flipped = unflipped = 0
    for s in range(40):
        img, lab = t.augment(image, label, np.random.default_rng(s))
        if img[0, -1, 0] == 200:  # the bright part moved right: flipped
            flipped += 1
            assert (lab[:, -10:] == 15).all() and not (lab == 14).any()
        else:
            unflipped += 1
            assert (lab[:, :10] == 14).all() and not (lab == 15).any()
    assert flipped > 5 and unflipped > 5


def test_augmentation_deterministic_given_rng():
    rng = np.random.default_rng(3)
    image, label = blocky_pair(rng)
    a = make().augment(image, label, np.random.default_rng(11))
    b = make().augment(image, label, np.random.default_rng(11))
    c = make().augment(image, label, np.random.default_rng(12))
    assert all((x == y).all() for x, y in zip(a, b))
    assert not all(x.shape == y.shape and (x == y).all() for x, y in zip(a, c))


def test_normalize_imagenet():
    img = np.array([[[0, 128, 255]]], np.uint8)
    out = T.normalize(img, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    expected = (np.array([0, 128, 255]) / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0], expected, rtol=1e-5)


def test_eval_transform_keeps_label_resolution():
    from data_fakes import png_bytes

    rng = np.random.default_rng(0)
    image, label = blocky_pair(rng, h=20, w=28)
    rec = {"image": png_bytes(image), "label": png_bytes(label), "name": b"a/b"}
    out = T.EvalTransform(eval_size=(32, 32), mean=(0, 0, 0), std=(1, 1, 1)).map(rec)
    assert out["name"] == "a/b" and out["label"].dtype == np.int32 and out["label"].shape == (20, 28)
    assert (
        out["image"].shape == (32, 32, 3)
        and out["raw_image"].shape == (32, 32, 3)
        and out["raw_image"].dtype == np.uint8
    )
    np.testing.assert_array_equal(out["label"], label)
    same = T.EvalTransform(eval_size=None, mean=(0, 0, 0), std=(1, 1, 1)).map(rec)
    np.testing.assert_array_equal(same["raw_image"], image)
    np.testing.assert_allclose(same["image"], image / 255.0, rtol=1e-6)
