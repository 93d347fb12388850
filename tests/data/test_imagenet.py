"""ImageNet (ILSVRC2012 archives) and class-per-folder datasets: building from the real layouts,
labels, the classification transforms, and bad input (one clear error, nothing half-written)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from PIL import Image

from segnode_jax import data
from segnode_jax.data import PreparationError, transforms
from tests.data import data_fakes as F

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def labels_by_name(dcfg, split):
    src = data.pipeline.split_source(dcfg, split)
    return {
        src[i]["name"].decode() if isinstance(src[i]["name"], bytes) else src[i]["name"]: int(src[i]["label"])
        for i in range(len(src))
    }


def nothing_prepared(tmp):
    tfds_dir = os.path.join(tmp, "tfds")
    return not os.path.isdir(tfds_dir) or not any("dataset_info.json" in f for _, _, f in os.walk(tfds_dir))


@pytest.mark.parametrize("labels", ["devkit", "loc"])
def test_imagenet_builds_from_the_official_archives_with_the_validation_labels(tmp_path, labels):
    rng = np.random.default_rng(0)
    fake = F.write_imagenet(str(tmp_path / "raw"), rng, labels=labels)
    dcfg = F.config("imagenet", str(tmp_path), manual_dir=str(tmp_path / "raw"))
    builder = data.prepare(dcfg, progress=False)
    assert {k: v.num_examples for k, v in builder.info.splits.items()} == {"train": 24, "val": 8}
    wnids = sorted(F.FAKE_WNIDS)
    info = data.get_info(dcfg)
    assert info.task == "classification" and info.num_classes == 4
    if labels == "devkit":  # the devkit's words name the classes (in sorted wnid order)
        assert info.class_names == tuple(F.FAKE_WORDS[list(F.FAKE_WNIDS).index(w)] for w in wnids)
    else:
        assert info.class_names == tuple(wnids)
    val = labels_by_name(dcfg, "val")
    assert val == {f"ILSVRC2012_val_{k + 1:08d}": c for k, c in enumerate(fake["val_labels"])}
    train = labels_by_name(dcfg, "train")
    assert len(train) == 24 and all(train[name] == wnids.index(name.split("/")[0]) for name in train)
    # The stored image is the file from the archive, byte for byte.
    outer = tarfile.open(tmp_path / "raw" / "ILSVRC2012_img_train.tar")
    inner = tarfile.open(fileobj=io.BytesIO(outer.extractfile(f"{wnids[2]}.tar").read()))
    original = inner.extractfile(f"{wnids[2]}_1003.JPEG").read()
    src = data.pipeline.split_source(dcfg, "train")
    stored = [
        src[i]["image"]
        for i in range(len(src))
        if src[i]["name"] in (f"{wnids[2]}/{wnids[2]}_1003", f"{wnids[2]}/{wnids[2]}_1003".encode())
    ]
    assert stored == [original]


def test_image_folder_takes_the_sorted_class_folders(tmp_path):
    rng = np.random.default_rng(1)
    root = F.write_image_folder(str(tmp_path / "mine"), rng, classes=("fox", "cat", "dog"))
    dcfg = F.config("image_folder", str(tmp_path), root=root)
    data.ensure_prepared(dcfg)  # built on first use, as the segmentation folder dataset
    info = data.get_info(dcfg)
    assert info.class_names == ("cat", "dog", "fox") and info.splits == {"train": 12, "val": 6}
    val = labels_by_name(dcfg, "val")
    assert val == {f"{c}/v_{i}": ["cat", "dog", "fox"].index(c) for c in ("cat", "dog", "fox") for i in range(2)}
    batch = next(data.train_iterator(_small(dcfg), batch_size=4, seed=0, worker_count=0))
    assert batch["image"].shape == (4, 32, 32, 3) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (4,) and batch["label"].dtype == np.int32


def _small(dcfg):
    dcfg.crop_size = (32, 32)
    dcfg.eval_resize = 36
    return dcfg


def test_random_resized_crop_follows_torchvisions_rule():
    rng = np.random.default_rng(0)
    for _ in range(200):
        top, left, h, w = transforms.random_resized_box(rng, 60, 90, (0.08, 1.0), (3 / 4, 4 / 3))
        assert 0 <= top and top + h <= 60 and 0 <= left and left + w <= 90
        assert 0.08 * 5400 * 0.9 <= h * w <= 5400 and 3 / 4 * 0.85 <= w / h <= 4 / 3 * 1.15
    # No try fits (a very wide image, a narrow ratio): the centre crop of the nearest ratio.
    assert transforms.random_resized_box(rng, 10, 100, (0.99, 1.0), (1.0, 1.0)) == (0, 45, 10, 10)
    # Same seed, same crops.
    a = [transforms.random_resized_box(np.random.default_rng(5), 50, 50, (0.08, 1), (0.75, 1.33)) for _ in range(2)]
    assert a[0] == a[1]


def test_random_resized_crop_draws_torchvisions_distribution():
    """Where no try is rejected (scale up to 0.5 of a 1000x1000 image), torchvision's rule draws
    the area fraction uniformly in ``scale``, the aspect ratio log-uniformly in ``ratio`` and the
    position uniformly: a sampler that returns the whole image, a fixed box, or ratios uniform
    instead of log-uniform fails (Kolmogorov-Smirnov over 4000 draws)."""
    from scipy import stats

    rng = np.random.default_rng(1)
    boxes = np.array([transforms.random_resized_box(rng, 1000, 1000, (0.08, 0.5), (3 / 4, 4 / 3)) for _ in range(4000)])
    top, left, h, w = boxes.T.astype(np.float64)
    area = h * w / 1e6
    log_ratio = np.log(w / h)
    assert stats.kstest(area, stats.uniform(0.08, 0.42).cdf).pvalue > 1e-3
    lo, hi = np.log(3 / 4), np.log(4 / 3)
    assert stats.kstest(log_ratio, stats.uniform(lo, hi - lo).cdf).pvalue > 1e-3
    # Uniform ratios (the usual mistake) would be told apart at this sample size.
    assert stats.kstest(w / h, stats.uniform(3 / 4, 4 / 3 - 3 / 4).cdf).pvalue < 1e-3
    # The position is uniform over the free range.
    assert stats.kstest(top / (1000 - h), stats.uniform(0, 1).cdf).pvalue > 1e-3
    assert stats.kstest(left / (1000 - w), stats.uniform(0, 1).cdf).pvalue > 1e-3


def test_evaluation_view_is_resize_short_side_then_centre_crop():
    img = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    out = transforms.resize_center_crop(img, short_side=256, crop=(224, 224))
    # torchvision: Resize(256) -> 256x341 (the long side truncated), CenterCrop(224) at (16, 58).
    expected = np.asarray(Image.fromarray(img).resize((341, 256), Image.BILINEAR))[16:240, 58:282]
    np.testing.assert_array_equal(out, expected)
    tall = transforms.resize_center_crop(img.transpose(1, 0, 2), short_side=256, crop=(224, 224))
    assert tall.shape == (224, 224, 3)


def test_missing_validation_labels_is_one_clear_error_and_nothing_is_written(tmp_path):
    F.write_imagenet(str(tmp_path / "raw"), np.random.default_rng(0), labels="none")
    dcfg = F.config("imagenet", str(tmp_path), manual_dir=str(tmp_path / "raw"))
    with pytest.raises(
        PreparationError, match="no validation labels.*ILSVRC2012_devkit_t12.tar.gz.*LOC_val_solution.csv"
    ):
        data.prepare(dcfg, progress=False)
    assert nothing_prepared(str(tmp_path))
    # With a labels file (TFDS' format: a wnid per line) it builds.
    fake = F.write_imagenet(str(tmp_path / "raw2"), np.random.default_rng(3), labels="none")
    names = sorted(F.FAKE_WNIDS)
    (tmp_path / "val_labels.txt").write_text("".join(names[c] + "\n" for c in fake["val_labels"]))
    dcfg = F.config(
        "imagenet", str(tmp_path), manual_dir=str(tmp_path / "raw2"), val_labels=str(tmp_path / "val_labels.txt")
    )
    data.prepare(dcfg, progress=False)
    assert sorted(labels_by_name(dcfg, "val").values()) == sorted(fake["val_labels"])


def _rewrite_class_tar(raw, wnid, mutate):
    """Rewrites ILSVRC2012_img_train.tar with one class archive changed by ``mutate(bytes)``."""
    path = os.path.join(raw, "ILSVRC2012_img_train.tar")
    with tarfile.open(path) as t:
        members = {m.name: t.extractfile(m).read() for m in t.getmembers()}
    members[f"{wnid}.tar"] = mutate(members[f"{wnid}.tar"])
    with open(path, "wb") as f:
        f.write(F.tar_bytes(members))


def _corrupt_first_jpeg(class_tar: bytes) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(class_tar)) as t:
        members = {m.name: t.extractfile(m).read() for m in t.getmembers()}
    first = sorted(members)[0]
    members[first] = members[first][:200]  # a JPEG cut short
    return F.tar_bytes(members)


@pytest.mark.parametrize(
    "damage, message",
    [
        ("truncated_archive", "ILSVRC2012_img_train.tar: not a readable tar archive.*download the archive again"),
        ("corrupt_jpeg", r"n01484850.tar:n01484850_1000.JPEG: corrupt or unreadable image"),
        ("unknown_class", "validation labels name classes that .* does not have"),
    ],
)
def test_bad_archives_stop_with_one_message_and_leave_nothing(tmp_path, damage, message):
    raw = str(tmp_path / "raw")
    if damage == "unknown_class":
        F.write_imagenet(raw, np.random.default_rng(0), labels="loc")
        csv = os.path.join(raw, "LOC_val_solution.csv")
        lines = open(csv).read().splitlines()
        lines[1] = lines[1].split(",")[0] + ",n09999999 1 2 3 4"
        open(csv, "w").write("\n".join(lines) + "\n")
    else:
        F.write_imagenet(raw, np.random.default_rng(0))
    if damage == "truncated_archive":
        path = os.path.join(raw, "ILSVRC2012_img_train.tar")
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            f.truncate(size // 3)
    elif damage == "corrupt_jpeg":
        _rewrite_class_tar(raw, "n01484850", _corrupt_first_jpeg)
    dcfg = F.config("imagenet", str(tmp_path), manual_dir=raw)
    with pytest.raises(PreparationError, match=message):
        data.prepare(dcfg, progress=False)
    assert nothing_prepared(str(tmp_path))


@pytest.mark.slow
def test_prepare_cli_on_missing_labels_prints_one_error_line(tmp_path):
    F.write_imagenet(str(tmp_path / "raw"), np.random.default_rng(0), labels="none")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "segnode_jax.data.prepare",
            "--dataset",
            "imagenet",
            "--manual_dir",
            str(tmp_path / "raw"),
            "--data_dir",
            str(tmp_path / "tfds"),
            "--no_progress",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "ILSVRC2012_devkit_t12.tar.gz" in errors[0]
    assert nothing_prepared(str(tmp_path))


def test_image_folder_errors_name_the_layout(tmp_path):
    root = tmp_path / "flat"
    F.write(str(root / "train" / "a.jpg"), F.jpg_bytes(F.class_image(np.random.default_rng(0), 0)))
    dcfg = F.config("image_folder", str(tmp_path), root=str(root))
    with pytest.raises(PreparationError, match="<split>/<class>/<image>"):
        data.prepare(dcfg, progress=False)
    root = F.write_image_folder(str(tmp_path / "extra"), np.random.default_rng(0))
    F.write(os.path.join(root, "val", "wolf", "x.jpg"), F.jpg_bytes(F.class_image(np.random.default_rng(0), 1)))
    dcfg = F.config("image_folder", str(tmp_path), root=root)
    with pytest.raises(PreparationError, match="class folders the training split lacks.*wolf"):
        data.prepare(dcfg, progress=False)
    assert nothing_prepared(str(tmp_path))
