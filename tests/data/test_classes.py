"""Class tables: everything derived from one table per dataset."""

from __future__ import annotations

import numpy as np
import pytest

from segnode_jax import data
from segnode_jax.data.classes import voc_colormap


def test_cityscapes_table_is_cityscapesscripts():
    from cityscapesscripts.helpers import labels as cs

    from segnode_jax.data.cityscapes import CLASSES

    train = sorted((lab for lab in cs.labels if 0 <= lab.trainId < 255), key=lambda lab: lab.trainId)
    assert CLASSES.class_names == tuple(lab.name for lab in train)
    assert [tuple(c) for c in CLASSES.palette] == [lab.color for lab in train]
    lut = CLASSES.lookup()
    for lab in cs.labels:
        if lab.id >= 0:
            assert lut[lab.id] == (lab.trainId if 0 <= lab.trainId < 255 else 255)
    assert (lut[34:] == -1).all()


def test_label_to_train_ids_array_and_errors():
    dcfg = data.data_config("cityscapes")
    ids = np.array([[7, 8, 0], [26, 33, 1]], np.uint8)
    np.testing.assert_array_equal(data.label_to_train_ids(dcfg, ids), [[0, 1, 255], [13, 18, 255]])
    with pytest.raises(data.PreparationError, match=r"\[40\]"):
        data.label_to_train_ids(dcfg, np.array([[40]], np.uint8))
    camvid = data.data_config("camvid")
    np.testing.assert_array_equal(data.label_to_train_ids(camvid, np.array([[0, 10, 11]])), [[0, 10, 255]])


@pytest.mark.parametrize("name", ["cityscapes", "camvid", "lip", "pascal_context", "synthetic"])
def test_predictions_go_back_to_the_datasets_own_ids(name):
    """``train_ids_to_dataset_ids`` inverts ``label_to_train_ids`` on every train id (what
    ``predict.py --format dataset`` and the benchmark export write)."""
    dcfg = data.data_config(name)
    n = data.get_info(dcfg).num_classes
    train_ids = np.array([list(range(n))])  # (a model never predicts 255)
    ids = data.train_ids_to_dataset_ids(dcfg, train_ids)
    assert ids.dtype in (np.uint8, np.uint16)
    np.testing.assert_array_equal(data.label_to_train_ids(dcfg, ids), train_ids)


def test_cityscapes_predictions_are_written_as_label_ids():
    dcfg = data.data_config("cityscapes")
    np.testing.assert_array_equal(
        data.train_ids_to_dataset_ids(dcfg, np.array([[0, 1, 13, 18, 255]])), [[7, 8, 26, 33, 0]]
    )


def test_colorize_uses_palette_and_blacks_out_ignore():
    info = data.get_info(data.data_config("camvid"))
    label = np.array([[0, 3, 255], [10, 1, 200]])
    rgb = data.colorize(label, info.palette)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 3, 3)
    assert tuple(rgb[0, 0]) == (128, 128, 128) and tuple(rgb[0, 1]) == (128, 64, 128)
    assert tuple(rgb[0, 2]) == (0, 0, 0) and tuple(rgb[1, 2]) == (0, 0, 0)  # ignore / unknown
    assert tuple(rgb[1, 0]) == (0, 128, 192)


def test_voc_colormap_known_values():
    cmap = voc_colormap(4)
    assert cmap.tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]


@pytest.mark.parametrize(
    "name,n", [("cityscapes", 19), ("camvid", 11), ("lip", 20), ("pascal_context", 59), ("synthetic", 8)]
)
def test_info_of_each_dataset(name, n):
    info = data.get_info(data.data_config(name))
    assert info.num_classes == n == len(info.class_names) == len(info.palette)
    assert info.ignore_index == 255 and info.palette.dtype == np.uint8
    assert len(set(info.class_names)) == n


def test_hrnet_recipes():
    cs = data.data_config("cityscapes")
    assert tuple(cs.crop_size) == (512, 1024) and cs.base_size == 2048 and tuple(cs.scale_range) == (0.5, 2.1)
    assert tuple(data.get_info(cs).eval_scales) == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    lip = data.data_config("lip")
    assert tuple(lip.eval_size) == (473, 473) and tuple(lip.crop_size) == (473, 473)
    pc = data.data_config("pascal_context")
    assert tuple(pc.crop_size) == (480, 480) and pc.base_size == 520
    assert tuple(cs.mean) == (0.485, 0.456, 0.406) and tuple(cs.std) == (0.229, 0.224, 0.225)


def test_manual_dir_is_an_overridable_placeholder():
    dcfg = data.data_config("camvid")
    assert dcfg.manual_dir is None
    dcfg.manual_dir = "/x"  # what --config.data.manual_dir=/x does
    assert dcfg.manual_dir == "/x"
    with pytest.raises(TypeError):
        dcfg.manual_dir = 3
